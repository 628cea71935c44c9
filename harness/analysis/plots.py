"""The report's plotting kit, shared by its own figures and those methods contribute
(`harness.methods.contributions.ReportFigure`): panels per (model, env), lines along an axis,
group labels, and a figure as inline PNG text."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def series(summary: pd.DataFrame):
    """(panel title, panel rows) per (model, env), and per run in a report over several runs."""
    by_run = "run" in summary
    for key, panel in summary.groupby(["run", "model", "env_label"] if by_run else ["model", "env_label"],
                                      sort=not by_run):
        yield panel_title(*key), panel


def panel_title(*key) -> str:
    """"env (model)", or "run: env (model)" when the key starts with a run."""
    *run, model, env = key
    return f"{run[0] + ': ' if run else ''}{env} ({Path(str(model)).name})"


def axis_lines(panel: pd.DataFrame, column: str) -> list[tuple[str, pd.DataFrame]]:
    """(line name, rows sorted by `column`) for the groups with a value in the axis column `column`
    (ReDuMix's lambda): one line per decoder label and value of the other axis columns; the
    value is in the rows' `x` column."""
    rows = panel[panel[column].notna()]
    others = [c for c in _column_axes() if c != column and c in rows]
    keys = ["decoder_label", *(rows[c].fillna("") for c in others)]
    out = []
    for key, line in rows.groupby(keys, sort=True):
        label, *rest = key if isinstance(key, tuple) else (key,)
        shown = " ".join(str(v) for v in rest if v != "")
        name = f"{label} [{shown}]" if shown else label
        out.append((name, line.assign(x=line[column].astype(float)).sort_values("x")))
    return out


def panels(count: int, cols: int = 2, width: float = 5.2, height: float = 3.6):
    """A figure of `count` panels, `cols` to a row (unused ones hidden): (figure, axes list)."""
    cols = min(cols, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, list(axes.flat)


def group_label(row) -> str:
    """A summary group for people: its decoder label, its axis values ("lam=0.5", "binary") and
    any other variant ("n=4")."""
    parts = [str(row["decoder_label"])]
    for axis in _column_axis_objects():
        value = row.get(axis.record)
        if value is not None and pd.notna(value):
            parts.append(f"{axis.param}={float(value):g}" if axis.kind in (int, float) else str(value))
    if pd.notna(row.get("variant")):
        parts.append(str(row["variant"]))
    return " ".join(parts)


def png(fig) -> str:
    """The figure as base64 PNG text (for an inline <img>); closes it."""
    buffer = io.BytesIO()
    if not fig.get_tight_layout():
        fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _column_axes() -> list[str]:
    from harness.methods.registry import column_axes

    return column_axes()


def _column_axis_objects():
    from harness.methods.registry import registered_axes

    columns = set(_column_axes())
    seen, out = set(), []
    for axis in registered_axes():
        if axis.record in columns and axis.record not in seen:
            seen.add(axis.record)
            out.append(axis)
    return out
