"""`redumix sweep` on the tiny model: one record per config key, resume after crashes
(including a real kill -9), refusal of a different sweep, and stage sharing."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml

from decoders.redumix import stages as redumix_pipeline
from harness.cli import main
from harness.runs.sweep import plan, run_sweep
from harness.runs.sweep_config import parse_config
from tests.helpers.cli import signal_after
from tests.helpers.sweeps import EASY, expected_keys, read_records, sweep_data, without_timings

pytestmark = pytest.mark.usefixtures("one_thread")


def _as_run(config) -> dict:
    """The config's identity as spec.json stores it: dtype auto resolved for this machine, and batch
    invariance on (a new folder's mode when the config does not say)."""
    from harness.engine.models import resolve_dtype

    invariant = config.batch_invariant is not False
    return dataclasses.replace(config, dtype=resolve_dtype(config.dtype, config.device),
                               batch_invariant=invariant).resolved()


def _lines(out: Path) -> list[str]:
    return (out / "samples.jsonl").read_text().splitlines()


def _close(a, b) -> bool:
    """Equal, but floats (recursively) only to within 1e-5 relative or 1e-6 absolute."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.fixture(scope="module")
def done(tiny_model_dir, tmp_path_factory):
    config = parse_config(sweep_data(tiny_model_dir))
    out = tmp_path_factory.mktemp("sweep") / "s"
    result = run_sweep(config, out, progress=False)
    return config, out, result


def test_one_record_per_key_and_every_file_written(done):
    config, out, result = done
    records = read_records(out)
    keys = [r["key"] for r in records]
    # 2 seeds x 3 problems x (greedy + sample + 3 lambdas x 2 policies)
    assert len(keys) == len(set(keys)) == 2 * 3 * (1 + 1 + 6) == result.total == result.new
    assert set(keys) == expected_keys(config)
    for r in records:
        assert r["key"].split("|")[2] == r["problem_id"] and r["key"].split("|")[5] == str(r["seed"])
        assert r["cost_s"] > 0
        if r["decoder"] == "redumix":
            assert r["lambda"] in (0.0, 0.5, 1.0) and r["feedback_policy"] in ("binary", "ground_truth")
            assert r["decoder_config"]["feedback"] == r["feedback_policy"]
        else:
            assert r["lambda"] is None and r["feedback_policy"] is None
    spec = json.loads((out / "spec.json").read_text())
    assert spec["sweep"] == _as_run(config)  # the config with "auto" replaced by the dtype that ran
    assert {r["dtype"] for r in records} == {spec["sweep"]["dtype"]} and spec["sweep"]["dtype"] != "auto"
    assert spec["models"][str(config.models[0])]["parameters"] > 0
    for name in ("summary.csv", "samples.csv", "report.html"):
        assert (out / name).stat().st_size > 0
    assert set(result.timings) == {"load_s", "stage_s", "decode_s", "report_s", "total_s"}


def test_a_list_of_sample_counts_is_one_unit_keyed_by_count_and_summarised_apart(tiny_model_dir, tmp_path):
    data = sweep_data(tiny_model_dir, n=2, seeds=(0,)) | {"decoders": [
        {"name": "greedy"}, {"name": "self_consistency", "label": "sc", "config": {"n": [1, 3], "temperature": 1.5}}]}
    config = parse_config(data)
    assert [u.decoder.label for u in plan(config)] == ["greedy", "sc"]  # both counts in one unit
    result = run_sweep(config, tmp_path / "s", progress=False)
    records = read_records(tmp_path / "s")
    assert {r["key"] for r in records} == expected_keys(config)
    assert sorted(r["key"].split("|")[4] for r in records if r["decoder_label"] == "sc") == ["n=1"] * 2 + ["n=3"] * 2
    by_key = {(r["problem_id"], r["variant"].get("n")): r for r in records}
    for pid in {r["problem_id"] for r in records}:
        assert by_key[pid, 1]["cost_s"] < by_key[pid, 3]["cost_s"]
        assert by_key[pid, 3]["sample_completions"][:1] == by_key[pid, 1]["sample_completions"]
    summary = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert sorted(summary["variant"].fillna("-")) == ["-", "n=1", "n=3"]
    again = run_sweep(parse_config(data), tmp_path / "s", progress=False, write_report=False)
    assert again.new == 0 and again.total == result.total == 6


def test_rerun_of_a_finished_sweep_adds_nothing(done, tiny_model_dir):
    config, out, _ = done
    before = (out / "samples.jsonl").read_bytes()
    again = run_sweep(parse_config(sweep_data(tiny_model_dir)), out, progress=False, write_report=False)
    assert again.new == 0 and again.total == len(before.splitlines())
    assert (out / "samples.jsonl").read_bytes() == before


def test_same_config_gives_identical_records_bar_timings(done, tiny_model_dir, tmp_path):
    config, out, _ = done
    run_sweep(parse_config(sweep_data(tiny_model_dir)), tmp_path / "b", progress=False, write_report=False)
    assert without_timings(read_records(tmp_path / "b")) == without_timings(read_records(out))


def test_missing_records_and_torn_line_are_redone_exactly(done, tiny_model_dir, tmp_path):
    config, out, _ = done
    target = tmp_path / "s"
    target.mkdir()
    (target / "spec.json").write_bytes((out / "spec.json").read_bytes())
    lines = _lines(out)
    # A crash: the records after the 20th never written, the 20th cut mid-line.
    (target / "samples.jsonl").write_text("\n".join(lines[:19]) + "\n" + lines[19][:50])
    result = run_sweep(config, target, progress=False, write_report=False)
    assert result.new == len(lines) - 19
    keys = [r["key"] for r in read_records(target)]
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(config)
    # The resumed sweep starts with a cold prefix cache: the same tokens, statistics equal to float rounding.
    assert _close(without_timings(read_records(target)), without_timings(read_records(out)))


def test_a_folder_from_before_seeds_had_problems_of_their_own_is_not_resumed(done, tmp_path):
    from envs import get_env

    config, out, _ = done
    env = get_env("basic_arithmetic", **EASY)
    # Before, seed 1's item i was seed 0's item i + 1 (reasoning-gym seeds item i from seed + i).
    old = {f"basic_arithmetic-s1-{i}": p.question for i, p in enumerate(env.problems(4, seed=0)[1:])}
    target = tmp_path / "s"
    target.mkdir()
    (target / "spec.json").write_bytes((out / "spec.json").read_bytes())
    records = [r | {"question": old.get(r["problem_id"], r["question"])} for r in read_records(out)]
    (target / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(ValueError, match=r"basic_arithmetic-s1-0\|.* whose question is .*before each seed drew problems"
                                         r".*--force-new"):
        run_sweep(config, target, progress=False)


def test_different_sweep_is_refused_and_force_new_keeps_the_old_files(done, tiny_model_dir, tmp_path):
    config, out, _ = done
    target = tmp_path / "s"
    target.mkdir()
    for name in ("spec.json", "samples.jsonl"):
        (target / name).write_bytes((out / name).read_bytes())
    before = (target / "samples.jsonl").read_bytes()
    other = parse_config(sweep_data(tiny_model_dir, seeds=(0,), n=2))
    with pytest.raises(ValueError, match=r"already holds a different sweep \(differs in: envs, seeds\).*--force-new"):
        run_sweep(other, target, progress=False)
    assert (target / "samples.jsonl").read_bytes() == before

    result = run_sweep(other, target, force_new=True, progress=False, write_report=False)
    assert result.total == result.new == 2 * (1 + 1 + 6)
    (backup,) = target.glob("replaced-*")
    assert (backup / "samples.jsonl").read_bytes() == before
    assert json.loads((target / "spec.json").read_text())["sweep"] == _as_run(other)


def test_a_run_folder_is_not_mixed_with_a_sweep(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--env", "basic_arithmetic", "--model", str(tiny_model_dir), "--n", "2",
                 "--max-new-tokens", "5", "--out", str(out), "--env-config", "min_terms=2,max_terms=2"]) == 0
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(sweep_data(tiny_model_dir)))
    assert main(["sweep", str(config), "--out", str(out)]) == 2
    assert "already holds a `redumix run` folder" in capsys.readouterr().err


@pytest.fixture
def caches(monkeypatch):
    """Every Stage13Cache the sweep makes, to count how often stage 1 really ran."""
    made = []

    class Counting(redumix_pipeline.Stage13Cache):
        def __init__(self, **fields):
            super().__init__(**fields)
            made.append(self)

    monkeypatch.setattr(redumix_pipeline, "Stage13Cache", Counting)
    return made


def test_stages_1_to_3_run_once_per_problem_for_the_whole_lambda_grid(tiny_model_dir, tmp_path, caches):
    data = sweep_data(tiny_model_dir, n=3, seeds=(0,), lambdas=(0, 0.25, 0.5, 0.75, 1), policies=("binary",))
    data["decoders"] = [d for d in data["decoders"] if d["name"] == "redumix"]
    result = run_sweep(parse_config(data), tmp_path / "s", progress=False, write_report=False)
    assert result.new == 3 * 5
    (cache,) = caches
    assert cache.stage1_calls == 3  # not 3 x 5


def test_redumix_takes_its_first_attempts_from_the_greedy_unit(tiny_model_dir, tmp_path, caches):
    data = sweep_data(tiny_model_dir, n=3, seeds=(0,), lambdas=(0, 1), policies=("binary",))
    result = run_sweep(parse_config(data), tmp_path / "s", progress=False, write_report=False)
    assert result.new == 3 * (1 + 1 + 2)
    (cache,) = caches
    assert cache.stage1_calls == 0  # greedy already decoded every first attempt
    # The time split counts the reused greedy decodes as decoding, not as stages 1-3 (once per problem).
    spent = {r["problem_id"]: r["feedback_s"] + r["reflection_s"] + r["compress_s"]
             for r in (json.loads(line) for line in _lines(tmp_path / "s")) if r["decoder"] == "redumix"}
    assert result.timings["stage_s"] == pytest.approx(sum(spent.values()), abs=1e-3)
    records = [json.loads(line) for line in _lines(tmp_path / "s")]
    greedy = {r["problem_id"]: r["completion"] for r in records if r["decoder"] == "greedy"}
    for r in records:
        if r["decoder"] == "redumix":
            assert r["stage1_completion"] == greedy[r["problem_id"]]
            assert r["stage1_s"] > 0  # the greedy decode's share, so costs stay comparable
            assert r["stage1_reused"] is True
            if r["lambda"] == 1.0:
                assert r["completion"] == greedy[r["problem_id"]]


def test_cli_sweep_prints_summary_and_where_results_are(tiny_model_dir, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(sweep_data(tiny_model_dir, n=2, seeds=(0,))))
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed
    assert f"results: {out / 'samples.jsonl'}" in printed
    assert "records: 16 (16 new, 0 already recorded)" in printed
    assert "accuracy [95% CI]" in printed and "model load" in printed
    assert main(["sweep", str(config), "--out", str(out)]) == 0
    assert "records: 16 (0 new, 16 already recorded)" in capsys.readouterr().out


@pytest.mark.parametrize("kill_after", [3, 30])
def test_kill_9_mid_sweep_then_rerun_ends_with_exactly_the_expected_records(tiny_model_dir, tmp_path, kill_after):
    data = sweep_data(tiny_model_dir, n=6, seeds=(0, 1), batch_size=1, max_new_tokens=16)
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    expected = expected_keys(parse_config(data))
    samples = out / "samples.jsonl"
    code, _ = signal_after(["sweep", str(config_path), "--out", str(out), "--threads", "1"], samples, kill_after,
                           signal.SIGKILL)
    assert code == -signal.SIGKILL
    partial = set()
    for line in samples.read_text().splitlines():
        try:
            partial.add(json.loads(line)["key"])
        except json.JSONDecodeError:  # the line the kill tore
            pass
    assert kill_after <= len(partial) < len(expected)

    result = run_sweep(parse_config(data), out, progress=False, write_report=False)
    keys = [r["key"] for r in read_records(out)]
    assert len(keys) == len(set(keys)) == len(expected)
    assert set(keys) == expected
    assert result.new == len(expected) - len(partial & expected)


def test_work_units_are_plain_data_and_an_executor_only_yields_records(tiny_model_dir):
    import pickle

    from envs import get_env
    from harness.runs.executor import LocalExecutor, WorkItem

    config = parse_config(sweep_data(tiny_model_dir, n=2, seeds=(0,), lambdas=(0, 1), policies=("binary",)))
    units = plan(config)
    assert pickle.loads(pickle.dumps(units)) == units  # a unit can be sent to another process
    items = [WorkItem(u, tuple(get_env(u.env.name, **u.env.config).problems(u.env.n, u.seed)), frozenset())
             for u in units]
    seen_models = []
    executor = LocalExecutor(config, on_model_loaded=lambda name, loaded: seen_models.append(name))
    batches = list(executor.map_units(items))
    keys = [r["key"] for _, records in batches for r in records]
    assert sorted(keys) == sorted(expected_keys(config)) and seen_models == [str(tiny_model_dir)]
    assert all(unit in units for unit, _ in batches)
