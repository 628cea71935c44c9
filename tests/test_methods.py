"""The method layer: every registered decoder runs as a method through the same runner,
outputs are those from before the layer existed, and the code above the methods does
not branch on a method's name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from decoders import available_decoders
from decoders.registry import contract_config
from harness.methods import MethodCache, get_method
from harness.methods.base import variant_key
from harness.runs.record_grid import record_variant
from harness.runs.record_schema import method_fields, record_problem
from harness.runs.records import CORE_FIELDS, RESERVED_FIELDS
from harness.runs.runner import RunSpec, run
from tests.tiny import tiny_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "outputs_before_method_layer.json"
EASY = {"min_terms": "2", "max_terms": "2", "min_digits": "1", "max_digits": "1"}
SHORT = {"reflect_prompt": "Reflect.", "redo_prompt": "Redo.", "reflection_max_new_tokens": "8"}
# The fixture's cases (made with the code before the method layer, same settings).
CASES = {
    "greedy": ("greedy", {}),
    "sample": ("sample", {"temperature": "1.5"}),
    "redumix": ("redumix", {"lam": "0,0.5,1", "feedback": "ground_truth", **SHORT}),
}
FIELDS = ["problem_id", "lambda", "completion", "answer", "score", "correct", "finish_reason", "stage1_completion",
          "feedback", "reflection"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def loaded():
    return tiny_model()


def _run(loaded, out: Path, decoder: str, config: dict, n: int = 4, save_steps: bool = False) -> list[dict]:
    spec = RunSpec(env="basic_arithmetic", decoder=decoder, n=n, seed=0, env_config=dict(EASY),
                   decoder_config=dict(config), max_new_tokens=12, batch_size=3, save_steps=save_steps)
    run(spec, out, loaded=loaded, progress=False)
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_outputs_are_those_from_before_the_method_layer(loaded, tmp_path):
    before = json.loads(FIXTURE.read_text())
    for name, (decoder, config) in CASES.items():
        rows = _run(loaded, tmp_path / name, decoder, config)
        now = sorted(({k: r.get(k) for k in FIELDS} for r in rows), key=lambda r: (r["problem_id"], r["lambda"] or 0))
        assert now == before[name], name


@pytest.mark.parametrize("decoder", available_decoders())
def test_every_decoder_runs_as_a_method_with_common_records_resume_and_seed(loaded, tmp_path, decoder):
    config = contract_config(decoder)
    method = get_method(decoder, **config)
    assert method.variants() and set(method.role_models()) == set(method.roles())
    full = _run(loaded, tmp_path / "a", decoder, config)
    assert len(full) == 4 * len(method.variants())
    declared = method_fields(decoder)
    for record in full:
        assert CORE_FIELDS <= record.keys() and record["decoder"] == decoder
        # Every field beyond the core is one the method declares, of the declared type.
        assert record.keys() - CORE_FIELDS - RESERVED_FIELDS <= declared.keys(), decoder
        assert record_problem(record, sweep=False) is None
    # Reproducible under a seed, and a resume after a crash fills exactly the rest.
    again = _run(loaded, tmp_path / "b", decoder, config)
    lines = (tmp_path / "b" / "samples.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "b" / "samples.jsonl").write_text("".join(lines[: len(lines) // 2]))
    resumed = _run(loaded, tmp_path / "b", decoder, config)

    # Same answers; float statistics agree to rounding (a resumed batch holds other rows, whose
    # padding moves fp32 logits in the last digits; soft inputs carry that into their statistics).
    for rows in (again, resumed):
        assert _by_key(rows).keys() == _by_key(full).keys()
        for key, record in _by_key(rows).items():
            for field, value in _untimed(record).items():
                expected = _untimed(_by_key(full)[key])[field]
                close = pytest.approx(expected, rel=1e-4, abs=1e-4) if isinstance(value, float) else expected
                assert value == close, field


def _by_key(rows: list[dict]) -> dict:
    return {(r["problem_id"], variant_key(record_variant(r))): r for r in rows}


def _untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith("_s") and k != "stage1_reused"}


@pytest.mark.parametrize("decoder", available_decoders())
def test_saved_steps_hold_each_tokens_text_and_one_value_per_token(loaded, tmp_path, decoder):
    for record in _run(loaded, tmp_path, decoder, contract_config(decoder), n=2, save_steps=True):
        steps = record["steps"]
        assert "".join(steps["token_texts"]) == record["completion"]
        assert all(len(values) == record["new_tokens"] for values in steps.values()), decoder
        assert ("log_ratio_p1_p2" in steps) == ("kl_mix_p1" in steps)  # every mixture says which side pulled


@pytest.mark.parametrize("decoder", available_decoders())
def test_skip_leaves_out_exactly_the_pairs_asked(loaded, decoder):
    from envs import get_env
    from harness.methods import Generation

    method = get_method(decoder, **contract_config(decoder))
    env = get_env("basic_arithmetic", **EASY)
    problems = env.problems(2, 0)
    variants = [variant_key(v) for v in method.variants()]
    skip = {(problems[0].problem_id, variants[0])}
    attempts = method.solve(env, dict.fromkeys(method.roles(), loaded), problems,
                            Generation(max_new_tokens=6, stop=(), seed=0), skip=skip, cache=MethodCache())
    made = {(a.problem.problem_id, a.variant_key) for a in attempts}
    assert made == {(p.problem_id, v) for p in problems for v in variants} - skip


def test_nothing_outside_the_methods_branches_on_a_method_name():
    pattern = re.compile(r"""(decoder|method|dec)\.name\s*[=!]=|== *["'](greedy|sample|redumix)["']""")
    outside = [p for p in (ROOT / "harness").rglob("*.py") if "methods" not in p.relative_to(ROOT).parts]
    assert len(outside) > 20  # the engine, runs, analysis and lm-eval layers are all scanned
    for path in outside:
        text = path.read_text()
        assert not pattern.search(text), f"{path} branches on a name: {pattern.search(text).group(0)}"
