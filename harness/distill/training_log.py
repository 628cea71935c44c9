"""The training log of a distillation as a CSV table and a small loss curve.

Both are read from the Trainer's `log_history`, which checkpoints carry, so a resumed
distillation's log covers every step, before the interrupt too.
"""

from __future__ import annotations

import csv
import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.analysis.figure_bytes import png_bytes

FIRST_COLUMNS = ("step", "epoch", "loss", "learning_rate", "grad_norm")


def step_rows(log_history: list[dict]) -> list[dict]:
    """One row per logged optimizer step (entries with a loss), in step order, last entry per step winning."""
    by_step: dict[int, dict] = {}
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            by_step[int(entry["step"])] = dict(entry)
    return [by_step[step] for step in sorted(by_step)]


def log_csv(rows: list[dict]) -> str:
    """The rows as CSV: step, epoch, loss, learning_rate, grad_norm, then every other logged value."""
    extra = sorted({key for row in rows for key in row} - set(FIRST_COLUMNS))
    columns = [c for c in FIRST_COLUMNS if any(c in row for row in rows)] + extra
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def curve_png(rows: list[dict], title: str) -> bytes:
    """Loss against optimizer step (and, on a second axis, the cross-entropy under the teacher or soft
    SFT's guidance alpha when logged), as PNG bytes."""
    figure = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    steps = [row["step"] for row in rows]
    marker = "." if len(rows) < 50 else None
    ax.plot(steps, [row["loss"] for row in rows], marker=marker, color="C0")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss", color="C0")
    for key, label in (("teacher_ce", "cross-entropy under the teacher"), ("guidance_alpha", "guidance alpha")):
        if any(key in row for row in rows):
            # Its own axis: the teacher's cross-entropy carries its entropy, a far larger near-constant
            # offset; soft SFT's alpha is a weight in [0, 1].
            right = ax.twinx()
            right.plot(steps, [row.get(key, math.nan) for row in rows], marker=marker, color="C1", linestyle="--")
            right.set_ylabel(label, color="C1")
            break
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return png_bytes(figure)
