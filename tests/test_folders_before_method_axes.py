"""Folders written before methods declared their grid axes resume without decoding anything:
record keys, grids and identities computed from the declarations equal the stored ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.engine import lockstep
from harness.runs.runner import RunSpec, run
from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import load_config
from tests.tiny import tiny_model

FIXTURES = Path(__file__).parent / "fixtures" / "folders_before_method_axes"
EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


@pytest.fixture
def old_folders(tmp_path, monkeypatch):
    """The fixture folders in a fresh directory beside the tiny model they name as `tiny`;
    decoding anything fails the test."""
    shutil.copytree(FIXTURES, tmp_path, dirs_exist_ok=True)
    loaded = tiny_model()
    loaded.model.save_pretrained(tmp_path / "tiny")
    loaded.tokenizer.save_pretrained(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a record already in the folder was decoded again")

    monkeypatch.setattr(lockstep, "decode", no_decoding)
    return tmp_path


def test_sweep_folder_resumes_with_nothing_to_decode_and_reports_as_before(old_folders):
    before = pd.read_csv(old_folders / "sweep" / "summary.csv")  # as the report wrote it then
    result = run_sweep(load_config("sweep.yaml"), "sweep", progress=False)
    assert result.new == 0 and result.total == 22 and not result.failed_units
    after = pd.read_csv(result.report.summary_csv)
    key = ["decoder_label", "lambda", "feedback_policy", "variant"]
    compared = ["n", "correct", "accuracy", "fix_rate", "break_rate", "kl_mix_p1", "effective_tokens_mean"]
    merged = before.merge(after, on=key, suffixes=("_before", "_after"))
    assert len(merged) == len(before) == len(after)  # the same groups
    for column in compared:
        pd.testing.assert_series_equal(merged[f"{column}_before"], merged[f"{column}_after"],
                                       check_names=False, check_dtype=False)


@pytest.mark.parametrize(("folder", "decoder", "config", "records"), [
    ("run-redumix", "redumix", {"lam": (0.0, 1.0), "feedback": "binary", "reflection_max_new_tokens": 4,
                                "reflect_prompt": "Reflect.", "redo_prompt": "Redo."}, 4),
    ("run-self-consistency", "self_consistency", {"n": (1, 2), "temperature": 0.7}, 4),
])
def test_run_folders_resume_with_nothing_to_decode(old_folders, folder, decoder, config, records):
    spec = RunSpec(env="basic_arithmetic", decoder=decoder, n=2, seed=0, model="tiny", max_new_tokens=6,
                   env_config=dict(EASY), decoder_config=config)
    summary = run(spec, folder, progress=False)
    assert summary.n == 0 and summary.skipped == records
