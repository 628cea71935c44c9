"""`redumix run` end to end on the tiny model saved as a local folder."""

from __future__ import annotations

import json

import pytest

from harness.cli import main

EASY = ["--env-config", "min_terms=2,max_terms=2,min_digits=1,max_digits=1"]
RECORD_FIELDS = {
    "env", "problem_id", "question", "gold", "decoder", "decoder_config", "model", "dtype", "seed", "prompt",
    "completion", "answer", "score", "correct", "new_tokens", "latency_s",
}


def _run(tiny_model_dir, out, *extra):
    return main(["run", "--env", "basic_arithmetic", "--model", str(tiny_model_dir), "--n", "5", "--seed", "0",
                 "--max-new-tokens", "12", "--batch-size", "2", "--out", str(out), *EASY, *extra])


def _records(out):
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_run_writes_spec_and_one_record_per_problem(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(tiny_model_dir, out) == 0
    records = _records(out)
    assert len(records) == 5
    assert RECORD_FIELDS <= set(records[0])
    assert [r["problem_id"] for r in records] == [f"basic_arithmetic-s0-{i}" for i in range(5)]
    for r in records:
        assert r["correct"] == (r["score"] == 1.0)
        assert "<s>user: " in r["prompt"] and r["question"] in r["prompt"]  # the tiny chat template
        assert 1 <= r["new_tokens"] <= 12
    spec = json.loads((out / "spec.json").read_text())
    assert spec["run"]["env_config"]["max_terms"] == 2
    assert spec["run"]["decoder"] == "greedy"
    assert spec["model"]["parameters"] > 0
    printed = capsys.readouterr().out
    assert "accuracy:" in printed and "tokens/s" in printed and str(out) in printed


def test_same_config_and_seed_give_same_records(tiny_model_dir, tmp_path):
    def strip(records):
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in records]

    _run(tiny_model_dir, tmp_path / "a", "--decoder", "sample", "--decoder-config", "temperature=1.5")
    _run(tiny_model_dir, tmp_path / "b", "--decoder", "sample", "--decoder-config", "temperature=1.5",
         "--batch-size", "3")
    assert strip(_records(tmp_path / "a")) == strip(_records(tmp_path / "b"))


def test_rerun_resumes_without_duplicates(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    _run(tiny_model_dir, out)
    lines = (out / "samples.jsonl").read_text().splitlines()
    # Simulate a crash: the last two records were never written, the third is torn.
    (out / "samples.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    assert _run(tiny_model_dir, out) == 0
    records = _records(out)
    assert [r["problem_id"] for r in records] == [f"basic_arithmetic-s0-{i}" for i in range(5)]


def test_different_run_in_same_folder_is_refused_and_keeps_results(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    _run(tiny_model_dir, out)
    before = (out / "samples.jsonl").read_text()
    assert _run(tiny_model_dir, out, "--seed", "1") == 2
    assert "already holds a different run" in capsys.readouterr().err
    assert (out / "samples.jsonl").read_text() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "basic_arithmetc"], "Did you mean: basic_arithmetic"),
        (["--env", "basic_arithmetic", "--decoder", "beam"], "Unknown decoder 'beam'"),
        (["--env", "basic_arithmetic", "--decoder-config", "temperature=0.5"], "Unknown parameter 'temperature'"),
        (["--env", "basic_arithmetic", "--env-config", "max_term=2"], "max_terms"),
        (["--env", "basic_arithmetic", "--n", "0"], "n (=0) must be a positive integer"),
        (["--env", "basic_arithmetic", "--model", "./missing-model"], "no such file or folder"),
        (["--env", "basic_arithmetic", "--prefix-cache-mb", "-1"], "--prefix-cache-mb (=-1) must be >= 0"),
    ],
)
def test_bad_input_is_a_clear_error_before_any_work(args, message, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert message in err, err
    assert not (out / "samples.jsonl").exists()


def test_list_commands(capsys):
    assert main(["list", "decoders"]) == 0
    assert "greedy" in capsys.readouterr().out.split()
    assert main(["list", "envs"]) == 0
    assert "basic_arithmetic" in capsys.readouterr().out.split()
