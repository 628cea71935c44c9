"""DeRa: reference/aligned logit blending over two models, as a method with two model roles."""

from __future__ import annotations

import json

import pytest
import torch

from decoders import get_decoder
from envs import get_env
from harness.cli import main
from harness.methods import Generation, get_method
from harness.runs.runner import RunSpec, run
from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import ConfigError, parse_config
from tests.tiny import CHARS, tiny_model

EASY = {"min_terms": "2", "max_terms": "2", "min_digits": "1", "max_digits": "1"}
GEN = Generation(max_new_tokens=12, stop=(), seed=0)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref():
    return tiny_model(seed=0, init_std=0.5)


@pytest.fixture(scope="module")
def aligned():
    return tiny_model(seed=1, init_std=0.5)


@pytest.fixture(scope="module")
def problems():
    env = get_env("basic_arithmetic", **EASY)
    return env, env.problems(4, 0)


def _tokens(attempts, lam=None):
    return {a.problem.problem_id: a.row.token_ids for a in attempts if lam is None or a.variant.get("lambda") == lam}


def test_lambda_0_decodes_the_reference_and_1_the_aligned_model_token_for_token(ref, aligned, problems):
    env, items = problems
    greedy = get_method("greedy")
    ref_alone = _tokens(greedy.solve(env, {"policy": ref}, items, GEN))
    aligned_alone = _tokens(greedy.solve(env, {"policy": aligned}, items, GEN))
    assert ref_alone != aligned_alone  # the two models disagree, so the check has teeth

    dera = get_method("dera", lam="0,1", aligned="unused-name").solve(
        env, {"ref": ref, "aligned": aligned}, items, GEN)
    assert _tokens(dera, 0.0) == ref_alone
    assert _tokens(dera, 1.0) == aligned_alone


def test_a_lambda_decodes_the_same_alone_as_within_a_shared_grid_batch(ref, aligned, problems):
    env, items = problems
    models = {"ref": ref, "aligned": aligned}
    grid = get_method("dera", lam="0,0.5,1,2", aligned="x").solve(env, models, items, GEN)
    for lam in (0.5, 2.0):
        alone = get_method("dera", lam=str(lam), aligned="x").solve(env, models, items, GEN)
        assert _tokens(grid, lam) == _tokens(alone)
    assert len(grid) == 4 * len(items)


def test_extrapolation_blends_logits_past_the_aligned_model():
    lp = torch.log_softmax(torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(0)), dim=-1)
    step = get_decoder("dera", lam=2.0).step(lp, [torch.Generator()] * 3)
    assert torch.equal(step.token_ids, (2.0 * lp[1] - lp[0]).argmax(-1))
    assert torch.allclose(step.logprobs, torch.log_softmax(2.0 * lp[1] - lp[0], dim=-1), atol=1e-6)


def test_records_carry_both_models_and_the_divergences_between_them(ref, aligned, tmp_path):
    spec = RunSpec(env="basic_arithmetic", decoder="dera", n=3, env_config=dict(EASY), max_new_tokens=8,
                   model="tiny-ref", decoder_config={"lam": "0,1", "aligned": "tiny-aligned"}, save_steps=True)
    summary = run(spec, tmp_path / "run", progress=False, models={"tiny-ref": ref, "tiny-aligned": aligned})
    assert summary.by_variant is not None and set(summary.by_variant) == {"lambda=0", "lambda=1"}
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 6
    for record in records:
        assert record["ref_model"] == "tiny" and record["aligned_model"] == "tiny"
        assert record["decoder_config"]["lam"] == record["lambda"]
        assert record["kl_p1_p2"] > 0  # two different models
        # The mixture is the reference at lambda 0 and the aligned model at 1.
        assert record["kl_mix_p1" if record["lambda"] == 0 else "kl_mix_p2"] == pytest.approx(0, abs=1e-6)
        assert len(record["steps"]["kl_mix_p1"]) == len(record["steps"]["token_ids"]) == record["new_tokens"]
    spec_json = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert set(spec_json["models"]) == {"ref", "aligned"}


def test_negative_lambda_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"lam \(=-0.5\) must be a number >= 0 for dera.*0 decodes the reference"):
        get_decoder("dera", lam="-0.5")
    with pytest.raises(ValueError, match=r"lam \(=-1.0\)"):
        get_decoder("dera", lam="0,-1")


def test_a_run_without_the_aligned_model_fails_before_anything_loads(tmp_path):
    spec = RunSpec(env="basic_arithmetic", decoder="dera", n=2, model="no-such-model-is-loaded")
    with pytest.raises(ValueError, match="dera needs the aligned model: set aligned"):
        run(spec, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "samples.jsonl").exists()


