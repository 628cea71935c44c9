"""What the lambda mixtures (ReDuMix: two contexts; DeRa: two models) share above their per-step
rule: the lambda grid axis, and in reports the per-step divergences between the two
distributions and their mixture (record fields and summary columns) and accuracy and
divergences along lambda (figures)."""

from __future__ import annotations

import pandas as pd

from harness.methods.axes import Axis
from harness.methods.contributions import Contributions, ReportFigure, SummaryColumns
from harness.methods.mixture_stats import STAT_NAMES

# The mixing weight, a variant (a method decodes all its lambdas together); records key it by its
# bare value ("0.5"), as they always have.
LAMBDA = Axis("lam", "lambda", sweep_key="lambdas", kind=float, column=True, bare_key=True, example="[0, 0.5, 1]")

# Per-record means of the per-step statistics (harness.methods.mixture_stats), averaged per group.
DIVERGENCE_COLUMNS = ("kl_mix_p1", "kl_mix_p2", "kl_p1_p2", "js_p1_p2", "entropy_mix", "top1_agree")


def divergences(group: pd.DataFrame) -> dict:
    """The group's mean of each record's mean per-step statistic."""
    from harness.analysis.metrics import mean_of

    return {column: mean_of(group[column]) for column in DIVERGENCE_COLUMNS}


def accuracy_figure(summary: pd.DataFrame, records: pd.DataFrame, reference: str | None = None) -> str:
    """Accuracy along lambda, one line per mixing decoder (and policy); every other group a horizontal line."""
    from harness.analysis.plots import axis_lines, group_label, panels, png, series

    shown = list(series(summary))
    fig, axes = panels(len(shown))
    for ax, (title, panel) in zip(axes, shown, strict=False):
        for name, line in axis_lines(panel, "lambda"):
            ax.plot(line["x"], line["accuracy"], marker="o", label=name)
            ax.fill_between(line["x"], line["accuracy_lo"], line["accuracy_hi"], alpha=0.2)
        for _, row in panel[panel["lambda"].isna()].iterrows():
            is_reference = row["decoder_label"] == reference
            ax.axhline(row["accuracy"], linestyle="--" if is_reference else ":",
                       color="black" if is_reference else None,
                       label=f"{group_label(row)} ({row['n']} answers)")
            ax.axhspan(row["accuracy_lo"], row["accuracy_hi"], color="grey", alpha=0.08)
        ax.set(title=title, xlabel="lambda (weight of the original context)", ylabel="accuracy",
               ylim=(-0.02, 1.02), xlim=(-0.05, 1.05))
        ax.legend(fontsize=7)
    return png(fig)


def divergence_figure(summary: pd.DataFrame, records: pd.DataFrame, reference: str | None = None) -> str | None:
    """KL(P_mix || P1), KL(P_mix || P2) and JS(P1, P2) along lambda, per mixing decoder."""
    from harness.analysis.plots import axis_lines, panels, png, series

    stats = [("kl_mix_p1", "KL(P_mix || P1)"), ("kl_mix_p2", "KL(P_mix || P2)"), ("js_p1_p2", "JS(P1, P2)")]
    shown = [(t, p) for t, p in series(summary) if p["lambda"].notna().any() and p["kl_mix_p1"].notna().any()]
    if not shown:
        return None
    fig, axes = panels(len(shown))
    for ax, (title, panel) in zip(axes, shown, strict=False):
        for name, line in axis_lines(panel, "lambda"):
            for (column, label), style in zip(stats, ("-o", "--s", ":^"), strict=True):
                ax.plot(line["x"], line[column], style, label=f"{label} {name}")
        ax.set(title=title, xlabel="lambda", ylabel="nats per step")
        ax.legend(fontsize=7)
    return png(fig)


ACCURACY_VS_LAMBDA = ReportFigure(
    "Accuracy vs lambda", accuracy_figure,
    "Strict accuracy with 95% Wilson intervals; decoders without lambda are horizontal lines "
    "(the reference, {reference}, dashed).")
DIVERGENCES_VS_LAMBDA = ReportFigure(
    "Divergences vs lambda", divergence_figure,
    "Mean per-step KL(P_mix||P1), KL(P_mix||P2) and JS(P1, P2) of the mixing decoders (ReDuMix: P1 the "
    "original context, P2 the reflective one; DeRa: P1 the reference model, P2 the aligned one, so "
    "KL(P_mix||P1) is how far each lambda moves from the reference).")

NUMBER = (int, float)
MIXTURE = Contributions(
    record_fields={name: NUMBER for name in STAT_NAMES},
    columns=(SummaryColumns(DIVERGENCE_COLUMNS, divergences, reads=DIVERGENCE_COLUMNS),),
    figures=(ACCURACY_VS_LAMBDA, DIVERGENCES_VS_LAMBDA),
)
