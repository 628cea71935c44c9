"""Paired comparisons against the reference: hand-computed McNemar and differences, a decoder
against itself, the Pareto frontier, and the files and figure a report writes."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.analysis import metrics
from harness.analysis.paired import compare_to_reference, mcnemar_exact, paired_difference, pareto_front


def test_mcnemar_exact_matches_the_binomial_by_hand():
    # 8 wins, 1 loss, 3 ties: p = 2 * P(X <= 1 | n=9, 1/2) = 2 * (1 + 9) / 512
    a = [1] * 8 + [0] + [1, 1, 0]
    b = [0] * 8 + [1] + [1, 1, 0]
    wins, losses, p = mcnemar_exact(a, b)
    assert (wins, losses) == (8, 1) and p == pytest.approx(20 / 512)
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == (0, 0, 1.0)


def test_paired_difference_is_the_mean_difference_and_zero_against_itself():
    a, b = [1, 1, 0, 0, 1], [0, 1, 1, 0, 0]
    diff, lo, hi = paired_difference(a, b, seed=3)
    assert diff == pytest.approx(0.2) and lo <= 0.2 <= hi and -1 <= lo and hi <= 1
    assert paired_difference(a, a) == (0.0, 0.0, 0.0)
    # Every pair favours a by exactly 1: the interval cannot move.
    assert paired_difference([1, 1, 1], [0, 0, 0]) == (1.0, 1.0, 1.0)


def _records(rows):
    return metrics.normalize(pd.DataFrame(rows))


def _record(decoder, pid, correct, seed=0, score=None):
    return {"model": "m", "env": "e", "env_label": "e", "problem_id": pid, "seed": seed, "decoder": decoder,
            "decoder_label": decoder, "correct": correct, "score": float(correct if score is None else score),
            "new_tokens": 5, "latency_s": 0.1, "decode_s": 0.1, "lambda": None, "feedback_policy": None}


def test_comparison_pairs_on_shared_problems_and_pools_seeds():
    rows = [_record("greedy", f"p{i}", c, seed=s) for s in (0, 1) for i, c in enumerate([1, 0, 0, 1])]
    rows += [_record("other", f"p{i}", c, seed=s) for s in (0, 1) for i, c in enumerate([1, 1, 1, 1])]
    rows += [_record("other", "p9", 1)]  # greedy never answered it: not paired
    rows += [_record("same", r["problem_id"], r["correct"], seed=r["seed"]) for r in rows[:8]]
    table = compare_to_reference(_records(rows), "greedy").set_index("decoder_label")
    assert table.loc["other", "pairs"] == 8 and table.loc["other", "wins"] == 4 and table.loc["other", "losses"] == 0
    assert table.loc["other", "accuracy_diff"] == pytest.approx(0.5)
    assert table.loc["other", "mcnemar_p"] == pytest.approx(2 / 16)
    same = table.loc["same"]
    assert (same["accuracy_diff"], same["mcnemar_p"], same["wilcoxon_p"]) == (0.0, 1.0, 1.0)
    summary = metrics.summarize(pd.DataFrame(rows), reference="greedy").set_index("decoder_label")
    assert summary.loc["other", "accuracy_diff"] == pytest.approx(0.5) and math.isnan(summary.loc["greedy", "wins"])


def test_the_frontier_is_exactly_the_non_dominated_points():
    costs = [1.0, 2.0, 2.0, 3.0, 4.0, 0.5, 3.0]
    accs = [0.5, 0.6, 0.4, 0.6, 0.9, 0.2, 0.7]
    # 2 (dominated by 0), 3 (by 1), 1 stays (cheaper than 3 and 6 at less accuracy)
    assert pareto_front(costs, accs) == [5, 0, 1, 6, 4]
    assert pareto_front([1.0, 1.0], [0.5, 0.5]) == [0, 1]  # equal points dominate neither
