"""What soft-thinking decoders (soft, Gumbel) add to reports: their per-record thinking
statistics and why thinking ended as summary columns, and a figure of how many tokens
each soft step mixed."""

from __future__ import annotations

import math

import pandas as pd

from harness.methods.contributions import Contributions, ReportFigure, SummaryColumns

# Per-record means (decoders.thinking.summarize_thinking), averaged per group.
THINKING_COLUMNS = ("think_steps", "entropy_mean", "weights_entropy_mean", "effective_tokens_mean",
                    "top1_weight_mean")
# Why thinking ended, as the share of a group's records: (summary column, record value).
THINK_ENDS = (("marker_end_rate", "marker"), ("budget_end_rate", "budget"), ("cold_stop_rate", "cold_stop"),
              ("eos_end_rate", "eos"))


def thinking_means(group: pd.DataFrame) -> dict:
    from harness.analysis.metrics import mean_of

    return {column: mean_of(group[column]) for column in THINKING_COLUMNS}


def think_end_rates(group: pd.DataFrame) -> dict:
    """Shares of the group's records whose thinking ended by the marker, the budget, Cold Stop or
    EOS (the rest never stopped thinking); NaN when no record thought."""
    if group["think_steps"].isna().all():
        return {column: math.nan for column, _ in THINK_ENDS}
    return {column: float((group["think_end"] == value).mean()) for column, value in THINK_ENDS}


def soft_figure(summary: pd.DataFrame, records: pd.DataFrame, reference: str | None = None) -> str | None:
    from harness.analysis.plots import group_label, panels, png, series

    shown = [(t, p[p["effective_tokens_mean"].notna()]) for t, p in series(summary)
             if p["effective_tokens_mean"].notna().any()]
    if not shown:
        return None
    fig, axes = panels(len(shown), cols=1, width=9)
    for ax, (title, panel) in zip(axes, shown, strict=False):
        labels = []
        for _, row in panel.iterrows():
            ended = row["budget_end_rate"] + row["cold_stop_rate"] + row["eos_end_rate"]
            labels.append(f"{group_label(row)}\n{ended:.0%} forced")
        ax.bar(range(len(panel)), panel["effective_tokens_mean"], color="tab:blue")
        ax.set_ylabel("effective tokens per soft step")
        right = ax.twinx()
        right.plot(range(len(panel)), panel["top1_weight_mean"], "o", color="tab:orange")
        right.set(ylabel="top-1 weight", ylim=(0, 1.05))
        ax.set_xticks(range(len(panel)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(title)
    fig.tight_layout()
    return png(fig)


NUMBER = (int, float)
THINKING = Contributions(
    record_fields={"think_steps": int, "think_end": str, "think_end_step": int,
                   **{column: NUMBER for column in THINKING_COLUMNS[1:]}},
    columns=(SummaryColumns(THINKING_COLUMNS, thinking_means, reads=(*THINKING_COLUMNS, "think_end")),
             SummaryColumns(tuple(c for c, _ in THINK_ENDS), think_end_rates, reads=("think_steps", "think_end"))),
    figures=(ReportFigure(
        "Soft thinking", soft_figure,
        "Soft decoders: mean effective number of mixed tokens per thinking step (bars) and mean top-1 weight "
        "(dots, right axis); the label gives the share of answers whose marker was forced (budget, Cold Stop "
        "or EOS)."),),
)
