"""A resume keeps records only where their questions are the env's questions now: a folder
whose problem ids came to name other questions is refused (or, for a sweep with
--force-new, moved aside), never mixed."""

from __future__ import annotations

import json

import pytest

from harness.runs.held_questions import changed_question
from harness.runs.runner import RunSpec, run
from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import parse_config
from tests.helpers.sweeps import expected_keys, read_records, sweep_data

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_first_held_record_with_another_question_is_named():
    held = {"a": "1 + 1?", "b": "2 + 2?"}
    assert changed_question(held, [("a", "1 + 1?"), ("c", "new"), ("b", "2 + 3?")]) == ("b", "2 + 2?", "2 + 3?")
    assert changed_question(held, [("a", "1 + 1?"), ("b", "2 + 2?"), ("c", "anything")]) is None


def _rewrite_questions(samples, change):
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    samples.write_text("".join(json.dumps(change(r)) + "\n" for r in lines))


def _other_question(record: dict) -> dict:
    return record | {"question": record["question"] + " (as an older version asked it)"}


def test_a_sweep_whose_questions_changed_is_refused_then_started_over_with_force_new(tiny_model_dir, tmp_path):
    data = sweep_data(tiny_model_dir, n=2, seeds=(0,), lambdas=(0,), policies=("binary",))
    out = tmp_path / "s"
    run_sweep(parse_config(data), out, progress=False, write_report=False)
    _rewrite_questions(out / "samples.jsonl", _other_question)
    before = (out / "samples.jsonl").read_bytes()
    with pytest.raises(ValueError, match=r"whose question is .*older version.*but that problem is now.*--force-new"):
        run_sweep(parse_config(data), out, progress=False, write_report=False)
    assert (out / "samples.jsonl").read_bytes() == before  # nothing written, nothing lost
    result = run_sweep(parse_config(data), out, progress=False, write_report=False, force_new=True)
    assert result.new == len(expected_keys(parse_config(data)))
    assert all("older version" not in r["question"] for r in read_records(out))
    (aside,) = out.glob("replaced-*")
    assert (aside / "samples.jsonl").read_bytes() == before


def test_a_run_whose_questions_changed_is_refused(tiny_model_dir, tmp_path):
    spec = RunSpec(env="basic_arithmetic", model=str(tiny_model_dir), n=2, max_new_tokens=4, batch_size=2,
                   env_config={"min_terms": 2, "max_terms": 2})
    out = tmp_path / "r"
    run(spec, out, progress=False)
    run(spec, out, progress=False)  # unchanged questions: resumes, nothing to do
    _rewrite_questions(out / "samples.jsonl", _other_question)
    with pytest.raises(ValueError, match=r"whose question is .*but that problem is now.*choose a new --out"):
        run(spec, out, progress=False)
