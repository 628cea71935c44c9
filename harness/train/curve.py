"""The training curve of a GRPO run: mean reward per optimizer step (with its spread across the
step's completions), and the KL to the reference model on a second axis when it was computed."""

from __future__ import annotations

import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.analysis.figure_bytes import png_bytes


def reward_curve_png(rows: list[dict], title: str) -> bytes:
    """PNG bytes of reward (and KL) against optimizer step, from `training_log.step_rows` rows."""
    figure = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    rows = [row for row in rows if row.get("reward") is not None]
    steps = [row["step"] for row in rows]
    reward = [row["reward"] for row in rows]
    spread = [row.get("reward_std") or 0.0 for row in rows]
    marker = "." if len(rows) < 50 else None
    ax.plot(steps, reward, marker=marker, color="C0", label="mean reward")
    ax.fill_between(steps, [r - s for r, s in zip(reward, spread, strict=True)],
                    [r + s for r, s in zip(reward, spread, strict=True)], color="C0", alpha=0.15, linewidth=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward (mean +- std over completions)", color="C0")
    if any(row.get("kl") is not None for row in rows):
        right = ax.twinx()  # KL is on another scale, near 0 at first
        right.plot(steps, [row.get("kl", math.nan) for row in rows], marker=marker, color="C1", linestyle="--")
        right.set_ylabel("KL to the reference", color="C1")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return png_bytes(figure)
