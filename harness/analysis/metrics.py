"""Per-group metrics of a results table: accuracy with confidence intervals, latency and
cost against the reference, tokens, format failures, paired comparisons, and the columns
each method contributes for its own groups (ReDuMix's fixes and breaks, the mixtures'
divergences, soft thinking's statistics: `harness.methods.contributions`).

A group is one (model, env, decoder, its axis values, variant); seeds and problems are
pooled. The axes with columns of their own (ReDuMix's lambda and feedback policy) come from
the registered methods' declarations; any other variant is named in `variant` (e.g.
self-consistency's "n=4"). Everything here is a pure function of the records.

A contributed column named with "{k}" (self-consistency's "pass@{k}") stands for one column per
k its groups report, `pass@1`, `pass@2`, ..., in increasing k where the template is declared;
`summarize(ks=...)` (`redumix report --ks`) names the k (`asked_ks`), else each method picks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from contextvars import ContextVar

import numpy as np
import pandas as pd

from harness.analysis.paired import axis_columns, compare_to_reference, side_columns
from harness.analysis.thinking_columns import THINKING_COLUMNS, THINKING_FIELDS, thinking_metrics
from harness.methods.base import variant_key
from harness.methods.contributions import Contributions, SummaryColumns
from harness.methods.registry import column_axes, contributions_of

Z95 = 1.959963984540054  # two-sided 95% normal quantile
# From the paired comparison with the reference (harness.analysis.paired), per group.
PAIRED_COLUMNS = ["accuracy_diff", "accuracy_diff_lo", "accuracy_diff_hi", "wins", "losses", "mcnemar_p"]
# Every group's own metrics, in summary.csv's order.
METRIC_COLUMNS = [
    "decoder", "n", "correct", "accuracy", "accuracy_lo", "accuracy_hi", "mean_score", "score_lo", "score_hi",
    "latency_p50_s", "latency_p95_s", "s_per_token", "cost_s", "overhead_vs_greedy",
    "new_tokens_mean", "new_tokens_total", "format_failure_rate",
    *THINKING_COLUMNS,
]


# The k `summarize` asks "{k}" column families for, while it computes the groups' columns.
_ASKED_KS: ContextVar[tuple[int, ...] | None] = ContextVar("asked_ks", default=None)


def asked_ks() -> tuple[int, ...] | None:
    """The k a report asks "{k}" columns for (`redumix report --ks`), in increasing order; None:
    the method's own choice. Read by contributed `compute` functions while `summarize` runs."""
    return _ASKED_KS.get()


def parse_ks(text: str) -> tuple[int, ...]:
    """`--ks 1,2,4,8` as (1, 2, 4, 8): whole numbers >= 1, each once, in increasing order."""
    items = [item.strip() for item in str(text).split(",")]
    if not all(item.isascii() and item.isdigit() and int(item) >= 1 for item in items):
        raise ValueError(f"--ks (={text!r}) must be whole numbers >= 1 separated by commas, e.g. --ks 1,2,4,8")
    ks = [int(item) for item in items]
    if len(set(ks)) != len(ks):
        raise ValueError(f"--ks (={text!r}) repeats a value; give each k once, e.g. --ks 1,2,4,8")
    return tuple(sorted(ks))


def contributed() -> Contributions:
    """Everything the registered decoders and methods contribute, in name order."""
    from decoders.registry import available_decoders

    total = Contributions()
    for name in available_decoders():
        total = total + contributions_of(name)
    return total


def summary_columns(present: Iterable[str] = ()) -> list[str]:
    """Column order of `summarize`'s table (and of summary.csv): the group, every group's metrics,
    the methods' own columns, the paired comparison. A "{k}" template stands for its columns
    among `present` (a table's columns), in increasing k."""
    present = list(present)
    own = [name for block in contributed().columns for c in block.columns for name in _expanded(c, present)]
    # A method may declare one of every group's columns (soft thinking's budget_end_rate): listed once.
    return list(dict.fromkeys([*side_columns(), *METRIC_COLUMNS, *own, *PAIRED_COLUMNS]))


def _family(template: str) -> re.Pattern:
    """The column names a "{k}" template stands for ("pass@{k}": pass@1, pass@2, ...)."""
    return re.compile(r"(\d+)".join(re.escape(part) for part in template.split("{k}")))


