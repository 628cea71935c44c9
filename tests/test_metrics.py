"""Metric functions on hand-made records whose answers are known."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.analysis import metrics


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (8, 10, 0.4902, 0.9433),  # textbook values of the Wilson interval
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (50, 100, 0.4038, 0.5962),
    ],
)
def test_wilson_interval_matches_known_values(k, n, lo, hi):
    got = metrics.wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_of_nothing_is_nan():
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = [0.0, 0.25, 1.0, 1.0, 0.5, 0.0, 1.0, 0.75]
    a = metrics.bootstrap_mean_interval(values, seed=3)
    assert a == metrics.bootstrap_mean_interval(values, seed=3)
    assert a != metrics.bootstrap_mean_interval(values, seed=4)
    assert a[0] < sum(values) / len(values) < a[1]
    assert metrics.bootstrap_mean_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)


def _records(rows):
    base = {"model": "m", "env": "e", "env_label": "e", "score": 0.0, "format_ok": True, "new_tokens": 10,
            "latency_s": 1.0, "decode_s": 0.5, "stage_s": 0.0, "cost_s": 1.0, "lambda": None,
            "feedback_policy": None, "stage1_correct": None}
    out = []
    for row in rows:
        record = base | row
        record.setdefault("decoder_label", record["decoder"])
        record["score"] = float(record["correct"]) if "score" not in row else row["score"]
        out.append(record)
    return pd.DataFrame(out)


def test_fix_and_break_rates_count_changes_from_the_first_attempt():
    # first attempt -> final: right->right, right->wrong, wrong->right, wrong->right, wrong->wrong
    pairs = [(True, True), (True, False), (False, True), (False, True), (False, False)]
    df = _records([{"decoder": "redumix", "lambda": 0.5, "feedback_policy": "binary", "stage1_correct": s,
                    "correct": c} for s, c in pairs])
    (row,) = metrics.summarize(df).to_dict("records")
    assert row["stage1_accuracy"] == pytest.approx(2 / 5)
    assert row["fix_rate"] == pytest.approx(2 / 5)
    assert row["break_rate"] == pytest.approx(1 / 5)
    assert row["net_gain"] == pytest.approx(row["accuracy"] - row["stage1_accuracy"])


def test_decoders_without_a_first_attempt_have_no_fix_rate():
    (row,) = metrics.summarize(_records([{"decoder": "greedy", "correct": True}])).to_dict("records")
    assert math.isnan(row["fix_rate"]) and math.isnan(row["stage1_accuracy"])


def test_groups_split_by_lambda_and_policy_and_overhead_is_against_greedy():
    rows = [{"decoder": "greedy", "correct": True, "cost_s": 2.0}] * 2
    rows += [{"decoder": "redumix", "lambda": lam, "feedback_policy": "binary", "stage1_correct": False,
              "correct": lam > 0, "cost_s": 5.0 + lam * 2} for lam in (0.0, 1.0)]
    rows += [{"decoder": "redumix", "lambda": 1.0, "feedback_policy": "ground_truth", "stage1_correct": True,
              "correct": True, "cost_s": 8.0}]
    table = metrics.summarize(_records(rows), reference="greedy")
    assert len(table) == 4
    by = {(r["decoder_label"], r["lambda"], r["feedback_policy"]): r for r in table.to_dict("records")}
    assert by[("greedy", None, None)]["overhead_vs_greedy"] == 1.0
    assert by[("redumix", 0.0, "binary")]["overhead_vs_greedy"] == pytest.approx(2.5)
    assert by[("redumix", 1.0, "binary")]["overhead_vs_greedy"] == pytest.approx(3.5)
    assert by[("redumix", 1.0, "ground_truth")]["overhead_vs_greedy"] == pytest.approx(4.0)
    assert by[("redumix", 1.0, "binary")]["fix_rate"] == 1.0


def test_overhead_is_nan_without_the_reference_in_the_sweep():
    table = metrics.summarize(_records([{"decoder": "sample", "correct": True}]), reference="greedy")
    assert math.isnan(table["overhead_vs_greedy"].iloc[0])
    assert math.isnan(metrics.summarize(_records([{"decoder": "sample", "correct": True}]))["overhead_vs_greedy"][0])


def test_overhead_is_against_the_reference_the_sweep_names():
    rows = [{"decoder": "greedy", "correct": True, "cost_s": 2.0}, {"decoder": "sample", "correct": True,
                                                                    "cost_s": 4.0}]
    by = {r["decoder_label"]: r["overhead_vs_greedy"]
          for r in metrics.summarize(_records(rows), reference="sample").to_dict("records")}
    assert by == {"greedy": 0.5, "sample": 1.0}


def test_latency_includes_earlier_stages_and_tokens_time_is_pooled():
    rows = [{"decoder": "redumix", "lambda": 0.5, "correct": True, "latency_s": lat, "stage_s": 1.0,
             "decode_s": dec, "new_tokens": tok} for lat, dec, tok in [(1.0, 0.5, 5), (2.0, 1.5, 10), (3.0, 2.0, 25)]]
    (row,) = metrics.summarize(_records(rows)).to_dict("records")
    assert row["latency_p50_s"] == pytest.approx(3.0)  # median of 2, 3, 4
    assert row["latency_p95_s"] == pytest.approx(3.9)
    assert row["s_per_token"] == pytest.approx(4.0 / 40)
    assert row["new_tokens_total"] == 40


def test_format_failures_and_divergence_means():
    rows = [{"decoder": "redumix", "lambda": 0.5, "correct": False, "format_ok": ok, "kl_mix_p1": kl, "js_p1_p2": 0.1}
            for ok, kl in [(True, 0.2), (False, 0.4), (False, float("nan"))]]
    (row,) = metrics.summarize(_records(rows)).to_dict("records")
    assert row["format_failure_rate"] == pytest.approx(2 / 3)
    assert row["kl_mix_p1"] == pytest.approx(0.3)  # rows without steps (nan) are left out
    assert row["js_p1_p2"] == pytest.approx(0.1)
    assert math.isnan(row["top1_agree"])


def test_plain_run_records_are_summarised_too():
    # A `redumix run` folder has no sweep columns: env and decoder names stand in for labels.
    df = pd.DataFrame([{"model": "m", "env": "e", "decoder": "greedy", "correct": c, "score": float(c),
                        "new_tokens": 4, "latency_s": 0.2, "decode_s": 0.1} for c in (True, False)])
    (row,) = metrics.summarize(df).to_dict("records")
    assert (row["env_label"], row["decoder_label"], row["n"], row["accuracy"]) == ("e", "greedy", 2, 0.5)
