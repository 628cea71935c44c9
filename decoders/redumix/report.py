"""What ReDuMix adds to records and reports: its stage texts and times as record fields, the
feedback loop's effect against the first attempt (fixes and breaks) as summary columns and a
figure, and the first attempts' accuracy under `redumix run`'s result."""

from __future__ import annotations

import math

import pandas as pd

from decoders.lambda_mixtures import MIXTURE
from harness.methods.contributions import Contributions, ReportFigure, SummaryColumns

STAGE_FIELDS = ("stage1_s", "feedback_s", "reflection_s", "compress_s")
FEEDBACK_EFFECT = ("stage1_accuracy", "fix_rate", "break_rate", "net_gain")


def feedback_effect(group: pd.DataFrame) -> dict:
    """Stage-1 accuracy and, as fractions of all records, wrong->right fixes and right->wrong breaks.

    net_gain = fix_rate - break_rate = accuracy - stage1_accuracy. NaN without first attempts.
    """
    first = group["stage1_correct"]
    if first.isna().all():
        return {column: math.nan for column in FEEDBACK_EFFECT}
    known = group[first.notna()]
    before = known["stage1_correct"].astype(bool)
    after = known["correct"].astype(bool)
    fix, brk = float((~before & after).mean()), float((before & ~after).mean())
    return {"stage1_accuracy": float(before.mean()), "fix_rate": fix, "break_rate": brk, "net_gain": fix - brk}


def fix_break_figure(summary: pd.DataFrame, records: pd.DataFrame, reference: str | None = None) -> str | None:
    """Fix and break rates along lambda, per ReDuMix entry and feedback policy."""
    from harness.analysis.plots import axis_lines, panels, png, series

    shown = [(t, p) for t, p in series(summary) if (p["lambda"].notna() & p["fix_rate"].notna()).any()]
    if not shown:
        return None
    fig, axes = panels(len(shown))
    for ax, (title, panel) in zip(axes, shown, strict=False):
        for name, line in axis_lines(panel, "lambda"):
            if line["fix_rate"].isna().all():
                continue
            (drawn,) = ax.plot(line["x"], line["fix_rate"], "-o", label=f"fix {name}")
            ax.plot(line["x"], line["break_rate"], "--x", color=drawn.get_color(), label=f"break {name}")
        ax.set(title=title, xlabel="lambda", ylabel="fraction of answers", ylim=(-0.02, 1.02))
        ax.legend(fontsize=7)
    return png(fig)


def first_attempts_line(records: list[dict]) -> list[str]:
    """"first attempts (stage 1): 3/8 = 0.375", counting each problem once."""
    first = {r["problem_id"]: r["stage1_correct"] for r in records if r.get("stage1_correct") is not None}
    if not first:
        return []
    right = sum(first.values())
    return [f"first attempts (stage 1): {right}/{len(first)} = {right / len(first):.3f}"]


NUMBER = (int, float)
REDUMIX = MIXTURE + Contributions(
    record_fields={
        "stage1_completion": str, "stage1_answer": str, "stage1_correct": bool, "feedback": str, "reflection": str,
        "contexts": list, "context_tokens": list, "compressed": bool, "tokens_cut": int, "stage1_summary": str,
        "stage1_thinking_summary": str,
        "stage1_reused": bool, "mix_s": NUMBER, **{field: NUMBER for field in STAGE_FIELDS},
    },
    columns=(SummaryColumns(FEEDBACK_EFFECT, feedback_effect, reads=("stage1_correct",),
                            terminal=("fix_rate", "break_rate")),),
    figures=(ReportFigure("Fixes and breaks vs lambda", fix_break_figure,
                          "Fraction of answers turned wrong->right (fix) and right->wrong (break) against the "
                          "first attempt."),),
    graded_fields=("stage1_correct",),
    shown_fields=(("stage1_answer", "stage-1 answer"), ("feedback", "feedback"), ("reflection", "reflection")),
    stage_fields=STAGE_FIELDS,
    run_lines=first_attempts_line,
)