def _expanded(column: str, present: list[str]) -> list[str]:
    if "{k}" not in column:
        return [column]
    family = _family(column)
    ks = sorted({int(m.group(1)) for name in present if (m := family.fullmatch(name))})
    return [column.replace("{k}", str(k)) for k in ks]


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
    """Fill the sweep columns for records from a plain `redumix run` folder, and every group column
    and contributed field a record lacks, so one report reads every folder."""
    df = records.copy()
    if "env_label" not in df:
        df["env_label"] = df["env"]
    if "decoder_label" not in df:
        df["decoder_label"] = df["decoder"]
    extra = contributed()
    reads = [field for block in extra.columns for field in block.reads]
    for name in ("cost_s", *THINKING_FIELDS, *column_axes(), *reads):
        if name not in df:
            df[name] = None
    df["variant"] = [_variant_label(v) for v in (df["variant"] if "variant" in df else [None] * len(df))]
    if "stage_s" not in df:
        present = [c for c in extra.stage_fields if c in df]
        df["stage_s"] = df[present].fillna(0.0).sum(axis=1) if present else 0.0
    if "format_ok" not in df:
        df["format_ok"] = True
    return df


def summarize(records: pd.DataFrame, seed: int = 0, reference: str | None = None,
              comparisons: pd.DataFrame | None = None, ks: Iterable[int] | None = None) -> pd.DataFrame:
    """One row per group with every metric (see `summary_columns`); `seed` drives the bootstrap.

    `reference`: the decoder label that "cost against" divides by (overhead_vs_greedy keeps its
    name; the reference is greedy unless the sweep says otherwise); None leaves it empty.
    `comparisons`: `paired.compare_to_reference` of these records, when the caller has it already.
    `ks`: the k of "{k}" columns (pass@k, maj@k); None: each method's default.
    """
    df = normalize(records)
    groups = side_columns()
    rows = []
    token = _ASKED_KS.set(None if ks is None else tuple(sorted(set(ks))))
    try:
        for key, group in df.groupby(groups, dropna=False, sort=True):
            rows.append(dict(zip(groups, key, strict=True)) | group_metrics(group, seed=seed))
    finally:
        _ASKED_KS.reset(token)
    table = pd.DataFrame(rows, columns=summary_columns(c for row in rows for c in row))
    table["overhead_vs_greedy"] = overhead_vs_reference(table, reference)
    if comparisons is None:
        comparisons = compare_to_reference(df, reference, seed=seed)
    paired = {_side(row, groups): row for _, row in comparisons.iterrows()}
    for column in PAIRED_COLUMNS:
        table[column] = [paired[_side(row, groups)][column] if _side(row, groups) in paired else math.nan
                         for _, row in table.iterrows()]
    for column in axis_columns():
        table[column] = table[column].astype(object).where(table[column].notna(), None)
    return table


def group_metrics(group: pd.DataFrame, seed: int = 0) -> dict:
    """Every metric of one group's records (already `normalize`d): its own, then the columns its
    decoder contributes (which take the place of its own of the same name)."""
    n = len(group)
    correct = int(group["correct"].astype(bool).sum())
    lo, hi = wilson_interval(correct, n)
    score_lo, score_hi = bootstrap_mean_interval(group["score"].astype(float), seed=seed)
    latency = total_latency(group)
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
        "latency_p50_s": float(latency.quantile(0.5)),
        "latency_p95_s": float(latency.quantile(0.95)),
        "s_per_token": seconds_per_token(group),
        "cost_s": mean_of(group["cost_s"]),
        "overhead_vs_greedy": math.nan,  # filled across groups by overhead_vs_reference
        "new_tokens_mean": float(group["new_tokens"].mean()),
        "new_tokens_total": int(group["new_tokens"].sum()),
        "format_failure_rate": 1.0 - float(group["format_ok"].astype(bool).mean()),
        **thinking_metrics(group),
    }
    for block in contributions_of(str(group["decoder"].iloc[0])).columns:
        out |= _contributed_columns(block, group)
    return out


def _contributed_columns(block: SummaryColumns, group: pd.DataFrame) -> dict:
    values = block.compute(group)
    fixed = [c for c in block.columns if "{k}" not in c]
    families = [_family(c) for c in block.columns if "{k}" in c]
    unknown = {c for c in values if c not in fixed and not any(f.fullmatch(c) for f in families)}
    if unknown:
        raise ValueError(f"summary columns {sorted(unknown)} are not among the declared {list(block.columns)}")
    return {column: values.get(column, math.nan) for column in fixed} | \
        {column: value for column, value in values.items() if column not in fixed}


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


def _side(row, columns: list[str]) -> tuple:
    """A group's identity with missing values made comparable (NaN != NaN)."""
    return tuple(None if pd.isna(row[c]) else row[c] for c in columns)


def _variant_label(variant) -> str | None:
    """A record's variant on an axis without a column of its own ("n=4"); None for none."""
    if not isinstance(variant, dict) or not variant or set(variant) & set(column_axes()):
        return None
    return variant_key(variant)


def mean_of(series: pd.Series) -> float:
    """The mean of a column's numbers (NaN where it has none); for contributed columns too."""
    values = pd.to_numeric(series, errors="coerce")
    return float(values.mean()) if values.notna().any() else math.nan
