"""A report over several runs: each run's numbers as its own report has them, paired
comparisons across runs on shared problems only, and the run folders left untouched."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.joined_report import run_labels, write_joined_report
from harness.analysis.report import write_report
from harness.cli import main
from tests.helpers.report_folders import synthetic_records, write_sweep_folder


def _flipped(records: list[dict], problems: set[str], decoder: str = "greedy") -> list[dict]:
    """The same records with `decoder`'s correctness flipped on `problems` (seed 0 only)."""
    out = []
    for r in records:
        r = dict(r)
        if r["decoder"] == decoder and r["problem_id"] in problems and r["seed"] == 0:
            r["correct"] = not r["correct"]
            r["score"] = 1.0 if r["correct"] else 0.0
        out.append(r)
    return out


def test_each_run_keeps_the_numbers_of_its_own_report(tmp_path):
    a = write_sweep_folder(tmp_path / "a", synthetic_records(0))
    b = write_sweep_folder(tmp_path / "b", synthetic_records(1))
    joined = write_joined_report([a, b], tmp_path / "both")
    summary = pd.read_csv(joined.summary_csv)
    comparisons = pd.read_csv(joined.comparisons_csv)
    for label, folder in (("a", a), ("b", b)):
        own = write_report(folder)
        ours = summary[summary["run"] == label].drop(columns="run").reset_index(drop=True)
        pd.testing.assert_frame_equal(ours, pd.read_csv(own.summary_csv))
        ours = comparisons[comparisons["run"] == label].drop(columns="run").reset_index(drop=True)
        pd.testing.assert_frame_equal(ours, pd.read_csv(own.comparisons_csv))
    samples = pd.read_csv(joined.samples_csv)
    assert samples.groupby("run").size().to_dict() == {"a": len(synthetic_records(0)), "b": len(synthetic_records(1))}
    assert pd.read_parquet(joined.samples_parquet).to_csv(index=False) == joined.samples_csv.read_text()


def test_runs_pair_on_shared_problems_variant_by_variant(tmp_path):
    base = synthetic_records(0)
    greedy = {r["problem_id"]: r["correct"] for r in base if r["decoder"] == "greedy" and r["seed"] == 0
              and r["env"] == "basic_arithmetic"}
    turned_right = {p for p, c in greedy.items() if not c}
    a = write_sweep_folder(tmp_path / "a", base)
    b = write_sweep_folder(tmp_path / "b", _flipped(base, turned_right))
    cross = pd.read_csv(write_joined_report([a, b], tmp_path / "both").cross_runs_csv)
    row = cross[(cross["decoder_label"] == "greedy") & (cross["env_label"] == "basic_arithmetic")].iloc[0]
    # Every wrong seed-0 answer became right; seed 1 is unchanged: 24 pairs, wins only.
    assert (row["run"], row["base_run"], row["pairs"]) == ("b", "a", 24)
    assert (row["wins"], row["losses"]) == (len(turned_right), 0)
    assert row["accuracy_diff"] == pytest.approx(len(turned_right) / 24)
    # Unchanged variants: difference 0 and p = 1.
    same = cross[cross["decoder_label"] != "greedy"]
    assert len(same) == 2 * 7 and (same["accuracy_diff"] == 0).all() and (same["mcnemar_p"] == 1.0).all()


def test_a_problem_with_another_question_is_not_paired_and_the_report_says_so(tmp_path):
    base = synthetic_records(0)
    other = [dict(r, question=r["question"] + " (harder)") for r in base]
    a = write_sweep_folder(tmp_path / "a", base)
    b = write_sweep_folder(tmp_path / "b", other)
    report = write_joined_report([a, b], tmp_path / "both")
    cross = pd.read_csv(report.cross_runs_csv)
    assert (cross["pairs"] == 0).all()
    assert any("b shares no problem with a" in note for note in report.notes)
    html = report.html.read_text()
    assert "b shares no problem with a" in html and "Paired differences across runs" not in html


def test_a_distilled_model_pairs_with_its_base_model(tmp_path):
    base = synthetic_records(0)
    distilled = [dict(r, model="m-distilled") for r in base]
    a = write_sweep_folder(tmp_path / "base", base)
    b = write_sweep_folder(tmp_path / "distilled", distilled)
    cross = pd.read_csv(write_joined_report([a, b], tmp_path / "both").cross_runs_csv)
    assert set(cross["model"]) == {"m-distilled"} and set(cross["base_model"]) == {"m"}
    assert (cross["pairs"] == 24).all() and (cross["accuracy_diff"] == 0).all()


def test_the_cli_needs_out_for_several_runs_and_leaves_the_runs_alone(tmp_path, capsys):
    a = write_sweep_folder(tmp_path / "a", synthetic_records(0))
    b = write_sweep_folder(tmp_path / "b", synthetic_records(1))
    before = {p: p.read_bytes() for folder in (a, b) for p in folder.iterdir()}
    assert main(["report", str(a), str(b)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["report", str(a), str(b), "--out", str(a)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "one of the runs" in err
    assert main(["report", str(a), str(a), "--out", str(tmp_path / "c")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "cross_runs.csv" in printed and "report.html" in printed
    assert {p: p.read_bytes() for folder in (a, b) for p in folder.iterdir()} == before
    assert pd.read_csv(tmp_path / "c" / "summary.csv")["run"].unique().tolist() == ["a", "b"]


def test_one_run_with_out_is_its_own_report_written_elsewhere(tmp_path):
    a = write_sweep_folder(tmp_path / "a", synthetic_records(0))
    report = write_joined_report([a], tmp_path / "copy")
    assert report.notes == () and pd.read_csv(report.cross_runs_csv).empty
    own = pd.read_csv(write_report(a).summary_csv)
    pd.testing.assert_frame_equal(pd.read_csv(report.summary_csv).drop(columns="run"), own)


def test_run_labels_are_folder_names_unless_two_share_one():
    assert run_labels([Path("x/a"), Path("y/b")]) == ["a", "b"]
    assert run_labels([Path("x/run"), Path("y/run"), Path("z/c")]) == ["x/run", "y/run", "c"]
