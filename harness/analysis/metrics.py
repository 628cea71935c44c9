"""Per-group metrics of a results table: accuracy with confidence intervals, the
feedback loop's fixes and breaks, latency and cost against greedy, tokens, format
failures, and the mixture's divergence statistics.

A group is one (model, env, decoder, lambda, feedback policy, variant); seeds and
problems are pooled. `variant` names a variant on an axis other than lambda (e.g.
self-consistency's "n=4"); lambda keeps its own column. Everything here is a pure function of the records.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.analysis.paired import SIDE_COLUMNS, compare_to_reference
from harness.methods.base import variant_key

GROUP_COLUMNS = SIDE_COLUMNS  # a group is one side of a paired comparison
STAT_COLUMNS = ["kl_mix_p1", "kl_mix_p2", "kl_p1_p2", "js_p1_p2", "entropy_mix", "top1_agree"]
# Soft decoders' per-record means (decoders.thinking.summarize_thinking), averaged per group.
SOFT_COLUMNS = ["think_steps", "entropy_mean", "weights_entropy_mean", "effective_tokens_mean", "top1_weight_mean"]
# Why thinking ended, as the share of a group's records: (summary column, record value).
THINK_ENDS = [("marker_end_rate", "marker"), ("budget_end_rate", "budget"), ("cold_stop_rate", "cold_stop"),
              ("eos_end_rate", "eos")]
STAGE_FIELDS = ["stage1_s", "feedback_s", "reflection_s", "compress_s"]
Z95 = 1.959963984540054  # two-sided 95% normal quantile
# From the paired comparison with the reference (harness.analysis.paired), per group.
PAIRED_COLUMNS = ["accuracy_diff", "accuracy_diff_lo", "accuracy_diff_hi", "wins", "losses", "mcnemar_p"]

# Column order of `summarize`'s table (and of summary.csv).
SUMMARY_COLUMNS = [
    *GROUP_COLUMNS, "decoder", "n", "correct", "accuracy", "accuracy_lo", "accuracy_hi",
    "mean_score", "score_lo", "score_hi",
    "stage1_accuracy", "fix_rate", "break_rate", "net_gain",
    "latency_p50_s", "latency_p95_s", "s_per_token", "cost_s", "overhead_vs_greedy",
    "new_tokens_mean", "new_tokens_total", "format_failure_rate",
    *STAT_COLUMNS, *SOFT_COLUMNS, *(column for column, _ in THINK_ENDS),
    *PAIRED_COLUMNS,
]


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (nan, nan) when n == 0.

    Unlike the normal interval it stays inside [0, 1] and is not empty at 0 or n successes.
    """
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; floating point would leave ~1e-17.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def bootstrap_mean_interval(values, seed: int = 0, resamples: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (scores can be fractional)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(lo), float(hi))


def normalize(records: pd.DataFrame) -> pd.DataFrame:
    """Fill the sweep columns for records from a plain `redumix run` folder, so one report reads both."""
    df = records.copy()
    if "env_label" not in df:
        df["env_label"] = df["env"]
    if "decoder_label" not in df:
        df["decoder_label"] = df["decoder"]
    for name in ("lambda", "feedback_policy", "stage1_correct", "cost_s", "think_end", *STAT_COLUMNS, *SOFT_COLUMNS):
        if name not in df:
            df[name] = None
    df["variant"] = [_variant_label(v) for v in (df["variant"] if "variant" in df else [None] * len(df))]
    if "stage_s" not in df:
        present = [c for c in STAGE_FIELDS if c in df]
        df["stage_s"] = df[present].fillna(0.0).sum(axis=1) if present else 0.0
    if "format_ok" not in df:
        df["format_ok"] = True
    return df


