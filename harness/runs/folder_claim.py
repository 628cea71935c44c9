"""Deciding whether a folder may take a run's or sweep's records, before any work.

A folder is taken when it is new, when its spec.json is this config's (a resume), or
when it has records but no spec.json and every one of them belongs to this config's
grid (the spec is then rewritten, with a note). Anything else is refused with what
the folder holds and the fix; a sweep may pass `force_new` to move the old files
aside instead.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from datetime import datetime

from harness.runs.held_questions import changed_question, changed_question_note
from harness.runs.invariance_mode import with_mode
from harness.runs.output_paths import FOLDER_FILES
from harness.runs.record_grid import Grid, record_identity
from harness.runs.spec_identity import same_identity
from harness.runs.store import SPEC_FILE, RunDir

KIND_NAMES = {"run": "a `redumix run` folder", "sweep": "a `redumix sweep` folder"}


def claim_folder(store: RunDir, kind: str, resolved: dict, grid: Grid, *, force_new: bool = False,
                 note: Callable[[str], None] = print) -> None:
    """Check that `store` may take the records of the `kind` ("run" or "sweep") spec `resolved`.

    Raises:
        ValueError: the folder holds something else; the message says what and how to proceed.
    """
    existing = store.read_spec()
    if existing is not None:
        theirs = existing.get(kind)
        if isinstance(theirs, dict) and same_identity(with_mode(theirs), resolved):
            return
        problem = _spec_differs(existing, kind, resolved)
    else:
        problem = _records_without_spec(store, kind, grid, note)
        if problem is None:
            return
    if kind == "sweep" and force_new:
        _move_aside(store)
        return
    raise ValueError(f"out (={str(store.path)!r}) already holds {problem}; "
                     f"{_fix(store, kind, resumable=True)}")


def _fix(store: RunDir, kind: str, resumable: bool) -> str:
    """What to do about a folder that holds something else."""
    if kind == "sweep":
        resume = "re-run with that sweep's config to resume it, " if resumable else ""
        return (f"{resume}choose another --out, or pass --force-new to start over "
                f"(the old files are moved to {store.path}/replaced-<time>/, not deleted)")
    resume = ", or re-run with that run's exact settings to resume it" if resumable else ""
    return f"choose a new --out folder{resume}"


def _spec_differs(existing: dict, kind: str, resolved: dict) -> str:
    other = "sweep" if kind == "run" else "run"
    if kind not in existing:
        return KIND_NAMES[other]
    theirs = existing[kind]
    if not isinstance(theirs, dict):
        return f"a different {kind} (see its {SPEC_FILE})"
    theirs = with_mode(theirs)
    changed = sorted(k for k in set(resolved) | set(theirs) if not same_identity(resolved.get(k), theirs.get(k)))
    # The dtype and batch invariance by value: records decoded in two of either would not be comparable.
    shown = [f"{k}: {theirs.get(k)} there, {resolved.get(k)} now" if k in ("dtype", "batch_invariant") else k
             for k in changed]
    return f"a different {kind} (differs in: {', '.join(shown)})"


def claim_and_read(store: RunDir, kind: str, resolved: dict, grid: Grid, *, adopted: str | None = None,
                   force_new: bool = False, note: Callable[[str], None] = print,
                   questions: Callable[[], Mapping[str, str]] | None = None):
    """Claim `store` (see `claim_folder`), say why its dtype was kept (`adopted`), check it can
    be written, and read what it holds (noting lines that could not be counted).

    `questions`: each record identity's question as the env gives it now; a folder whose
    records hold another question under one (see `harness.runs.held_questions`) is refused
    like a different spec (a sweep with `force_new` moves its files aside).
    """
    claim_folder(store, kind, resolved, grid, force_new=force_new, note=note)
    if adopted:
        note(adopted)
    store.check_writable()
    contents = store.read(grid)
    changed = None if questions is None or not contents.records else changed_question(
        {record_identity(r): r.get("question") for r in contents.records}, questions().items())
    if changed is not None:
        if not (kind == "sweep" and force_new):
            raise ValueError(f"out (={str(store.path)!r}) already holds {changed_question_note(changed)}; "
                             f"{_fix(store, kind, resumable=False)}")
        _move_aside(store)
        contents = store.read(grid)
    for line in contents.notes():
        note(line)
    return contents


def _records_without_spec(store: RunDir, kind: str, grid: Grid, note) -> str | None:
    """Why the spec-less folder cannot be resumed under `grid`, or None (after saying it will be)."""
    contents = store.read()
    if not contents.records:
        if contents.skipped:
            return (f"a {store.samples_path.name} whose {len(contents.skipped)} lines are not records "
                    f"(line {contents.skipped[0].line}: {contents.skipped[0].reason}) and no spec.json")
        return None
    for record in contents.records:
        identity = record_identity(record)
        if identity not in grid or ("key" in record) != (kind == "sweep"):
            return (f"records without a spec.json, and not all of them belong to this {kind}: the first that "
                    f"does not is {identity!r}")
    note(f"{store.path} has no spec.json, but all {len(contents.records)} records in it belong to this {kind}: "
         "resuming it and writing spec.json again")
    return None


def _move_aside(store: RunDir) -> None:
    backup = store.path / f"replaced-{datetime.now():%Y%m%d-%H%M%S-%f}"
    backup.mkdir()
    for name in FOLDER_FILES:
        if (store.path / name).exists() and not name.startswith("."):
            shutil.move(str(store.path / name), backup / name)

