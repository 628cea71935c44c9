"""Paired comparisons against the reference decoder, on the problems both answered.

Two decoders that answered the same problems are compared problem by problem, which is
what overlapping per-decoder intervals cannot do: the accuracy difference with a seeded
paired-bootstrap interval, McNemar's exact test on the discordant pairs (a two-sided
binomial test of wins against losses), and the same difference for `score` with a
Wilcoxon signed-rank test. A pair is (model, env, problem, seed): seeds pool as
separate problems. Across runs (`compare_across_runs`), each run's variant is compared with
the same variant of a base run on the problems both runs answered. Everything here is a
pure function of the records.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import binomtest, wilcoxon

# What identifies one answer's problem, across decoders of a sweep.
PAIR_COLUMNS = ["model", "env_label", "problem_id", "seed"]
STATISTIC_COLUMNS = ["pairs", "accuracy_diff", "accuracy_diff_lo", "accuracy_diff_hi", "wins", "losses",
                     "mcnemar_p", "score_diff", "score_diff_lo", "score_diff_hi", "wilcoxon_p"]
# Across runs: one problem is the same env item, seed and question text.
CROSS_PAIR_COLUMNS = ["env_label", "problem_id", "seed", "question"]


def axis_columns() -> list[str]:
    """The grid axes with summary columns of their own (ReDuMix's lambda and feedback policy, as the
    registered methods declare them), then `variant` for every other variant ("n=4")."""
    from harness.methods.registry import column_axes

    return [*column_axes(), "variant"]


def variant_columns() -> list[str]:
    """What one decoder variant is within an env, whichever model or run answered."""
    return ["env_label", "decoder_label", *axis_columns()]


def side_columns() -> list[str]:
    """A variant of a decoder on a model: one side of a comparison (and one group of the summary)."""
    return ["model", *variant_columns()]


def comparison_columns() -> list[str]:
    return [*side_columns(), "reference", *STATISTIC_COLUMNS]


def cross_run_columns() -> list[str]:
    return ["run", "model", *variant_columns(), "base_run", "base_model", *STATISTIC_COLUMNS]


def paired_difference(a, b, seed: int = 0, resamples: int = 2000, level: float = 0.95) -> tuple[float, float, float]:
    """(mean of a - b, percentile-bootstrap interval) over pairs resampled together."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diff.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(diff.mean()), float(lo), float(hi))


def mcnemar_exact(a_correct, b_correct) -> tuple[int, int, float]:
    """(wins: a right and b wrong, losses: a wrong and b right, exact two-sided p-value)."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    wins, losses = int((a & ~b).sum()), int((~a & b).sum())
    if wins + losses == 0:
        return (0, 0, 1.0)
    return (wins, losses, float(binomtest(wins, wins + losses, 0.5).pvalue))


def signed_rank_p(a, b) -> float:
    """Wilcoxon signed-rank p-value of paired scores; 1.0 when every pair ties."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not np.any(diff != 0):
        return 1.0
    return float(wilcoxon(diff, zero_method="zsplit").pvalue)


def compare_to_reference(records: pd.DataFrame, reference: str | None, seed: int = 0) -> pd.DataFrame:
    """One row per decoder variant against the reference on the same (model, env), on the
    problems both answered (see the module docstring). Empty without a reference.

    `records` must carry the summary's group columns (`metrics.normalize` fills them).
    """
    if reference is None or not set(PAIR_COLUMNS) <= set(records.columns):
        return pd.DataFrame(columns=comparison_columns())
    is_reference = records["decoder_label"] == reference
    for column in axis_columns():  # the reference's plain answers, not one of its variants
        is_reference &= records[column].isna()
    base = records[is_reference]
    sides = side_columns()
    rows = [dict(zip(sides, key, strict=True)) | {"reference": reference}
            | paired_statistics(group, base, PAIR_COLUMNS, seed)
            for key, group in records[~is_reference].groupby(sides, dropna=False, sort=True)]
    return _with_none(pd.DataFrame(rows, columns=comparison_columns()))


def compare_across_runs(records: pd.DataFrame, base_run: str, seed: int = 0) -> pd.DataFrame:
    """Each variant of every other run against the same variant of `base_run`, on the problems
    both answered (one row per pair of sides; see `cross_run_columns`).

    `records` are several runs' normalised records with a `run` column. Problems pair on
    CROSS_PAIR_COLUMNS, the question text included: two runs whose envs are configured
    differently can give one problem id another question, and those are not the same problem.
    A side is paired with the base run's same model when the base run has it (a GPU run
    against a CPU run), otherwise with each of the base run's models (a distilled model
    against its base).
    """
    pair_on = [c for c in CROSS_PAIR_COLUMNS if c in records]
    base = records[records["run"] == base_run]
    variant_of = variant_columns()
    rows = []
    for key, group in records[records["run"] != base_run].groupby(["run", "model", *variant_of],
                                                                   dropna=False, sort=False):
        run, model, variant = key[0], key[1], key[2:]
        same_variant = base[_matches(base, variant_of, variant)]
        base_models = sorted(same_variant["model"].unique(), key=str)
        for base_model in [model] if model in base_models else base_models:
            theirs = same_variant[same_variant["model"] == base_model]
            rows.append({"run": run, "model": model} | dict(zip(variant_of, variant, strict=True))
                        | {"base_run": base_run, "base_model": base_model}
                        | paired_statistics(group, theirs, pair_on, seed))
    return _with_none(pd.DataFrame(rows, columns=cross_run_columns()))


def paired_statistics(ours: pd.DataFrame, theirs: pd.DataFrame, pair_on: list[str], seed: int) -> dict:
    """The comparison of two sides' records on the problems both answered (pairs found by
    `pair_on`; a problem answered twice by one side counts once)."""
    joined = ours.drop_duplicates(pair_on).merge(theirs.drop_duplicates(pair_on)[[*pair_on, "correct", "score"]],
                                                 on=pair_on, suffixes=("", "_ref"))
    a, b = joined["correct"].astype(bool), joined["correct_ref"].astype(bool)
    diff, lo, hi = paired_difference(a, b, seed=seed)
    wins, losses, p = mcnemar_exact(a, b)
    sdiff, slo, shi = paired_difference(joined["score"], joined["score_ref"], seed=seed)
    return {"pairs": len(joined), "accuracy_diff": diff, "accuracy_diff_lo": lo, "accuracy_diff_hi": hi,
            "wins": wins, "losses": losses, "mcnemar_p": p, "score_diff": sdiff, "score_diff_lo": slo,
            "score_diff_hi": shi,
            "wilcoxon_p": signed_rank_p(joined["score"], joined["score_ref"]) if len(joined) else math.nan}


def _matches(frame: pd.DataFrame, columns: list[str], values) -> pd.Series:
    """Rows whose `columns` equal `values`, a missing value matching a missing one."""
    mask = pd.Series(True, index=frame.index)
    for column, value in zip(columns, values, strict=True):
        mask &= frame[column].isna() if pd.isna(value) else frame[column] == value
    return mask


def _with_none(table: pd.DataFrame) -> pd.DataFrame:
    """Missing variant values as None (not NaN), as the summary holds them."""
    for column in axis_columns():
        table[column] = table[column].astype(object).where(table[column].notna(), None)
    return table


def pareto_front(costs, accuracies) -> list[int]:
    """Indices of the non-dominated points: no other point costs no more and scores no less,
    with one of the two strictly better. Sorted by cost."""
    points = list(zip(costs, accuracies, strict=True))
    front = [i for i, (c, a) in enumerate(points)
             if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in points)]
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))
