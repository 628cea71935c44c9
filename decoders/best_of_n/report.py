"""What best-of-N adds to records and reports: every sample's answer, grade and
self-certainty and the chosen index; the oracle pass@N beside the chosen answer's accuracy;
accuracy against N, with self-consistency's beside it where the folder has both; and pass@k,
maj@k and accuracy against k (`decoders.sampled_answers`, shared with self-consistency)."""

from __future__ import annotations

import math

import pandas as pd

from decoders.sampled_answers import SAMPLED_ANSWERS
from harness.methods.contributions import Contributions, ReportFigure, SummaryColumns

# Methods whose answers are one of N samples, drawn on the figure's N axis.
DRAWN_BESIDE = ("best_of_n", "self_consistency")


def oracle(group: pd.DataFrame) -> dict:
    """pass@N: the share of answers where any of the N samples was right (what a perfect
    selector would score); and the group's N."""
    hit = group["pass_at_n"].dropna()
    n = pd.to_numeric(group["n_samples"], errors="coerce").dropna()
    return {"pass_at_n": float(hit.astype(bool).mean()) if len(hit) else math.nan,
            "n_samples": float(n.mean()) if len(n) else math.nan}


def accuracy_vs_n(summary: pd.DataFrame, records: pd.DataFrame, reference: str | None = None) -> str | None:
    """Accuracy of each best-of-N (and self-consistency) entry against its N, with best-of-N's
    pass@N dashed above it."""
    from harness.analysis.plots import panels, png, series

    sizes = _sample_counts(records)
    shown = []
    for title, panel in series(summary):
        panel = panel[panel["decoder"].isin(DRAWN_BESIDE)]
        panel = panel.assign(N=[sizes.get(_group(row)) for _, row in panel.iterrows()]).dropna(subset=["N"])
        if (panel["decoder"] == "best_of_n").any():
            shown.append((title, panel))
    if not shown:
        return None
    fig, axes = panels(len(shown))
    for ax, (title, panel) in zip(axes, shown, strict=False):
        for label, line in panel.groupby("decoder_label", sort=True):
            line = line.sort_values("N")
            (drawn,) = ax.plot(line["N"], line["accuracy"], marker="o", label=f"{label}")
            ax.fill_between(line["N"], line["accuracy_lo"], line["accuracy_hi"], alpha=0.15,
                            color=drawn.get_color())
            if line["pass_at_n"].notna().any():
                ax.plot(line["N"], line["pass_at_n"], "--", color=drawn.get_color(), label=f"{label} pass@N")
        ax.set(title=title, xlabel="N (samples per problem)", ylabel="accuracy", ylim=(-0.02, 1.02))
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    return png(fig)


def _group(row) -> tuple:
    return (row["model"], row["env_label"], row["decoder_label"], None if pd.isna(row["variant"]) else row["variant"])


def _sample_counts(records: pd.DataFrame) -> dict[tuple, float]:
    """N of each (model, env, decoder label, variant) from its records' `n_samples`."""
    if "n_samples" not in records:
        return {}
    rows = records[records["decoder"].isin(DRAWN_BESIDE)]
    out = {}
    for key, group in rows.groupby(["model", "env_label", "decoder_label", rows["variant"].fillna("")], sort=False):
        model, env, label, variant = key
        out[(model, env, label, variant or None)] = float(pd.to_numeric(group["n_samples"]).mean())
    return out


NUMBER = (int, float)
BEST_OF_N = Contributions(
    record_fields={
        "n_samples": int, "selection": str, "chosen_index": int, "sample_answers": list, "sample_correct": list,
        "sample_self_certainty": list, "sample_logprobs": list, "sample_completions": list,
        "sample_new_tokens": list, "pass_at_n": bool,
    },
    columns=(SummaryColumns(("pass_at_n", "n_samples"), oracle, reads=("pass_at_n", "n_samples"),
                            terminal=("pass_at_n",)),),
    figures=(ReportFigure(
        "Accuracy vs N", accuracy_vs_n,
        "Best-of-N by self-certainty: accuracy of the chosen answer (95% Wilson interval) against the number of "
        "samples N, with the oracle pass@N (any of the N right) dashed; self-consistency's majority vote over the "
        "same samples beside it when the folder has it."),),
    graded_fields=("sample_correct", "pass_at_n"),
) + SAMPLED_ANSWERS