def test_models_whose_tokenizers_differ_are_refused_before_decoding(ref, tmp_path):
    swapped = CHARS.replace("a", "\0").replace("b", "a").replace("\0", "b")  # ids of 'a' and 'b' trade places
    other = tiny_model(seed=1, chars=swapped)
    spec = RunSpec(env="basic_arithmetic", decoder="dera", n=2, model="tiny-ref",
                   decoder_config={"aligned": "tiny-other"})
    with pytest.raises(ValueError, match=r"disagree on the vocabulary.*id \d+ is 'a' in the ref model 'tiny-ref' "
                                         r"and 'b' in the aligned model 'tiny-other'"):
        run(spec, tmp_path / "run", progress=False, models={"tiny-ref": ref, "tiny-other": other})
    assert not (tmp_path / "run" / "samples.jsonl").exists()


def test_cli_refuses_a_negative_lambda_naming_the_flag(capsys, tmp_path):
    code = main(["run", "--env", "basic_arithmetic", "--decoder", "dera", "--decoder-config",
                 "aligned=x,lam=-1", "--out", str(tmp_path / "run")])
    assert code != 0
    assert "lam (=-1.0) must be a number >= 0" in capsys.readouterr().err


def _sweep_data(ref_dir, aligned_dir, **dera):
    return {
        "models": [str(ref_dir)], "max_new_tokens": 6, "batch_size": 4,
        "envs": [{"name": "basic_arithmetic", "n": 3, "config": dict(EASY)}],
        "decoders": [{"name": "greedy"}, {"name": "dera", "lambdas": [0, 1], **dera}],
    }


def test_sweep_config_names_the_aligned_model_by_role(tiny_model_dir, tmp_path):
    config = parse_config(_sweep_data(tiny_model_dir, tiny_model_dir, models={"aligned": str(tiny_model_dir)}))
    dera = config.decoders[1]
    assert dera.config["aligned"] == str(tiny_model_dir)
    assert dera.variants == ({"lambda": 0.0}, {"lambda": 1.0})

    with pytest.raises(ConfigError, match=r"decoders\[1\].models.aligend: 'dera' has no model role.*Did you mean: "
                                          r"aligned"):
        parse_config(_sweep_data(tiny_model_dir, None, models={"aligend": "x"}))
    with pytest.raises(ConfigError, match=r"decoders\[1\].models.aligned: model \(='missing/model'\): no such file"):
        parse_config(_sweep_data(tiny_model_dir, None, models={"aligned": "missing/model"}))
    with pytest.raises(ConfigError, match=r"decoders\[1\].config: dera needs the aligned model"):
        parse_config(_sweep_data(tiny_model_dir, None))
    greedy_with_models = _sweep_data(tiny_model_dir, None, models={"aligned": str(tiny_model_dir)})
    greedy_with_models["decoders"][0]["models"] = {"aligned": "x"}
    with pytest.raises(ConfigError, match=r"decoders\[0\].models.aligned: 'greedy' has no model role 'aligned'.*"
                                          r"Roles: policy"):
        parse_config(greedy_with_models)


def test_a_sweep_runs_dera_beside_greedy_and_lambda_0_matches_greedy(tiny_model_dir, tmp_path):
    aligned_dir = tmp_path / "aligned"
    other = tiny_model(seed=3)
    other.model.save_pretrained(aligned_dir)
    other.tokenizer.save_pretrained(aligned_dir)
    data = _sweep_data(tiny_model_dir, aligned_dir, models={"aligned": str(aligned_dir)})
    # The aligned model's own greedy answers, as a decoder of the same sweep.
    data["decoders"].append({"name": "greedy", "label": "aligned greedy", "models": {"policy": str(aligned_dir)}})
    config = parse_config(data)
    result = run_sweep(config, tmp_path / "sweep", progress=False)
    records = [json.loads(line) for line in (tmp_path / "sweep" / "samples.jsonl").read_text().splitlines()]
    assert result.total == len(records) == 3 + 3 * 2 + 3

    def completions(label, lam=None):
        return {r["problem_id"]: r["completion"] for r in records
                if r["decoder_label"] == label and (lam is None or r["lambda"] == lam)}

    assert completions("dera", 0) == completions("greedy")
    assert completions("dera", 1) == completions("aligned greedy") != completions("greedy")
    bound = [r for r in records if r["decoder_label"] == "aligned greedy"]
    assert all(r["models"] == {"policy": str(aligned_dir)} and r["model"] == str(tiny_model_dir) for r in bound)
    assert {r["aligned_model"] for r in records if r["decoder"] == "dera"} == {str(aligned_dir)}
    spec = json.loads((tmp_path / "sweep" / "spec.json").read_text())
    assert set(spec["models"]) == {str(tiny_model_dir), str(aligned_dir)}
    # Resuming finds nothing left to do.
    assert run_sweep(config, tmp_path / "sweep", progress=False).new == 0
