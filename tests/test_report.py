"""Reports: summary.csv agrees with a recomputation from samples.jsonl, model outputs
cannot inject markup, and plain run folders and empty folders are handled."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from harness.analysis.metrics import contributed
from harness.analysis.report import write_report
from harness.cli import main
from tests.helpers.report_folders import MARKUP, synthetic_records, write_sweep_folder

GROUP = ["model", "env_label", "decoder_label", "lambda", "feedback_policy"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = write_sweep_folder(tmp_path_factory.mktemp("rep") / "sweep", synthetic_records())
    return folder, write_report(folder)


def _wilson(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def test_summary_csv_equals_a_recomputation_from_samples_jsonl(report):
    folder, _ = report
    df = pd.read_json(folder / "samples.jsonl", lines=True)
    df["lambda_"] = df["lambda"].fillna(-1)
    df["policy_"] = df["feedback_policy"].fillna("-")
    df["latency"] = df["latency_s"] + df["stage_s"]
    df["changed_right"] = (df["stage1_correct"] == False) & df["correct"]  # noqa: E712 (NaN stays False)
    df["changed_wrong"] = (df["stage1_correct"] == True) & ~df["correct"]  # noqa: E712
    expected = df.groupby(["model", "env_label", "decoder_label", "lambda_", "policy_"]).agg(
        n=("correct", "size"), correct=("correct", "sum"), accuracy=("correct", "mean"),
        mean_score=("score", "mean"), p50=("latency", "median"), p95=("latency", lambda s: s.quantile(0.95)),
        fix=("changed_right", "mean"), brk=("changed_wrong", "mean"), stage1=("stage1_correct", "mean"),
        kl1=("kl_mix_p1", "mean"), kl2=("kl_mix_p2", "mean"), js=("js_p1_p2", "mean"),
        fmt=("format_ok", "mean"), tokens=("new_tokens", "sum"), decode=("decode_s", "sum"), cost=("cost_s", "mean"),
    ).reset_index()

    summary = pd.read_csv(folder / "summary.csv")
    summary["lambda_"] = summary["lambda"].fillna(-1)
    summary["policy_"] = summary["feedback_policy"].fillna("-")
    merged = expected.merge(summary, on=["model", "env_label", "decoder_label", "lambda_", "policy_"],
                            suffixes=("_want", ""))
    assert len(merged) == len(expected) == len(summary) == 2 * 8
    close = {"accuracy": "accuracy_want", "mean_score": "mean_score_want", "latency_p50_s": "p50",
             "latency_p95_s": "p95", "kl_mix_p1": "kl1", "kl_mix_p2": "kl2", "js_p1_p2": "js",
             "new_tokens_total": "tokens", "cost_s": "cost"}
    for got, want in close.items():
        np.testing.assert_allclose(merged[got], merged[want], rtol=1e-9, err_msg=got)
    assert (merged["n"] == merged["n_want"]).all() and (merged["correct"] == merged["correct_want"]).all()
    np.testing.assert_allclose(merged["format_failure_rate"], 1 - merged["fmt"], rtol=1e-9)
    np.testing.assert_allclose(merged["s_per_token"], merged["decode"] / merged["tokens"], rtol=1e-9)
    for _, row in merged.iterrows():
        lo, hi = _wilson(row["correct"], row["n"])
        assert row["accuracy_lo"] == pytest.approx(lo) and row["accuracy_hi"] == pytest.approx(hi)
        assert row["score_lo"] <= row["mean_score"] <= row["score_hi"]
    mixing = merged[merged["decoder_label"] == "redumix"]
    np.testing.assert_allclose(mixing["fix_rate"], mixing["fix"], rtol=1e-9)
    np.testing.assert_allclose(mixing["break_rate"], mixing["brk"], rtol=1e-9)
    np.testing.assert_allclose(mixing["stage1_accuracy"], mixing["stage1"].astype(float), rtol=1e-9)
    assert merged.loc[merged["decoder_label"] != "redumix", "fix_rate"].isna().all()
    # Cost against greedy of the same env.
    greedy = merged[merged["decoder_label"] == "greedy"].set_index("env_label")["cost"]
    np.testing.assert_allclose(merged["overhead_vs_greedy"], merged["cost"] / merged["env_label"].map(greedy))


def test_samples_csv_holds_every_record(report):
    folder, _ = report
    samples = pd.read_csv(folder / "samples.csv")
    records = synthetic_records()
    assert len(samples) == len(records)
    assert list(samples["key"]) == [r["key"] for r in records]
    assert json.loads(samples.loc[samples["decoder"] == "redumix", "contexts"].iloc[0]) == ["x", "x2"]


def test_markup_in_model_outputs_and_config_is_escaped(report):
    folder, _ = report
    html = (folder / "report.html").read_text()
    assert MARKUP not in html
    assert '<b class="injected">' not in html and "window.__pwned = 1</script>" not in html
    # Only the page's own two script blocks exist: the JSON data and the code.
    assert len(re.findall(r"<script\b", html)) == 2
    # The config is shown escaped; the samples travel as JSON with <, >, & as \u escapes.
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned" in html
    data = html.split('<script type="application/json" id="samples-data">', 1)[1].split("</script>", 1)[0]
    samples = json.loads(data)
    assert len(samples) == len(synthetic_records())
    assert MARKUP in samples[0]["question"]


def test_page_is_self_contained_with_every_figure(report):
    folder, _ = report
    html = (folder / "report.html").read_text()
    assert html.count('<img class="figure"') == 6  # all but the variant and soft-thinking figures
    assert "http://" not in html and "https://" not in html  # nothing fetched: works offline
    for name in ("Accuracy vs lambda", "Divergences vs lambda", "Cost against greedy", "Fixes and breaks vs lambda",
                 "Accuracy against cost", "Paired differences against greedy"):
        assert name in html


def test_report_of_a_plain_run_folder_leaves_out_lambda_figures(tmp_path, capsys):
    records = [r for r in synthetic_records(problems=3) if r["decoder"] == "greedy"]
    for r in records:  # as `redumix run` writes them: no sweep columns
        for key in ("key", "env_label", "decoder_label", "lambda", "feedback_policy", "cost_s", "stage_s"):
            r.pop(key)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["report", str(folder)]) == 0
    assert f"report: {folder / 'report.html'}" in capsys.readouterr().out
    summary = pd.read_csv(folder / "summary.csv")
    assert list(summary["decoder_label"]) == ["greedy", "greedy"] and list(summary["n"]) == [6, 6]
    html = (folder / "report.html").read_text()
    # One figure (accuracy, greedy as a line); every other general or method figure has nothing to draw.
    assert html.count('<img class="figure"') == 1 and "Accuracy vs lambda" in html
    left_out = int(re.search(r"(\d+) figure\(s\) left out", html).group(1))
    assert left_out == len(contributed().figures) + 4 - 1  # the methods' figures and the 4 every report has


def test_report_of_an_empty_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no records" in err and str(tmp_path) in err


def test_report_skips_a_torn_last_line(tmp_path):
    records = synthetic_records(problems=2)
    folder = write_sweep_folder(tmp_path / "s", records)
    with (folder / "samples.jsonl").open("a") as f:
        f.write('{"key": "torn", "mod')
    assert write_report(folder).summary["n"].sum() == len(records)


def test_comparisons_csv_pairs_every_variant_with_the_reference(report):
    folder, _ = report
    table = pd.read_csv(folder / "comparisons.csv")
    summary = pd.read_csv(folder / "summary.csv")
    assert set(table["reference"]) == {"greedy"} and "greedy" not in set(table["decoder_label"])
    assert len(table) == len(summary) - summary["decoder_label"].eq("greedy").sum()
    assert (table["accuracy_diff_lo"] <= table["accuracy_diff"]).all()
    assert (table["accuracy_diff"] <= table["accuracy_diff_hi"]).all()
    assert table["mcnemar_p"].between(0, 1).all() and (table["pairs"] > 0).all()
    merged = summary.dropna(subset=["accuracy_diff"]).merge(table, on=["env_label", "decoder_label", "lambda",
                                                                       "feedback_policy"], suffixes=("", "_c"))
    assert len(merged) == len(table) and (merged["accuracy_diff"] == merged["accuracy_diff_c"]).all()


def test_samples_parquet_reads_back_as_samples_csv_with_types_kept(report):
    folder, paths = report
    assert paths.samples_parquet == folder / "samples.parquet"
    samples = pd.read_parquet(folder / "samples.parquet")
    # Same rows, columns and values: written out as CSV it is samples.csv, byte for byte.
    assert list(samples.columns) == list(pd.read_csv(folder / "samples.csv").columns)
    assert samples.to_csv(index=False) == (folder / "samples.csv").read_text()
    records = synthetic_records()
    assert list(samples["key"]) == [r["key"] for r in records]
    # Typed, unlike the CSV: what pandas users filter and average on needs no parsing.
    assert samples["correct"].dtype == bool and samples["new_tokens"].dtype == "int64"
    assert samples["score"].dtype == "float64" and samples["lambda"].isna().sum() == 2 * 2 * 12 * 2
    # Nested values are JSON text, as in samples.csv.
    assert [json.loads(v) for v in samples["decoder_config"]] == [r["decoder_config"] for r in records]
    redumix = samples["decoder"] == "redumix"
    assert all(json.loads(v) == ["x", "x2"] for v in samples.loc[redumix, "contexts"])
    assert samples.loc[~redumix, "contexts"].isna().all()


def test_samples_parquet_stores_a_column_of_mixed_types_as_samples_csv_writes_it(tmp_path):
    records = synthetic_records(problems=2)
    for r in records:  # a gold answer that is a number in one environment, text in the other
        if r["env"] == "chain_sum":
            r["gold"] = int(r["gold"])
    folder = write_sweep_folder(tmp_path / "s", records)
    write_report(folder)
    samples = pd.read_parquet(folder / "samples.parquet")
    assert samples.to_csv(index=False) == (folder / "samples.csv").read_text()
    assert set(samples["gold"].map(type)) == {str}