def summarize(records: pd.DataFrame, seed: int = 0, reference: str | None = None,
              comparisons: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per group with every metric (see SUMMARY_COLUMNS); `seed` drives the bootstrap.

    `reference`: the decoder label that "cost against" divides by (overhead_vs_greedy keeps its
    name; the reference is greedy unless the sweep says otherwise); None leaves it empty.
    `comparisons`: `paired.compare_to_reference` of these records, when the caller has it already.
    """
    df = normalize(records)
    rows = []
    for key, group in df.groupby(GROUP_COLUMNS, dropna=False, sort=True):
        rows.append(dict(zip(GROUP_COLUMNS, key, strict=True)) | group_metrics(group, seed=seed))
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    table["overhead_vs_greedy"] = overhead_vs_reference(table, reference)
    if comparisons is None:
        comparisons = compare_to_reference(df, reference, seed=seed)
    paired = {_side(row): row for _, row in comparisons.iterrows()}
    for column in PAIRED_COLUMNS:
        table[column] = [paired[_side(row)][column] if _side(row) in paired else math.nan
                         for _, row in table.iterrows()]
    for column in ("lambda", "feedback_policy", "variant"):
        table[column] = table[column].astype(object).where(table[column].notna(), None)
    return table


def group_metrics(group: pd.DataFrame, seed: int = 0) -> dict:
    """Every metric of one group's records (already `normalize`d)."""
    n = len(group)
    correct = int(group["correct"].astype(bool).sum())
    lo, hi = wilson_interval(correct, n)
    score_lo, score_hi = bootstrap_mean_interval(group["score"].astype(float), seed=seed)
    out = {
        "decoder": group["decoder"].iloc[0],
        "n": n,
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_lo": lo,
        "accuracy_hi": hi,
        "mean_score": float(group["score"].astype(float).mean()),
        "score_lo": score_lo,
        "score_hi": score_hi,
    }
    out |= feedback_effect(group)
    latency = total_latency(group)
    out |= {
        "latency_p50_s": float(latency.quantile(0.5)),
        "latency_p95_s": float(latency.quantile(0.95)),
        "s_per_token": seconds_per_token(group),
        "cost_s": _mean(group["cost_s"]),
        "overhead_vs_greedy": math.nan,  # filled across groups by overhead_vs_reference
        "new_tokens_mean": float(group["new_tokens"].mean()),
        "new_tokens_total": int(group["new_tokens"].sum()),
        "format_failure_rate": 1.0 - float(group["format_ok"].astype(bool).mean()),
    }
    out |= {name: _mean(group[name]) for name in (*STAT_COLUMNS, *SOFT_COLUMNS)}
    out |= think_end_rates(group)
    return out


def think_end_rates(group: pd.DataFrame) -> dict:
    """Shares of a soft decoder's records whose thinking ended by the marker, the budget or
    Cold Stop (the rest never stopped thinking); NaN for decoders that do not think."""
    if group["think_steps"].isna().all():
        return {column: math.nan for column, _ in THINK_ENDS}
    return {column: float((group["think_end"] == value).mean()) for column, value in THINK_ENDS}


def feedback_effect(group: pd.DataFrame) -> dict:
    """Stage-1 accuracy and, as fractions of all records, wrong->right fixes and right->wrong breaks.

    net_gain = fix_rate - break_rate = accuracy - stage1_accuracy. NaN for decoders without a first attempt.
    """
    first = group["stage1_correct"]
    if first.isna().all():
        return {"stage1_accuracy": math.nan, "fix_rate": math.nan, "break_rate": math.nan, "net_gain": math.nan}
    known = group[first.notna()]
    before = known["stage1_correct"].astype(bool)
    after = known["correct"].astype(bool)
    fix, brk = float((~before & after).mean()), float((before & ~after).mean())
    return {"stage1_accuracy": float(before.mean()), "fix_rate": fix, "break_rate": brk, "net_gain": fix - brk}


def total_latency(group: pd.DataFrame) -> pd.Series:
    """Seconds until each answer: its final decoding (prefill + decode) plus any earlier stages."""
    return group["latency_s"].astype(float) + group["stage_s"].fillna(0.0).astype(float)


def seconds_per_token(group: pd.DataFrame) -> float:
    """Decode wall time per generated token of the final decoding, pooled over the group."""
    tokens = float(group["new_tokens"].sum())
    return float(group["decode_s"].sum()) / tokens if tokens else math.nan


def overhead_vs_reference(table: pd.DataFrame, reference: str | None) -> pd.Series:
    """Each group's mean cost per answer over the reference decoder's on the same (model, env).

    The reference is the group labelled `reference` (by decoder label) in the same sweep;
    NaN where there is none.
    """
    if reference is None:
        return pd.Series(math.nan, index=table.index, dtype=float)
    ref = (table[table["decoder_label"] == reference].drop_duplicates(["model", "env_label"])
           .set_index(["model", "env_label"])["cost_s"])
    ratios = []
    for _, row in table.iterrows():
        base = ref.get((row["model"], row["env_label"]), math.nan)
        ratios.append(row["cost_s"] / base if base and not math.isnan(base) else math.nan)
    return pd.Series(ratios, index=table.index, dtype=float)


def _side(row) -> tuple:
    """A group's identity with missing values made comparable (NaN != NaN)."""
    return tuple(None if pd.isna(row[c]) else row[c] for c in GROUP_COLUMNS)


def _variant_label(variant) -> str | None:
    """A record's variant on an axis other than lambda ("n=4"); None for none or a lambda."""
    if not isinstance(variant, dict) or not variant or "lambda" in variant:
        return None
    return variant_key(variant)


def _mean(series: pd.Series) -> float:
    values = pd.to_numeric(series, errors="coerce")
    return float(values.mean()) if values.notna().any() else math.nan
