"""The output folder of a distillation: checked before any model loads, and filled so that it
holds a whole model or none.

OUT ends up a model folder (config.json, weights, tokenizer files) with the
distillation's own files beside it. While training, OUT/checkpoints/ holds the
Trainer's checkpoints and the config they belong to, so the same command resumes an
interrupted distillation and a different one is refused. The model is saved into a
hidden folder inside OUT and its files are moved into place at the end, config.json
last: a folder is a model only once config.json is there, so a crash never leaves
half of one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from harness.console import note
from harness.runs.output_paths import FOLDER_FILES, prepare_folder, write_atomically

MODEL_MARK = "config.json"  # what makes a folder a model for `redumix run --model`
CHECKPOINTS = "checkpoints"
PENDING = "distill_config.json"  # inside OUT/checkpoints: the config the checkpoints belong to
STAGING_PREFIX = ".distill-partial-"
REPLACED_PREFIX = "replaced-"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class OutPlan:
    """What the folder holds and what will be done with it."""

    out: Path
    resume: bool  # checkpoints of this same config are there
    move_aside: list[str]  # entries moved to replaced-<time>/ before training (--force)


def inspect_out(out: str | Path, training: dict, source: Path | None, force: bool,
                base: Path | None = None) -> OutPlan:
    """Decide what to do with `out` for a distillation whose config is `training`; nothing is changed.

    `source`: the pairs' file or folder (None: an environment's problems, no path); `base`: the
    base model's folder, if it is one. Neither may be (inside) `out`, even with `force`.

    Raises:
        ValueError: naming --out, what it holds and the fix.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out (={str(out)!r}) is a file; give a folder (it is created if missing)")
    resolved = out.resolve()
    if source is not None and (resolved == source or resolved in source.parents):
        raise ValueError(f"--out (={str(out)!r}) holds SOURCE ({source}); give an --out folder apart from it")
    if base is not None and (resolved == base or resolved in base.parents):
        raise ValueError(f"--out (={str(out)!r}) holds the base model ({base}); give a new folder for the trained "
                         "model, so the base stays as it is")
    if not out.exists():
        return OutPlan(out=out, resume=False, move_aside=[])
    if any((out / name).exists() for name in FOLDER_FILES if not name.startswith(".")):
        raise ValueError(f"--out (={str(out)!r}) is a run or sweep folder; give a new folder for the model")
    entries = sorted(p.name for p in out.iterdir()
                     if not p.name.startswith((REPLACED_PREFIX, STAGING_PREFIX)))
    if not entries:
        return OutPlan(out=out, resume=False, move_aside=[])
    aside = f"the old files are moved to {out}/{REPLACED_PREFIX}<time>/, not deleted"
    if (out / MODEL_MARK).exists():
        if force:
            return OutPlan(out=out, resume=False, move_aside=entries)
        raise ValueError(f"--out (={str(out)!r}) already holds a model; choose another folder, or pass --force to "
                         f"train afresh ({aside})")
    pending = _read_pending(out)
    if pending is not None and entries == [CHECKPOINTS] and not checkpoint_steps(out):
        return OutPlan(out=out, resume=False, move_aside=[])  # stopped before its first checkpoint: nothing to keep
    if pending is None:
        if force:
            return OutPlan(out=out, resume=False, move_aside=entries)
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ValueError(f"--out (={str(out)!r}) holds files that are not a distillation's ({shown}); choose an "
                         f"empty or new folder, or pass --force ({aside})")
    if force:
        return OutPlan(out=out, resume=False, move_aside=entries)
    changed = sorted(k for k in set(training) | set(pending) if training.get(k) != pending.get(k))
    if changed:
        listing = "; ".join(f"{k}: {pending.get(k)!r} there, {training.get(k)!r} now" for k in changed)
        raise ValueError(f"--out (={str(out)!r}) holds checkpoints of a different distillation ({listing}); re-run "
                         f"with those settings to resume it, choose another --out, or pass --force to start over "
                         f"({aside})")
    return OutPlan(out=out, resume=True, move_aside=[])


def claim_out(plan: OutPlan, training: dict) -> None:
    """Create OUT, move aside what --force replaces, clear our own leftovers, record the config."""
    out = prepare_folder(plan.out, "--out")
    if plan.move_aside:
        backup = out / f"{REPLACED_PREFIX}{datetime.now():%Y%m%d-%H%M%S-%f}"
        backup.mkdir()
        for name in plan.move_aside:
            shutil.move(str(out / name), backup / name)
        note(f"moved {len(plan.move_aside)} old entries of {out} to {backup.name}/")
    for leftover in out.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)  # a save that was interrupted: never a model
    folder = out / CHECKPOINTS
    folder.mkdir(exist_ok=True)
    write_atomically(folder / PENDING, json.dumps(training, indent=2, sort_keys=True) + "\n")


def last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint in OUT/checkpoints (None: start from the base model).

    A newer folder without trainer_state.json (written last) was cut off while saving and is
    removed: it is a partial copy of state the older checkpoint holds.
    """
    for _step, path in checkpoint_steps(out):
        if _complete(path):
            return path
        note(f"{path} was cut off while saving; removing it and resuming from the checkpoint before")
        shutil.rmtree(path, ignore_errors=True)
    return None


def checkpoint_steps(out: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint folder in OUT/checkpoints, newest first."""
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))),
                  reverse=True)


def interrupted_message(out: str | Path) -> str:
    """What an interrupt left in OUT and how to go on."""
    complete = [step for step, path in checkpoint_steps(Path(out)) if _complete(path)]
    if complete:
        return (f"interrupted: the checkpoint of step {complete[0]} is kept in {Path(out) / CHECKPOINTS}; run the same "
                "command to resume from it")
    return "interrupted before the first checkpoint; run the same command to start again"


def staging_folder(out: Path) -> Path:
    """A new hidden folder inside OUT to save the model into (same filesystem: moves are renames)."""
    path = out / f"{STAGING_PREFIX}{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def install(staged: Path, out: Path) -> None:
    """Move every file of `staged` to OUT's top level, config.json last, and remove `staged`."""
    names = sorted(p.name for p in staged.iterdir())
    for name in [n for n in names if n != MODEL_MARK] + [n for n in names if n == MODEL_MARK]:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staged / name, target)
    staged.rmdir()


def _complete(checkpoint: Path) -> bool:
    return (checkpoint / "trainer_state.json").is_file()  # the Trainer writes it last


def _read_pending(out: Path) -> dict | None:
    path = out / CHECKPOINTS / PENDING
    try:
        pending = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return pending if isinstance(pending, dict) else None


def save_model_folder(model, tokenizer, out: Path, files: dict[str, str | bytes]) -> None:
    """The model, its tokenizer and `files` (name -> text or bytes), saved beside each other in a
    staging folder and moved into OUT together (see `install`)."""
    staged = staging_folder(out)
    try:
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        for name, data in files.items():
            (staged / name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        install(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
