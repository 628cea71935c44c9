"""Preference pairs harvested from ReDuMix records."""

from __future__ import annotations

import json

import pytest

from harness.analysis.harvest import harvest, select_pairs
from harness.cli import main
from harness.runs.store import RunDir


def _record(pid, lam, first, first_ok, redo, redo_ok):
    return {
        "env": "basic_arithmetic", "problem_id": pid, "gold": "7", "model": "tiny", "lambda": lam,
        "decoder": "redumix", "seed": 0, "new_tokens": 3, "latency_s": 0.1, "decode_s": 0.1,
        "feedback_policy": "ground_truth", "feedback": "The expected answer is: 7", "reflection": "Check the sum.",
        "contexts": [f"<x {pid}>", f"<x2 {pid}>"], "stage1_completion": first, "stage1_answer": None,
        "stage1_correct": first_ok, "completion": redo, "answer": None, "correct": redo_ok, "score": float(redo_ok),
    }


P0, P1, P2 = (f"basic_arithmetic-s0-{i}" for i in range(3))
RUN_SPEC = {"env": "basic_arithmetic", "n": 3, "seed": 0, "decoder": "redumix",
            "decoder_config": {"lam": [0.0, 0.5, 1.0]}}
RECORDS = [
    _record("basic_arithmetic-s0-0", 0.0, "5", False, "<answer>7</answer>", True),  # improved
    _record("basic_arithmetic-s0-0", 1.0, "5", False, "5", False),  # identical: never a pair
    _record("basic_arithmetic-s0-1", 0.0, "<answer>7</answer>", True, "8", False),  # got worse
    _record("basic_arithmetic-s0-2", 0.5, "6", False, "9", False),  # changed, still wrong
]


def test_improved_rule_keeps_only_wrong_to_right():
    pairs, identical = select_pairs(RECORDS, "improved")
    assert identical == 1
    assert [(p["problem_id"], p["lambda"]) for p in pairs] == [(P0, 0.0)]
    pair = pairs[0]
    assert (pair["prompt"], pair["chosen"], pair["rejected"]) == (f"<x {P0}>", "<answer>7</answer>", "5")
    assert pair["reflective_prompt"] == f"<x2 {P0}>"  # x2, for `redumix distill`'s GKD teacher
    assert pair["chosen_correct"] and not pair["rejected_correct"]


def test_all_rule_keeps_every_changed_record():
    pairs, identical = select_pairs(RECORDS, "all")
    assert identical == 1
    assert [(p["problem_id"], p["lambda"]) for p in pairs] == [(P0, 0.0), (P1, 0.0), (P2, 0.5)]
    assert all(p["chosen"] != p["rejected"] for p in pairs)


def test_unknown_rule_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean: improved"):
        select_pairs(RECORDS, "improvd")


def test_cli_writes_pairs_a_dpo_trainer_reads(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    run.write_spec({"run": RUN_SPEC})
    run.append(RECORDS)
    out = tmp_path / "pairs.jsonl"
    assert main(["harvest", str(run.path), "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 1 and {"prompt", "chosen", "rejected"} <= lines[0].keys()
    assert "1 pairs (improved) from 4 records" in capsys.readouterr().out
    assert main(["harvest", str(run.path), "--all", "--out", str(out)]) == 2  # never replaced by surprise
    assert "already exists" in capsys.readouterr().err and len(out.read_text().splitlines()) == 1
    assert main(["harvest", str(run.path), "--all", "--out", str(out), "--force"]) == 0
    assert len(out.read_text().splitlines()) == 3


def test_cli_refuses_folders_without_redumix_records(tmp_path, capsys):
    assert main(["harvest", str(tmp_path / "missing"), "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "holds no run" in capsys.readouterr().err
    greedy = RunDir(tmp_path / "greedy")
    greedy.write_spec({"run": RUN_SPEC | {"decoder": "greedy", "decoder_config": {}}})
    greedy.append([{k: v for k, v in RECORDS[0].items() if not k.startswith("stage1") and k != "lambda"}
                   | {"decoder": "greedy"}])
    assert main(["harvest", str(greedy.path), "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "no ReDuMix records" in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists()
    with pytest.raises(ValueError, match="no ReDuMix records"):
        harvest(greedy.path, tmp_path / "p.jsonl")
