"""Reward curves of several GRPO runs in one figure (`redumix train compare RUN_DIR RUN_DIR --out FIG`).

Each run is a folder `redumix train grpo` wrote: its `training_log.csv`, or, for a run still
training or interrupted, the log history of its newest checkpoint. The figure has one panel
for the total reward and one for each reward the runs logged (`rewards/<name>/mean`), every
run a line on each, against the optimizer step.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.analysis.figure_bytes import png_bytes
from harness.distill.training_log import step_rows

LOG_FILE, CONFIG_FILE, CHECKPOINTS = "training_log.csv", "train_config.json", "checkpoints"
REWARD_PREFIX, REWARD_SUFFIX = "rewards/", "/mean"


@dataclass(frozen=True)
class RunLog:
    label: str  # how the figure's legend names the run
    rows: list[dict]  # one per logged optimizer step: {"step": int, "reward": float, ...}
    finished: bool  # False: read from a checkpoint of a run still training or interrupted


def read_run_log(folder: str | Path) -> RunLog:
    """The per-step log of the GRPO run in `folder`.

    Raises:
        ValueError: the folder holds neither a training log nor a checkpoint (the message says why).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"RUN_DIR {folder} is not a folder; give a folder `redumix train grpo` wrote")
    log = folder / LOG_FILE
    if log.is_file():
        rows, finished = [_numbers(row) for row in csv.DictReader(io.StringIO(log.read_text()))], True
    else:
        states = sorted((folder / CHECKPOINTS).glob("checkpoint-*/trainer_state.json"), key=_checkpoint_step)
        if not states:
            raise ValueError(f"RUN_DIR {folder} has no {LOG_FILE} and no checkpoint: give the folder of a "
                             f"`redumix train grpo` run (a run writes its log when it ends, a checkpoint every "
                             f"grpo.save_steps)")
        rows, finished = step_rows(json.loads(states[-1].read_text())["log_history"]), False
    rows = [row for row in rows if isinstance(row.get("reward"), float | int)]
    if not rows:
        raise ValueError(f"RUN_DIR {folder}: its log has no reward per step; is it a `redumix train grpo` run "
                         f"(not a distillation)?")
    return RunLog(label=_label(folder), rows=rows, finished=finished)


def reward_components(runs: list[RunLog]) -> list[str]:
    """The names of the rewards any run logged (`rewards/<name>/mean`), in first-seen order."""
    names: list[str] = []
    for run in runs:
        for row in run.rows:
            for key in row:
                if key.startswith(REWARD_PREFIX) and key.endswith(REWARD_SUFFIX):
                    name = key[len(REWARD_PREFIX):-len(REWARD_SUFFIX)]
                    if name not in names:
                        names.append(name)
    return names


def reward_curves_png(runs: list[RunLog], title: str = "GRPO: mean reward per optimizer step") -> bytes:
    """PNG bytes: the total reward and each logged reward against optimizer step, one line per run."""
    if not runs:
        raise ValueError("no runs to compare; give at least one RUN_DIR")
    components = reward_components(runs)
    panels = [("reward", "total reward (weighted sum)")] + [
        (f"{REWARD_PREFIX}{name}{REWARD_SUFFIX}", f"reward `{name}`") for name in components]
    figure = Figure(figsize=(4.2 * len(panels), 3.6), dpi=100)
    FigureCanvasAgg(figure)
    for i, (key, heading) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), i + 1)
        for n, run in enumerate(runs):
            points = [(row["step"], row[key]) for row in run.rows if isinstance(row.get(key), float | int)]
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="." if len(points) < 50 else None, color=f"C{n}",
                    label=run.label + ("" if run.finished else " (unfinished)"))
        ax.set_title(heading, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel("mean over the step's completions")
            ax.legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    return png_bytes(figure)


def compare_runs(folders: list[str | Path], out: str | Path) -> list[RunLog]:
    """Read every run in `folders` and write their reward curves to the PNG `out`."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: the figure is a PNG; give a path ending in .png")
    runs = [read_run_log(folder) for folder in folders]
    labels = [run.label for run in runs]
    if len(set(labels)) < len(labels):  # the same rollouts twice: name them by folder too
        runs = [RunLog(f"{Path(f).name}: {run.label}", run.rows, run.finished) for f, run in zip(folders, runs,
                                                                                                 strict=True)]
    png = reward_curves_png(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    return runs


def _label(folder: Path) -> str:
    """The run's rollouts, from its train_config.json (e.g. "mixture (gumbel)"), else the folder's name."""
    try:
        record = json.loads((folder / CONFIG_FILE).read_text())
        rollout = record["rollout"]
        kind = rollout["kind"] + (f" ({rollout['mix']})" if rollout.get("mix") else "")
        return f"{record.get('name') or folder.name}: {kind}"
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name


def _checkpoint_step(state: Path) -> int:
    number = state.parent.name.rsplit("-", 1)[1]
    return int(number) if number.isdigit() else -1


def _numbers(row: dict) -> dict:
    out: dict = {}
    for key, value in row.items():
        if value in (None, ""):
            continue
        try:
            out[key] = int(value) if key == "step" else float(value)
        except ValueError:
            out[key] = value
    return out
