"""What every group of a thinking model's records shows in summary.csv, whatever its method: how
long it thought, how often its thinking never closed, and how often a thinking budget
(`--think-budget`) ended it. Groups without thinking show NaN."""

from __future__ import annotations

import math

import pandas as pd

THINKING_COLUMNS = ("thinking_tokens_mean", "unclosed_thinking_rate", "budget_end_rate")
# The record fields they are read from (`harness.runs.records`).
THINKING_FIELDS = ("thinking_tokens", "thinking_closed", "think_end")


def thinking_metrics(group: pd.DataFrame) -> dict:
    """The THINKING_COLUMNS of one group's records (their THINKING_FIELDS may be missing or None).

    `thinking_tokens_mean` and `unclosed_thinking_rate` are over the records with a thinking;
    `budget_end_rate` is the share of all the group's records whose thinking the budget ended (NaN
    when no record thought; soft decoders count their own, `decoders.thinking_report`).
    """
    fields = {name: group[name] if name in group else pd.Series(None, index=group.index, dtype=object)
              for name in THINKING_FIELDS}
    thought = fields["thinking_tokens"].notna()
    out = dict.fromkeys(THINKING_COLUMNS, math.nan)
    if thought.any():
        out["thinking_tokens_mean"] = float(fields["thinking_tokens"][thought].astype(float).mean())
        out["unclosed_thinking_rate"] = float((fields["thinking_closed"][thought] == False).mean())  # noqa: E712
    if thought.any() or fields["think_end"].notna().any():
        out["budget_end_rate"] = float((fields["think_end"] == "budget").mean())
    return out
