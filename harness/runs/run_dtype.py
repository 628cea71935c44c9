"""The dtype a run or sweep decodes in, decided before any model loads.

An explicit dtype is checked against the device and kept: a folder written in another
dtype is then refused by `harness.runs.folder_claim` like any other difference. "auto"
picks what the machine runs fastest (`harness.engine.dtype_choice`), except where the
folder already holds records of this same run or sweep in another dtype: then it keeps
that one, so a folder never mixes dtypes, and folders written before "auto" was the
default (in float32) resume as they are. Specs and records always name the dtype that
ran, never "auto".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from harness.engine.dtype_choice import AUTO
from harness.engine.models import resolve_dtype
from harness.runs.invariance_mode import with_mode
from harness.runs.spec_identity import same_identity
from harness.runs.store import SPEC_FILE, RunDir

# What every run and sweep decoded in before the dtype was recorded on each record.
OLD_DEFAULT_DTYPE = "float32"


def dtype_to_run(requested: str, device: str, store: RunDir, kind: str, identity: Callable[[str], dict],
                 preloaded: Iterable = (), flag: str = "--dtype") -> tuple[str, str | None]:
    """(the dtype to decode in, a line to print once the folder is claimed, or None).

    Args:
        requested: the dtype asked for, "auto" or a dtype name (checked here).
        device: the resolved device ("cpu", "cuda", ...; not "auto").
        store: the run or sweep folder (read, never written; call under its lock).
        kind: "run" or "sweep", the entry of spec.json holding the identity.
        identity: dtype -> the spec's identity decoding in that dtype, as spec.json stores it.
        preloaded: models given already loaded; "auto" takes their dtype before the machine's choice.
        flag: the setting's name in messages ("--dtype", or "dtype" in a sweep config).

    Raises:
        ValueError: the dtype is unknown or cannot run on `device`.
    """
    if requested != AUTO:
        return resolve_dtype(requested, device, flag=flag), None
    fresh = next((m.dtype for m in preloaded if m is not None), None) or resolve_dtype(AUTO, device, flag=flag)
    stored, why = stored_dtype(store, kind, identity)
    if stored is None or stored == fresh:
        return fresh, None
    try:
        resolve_dtype(stored, device, flag=flag)
    except ValueError as err:
        raise ValueError(f"{store.path} holds records decoded in {stored}, which {flag} auto keeps so the folder "
                         f"resumes in one dtype, but: {err}. Resume it where {stored} runs, or choose another "
                         "--out") from None
    return stored, (f"{store.path} was decoded in {stored} ({why}): {flag} auto keeps {stored} so every record in "
                    f"it shares one dtype (auto alone would choose {fresh} here; for {fresh}, choose another --out)")


def stored_dtype(store: RunDir, kind: str, identity: Callable[[str], dict]) -> tuple[str | None, str | None]:
    """(the dtype `store` holds this run's or sweep's records in, how that is known), or (None, None)
    when the folder is new or holds something else (which claiming it then refuses).

    From spec.json when it names a dtype and equals `identity(dtype)` in everything else; in a folder
    without spec.json, from the records' `dtype` (records written before the field existed were
    decoded in float32, the default then).
    """
    existing = store.read_spec()
    if existing is not None:
        theirs = existing.get(kind)
        stored = theirs.get("dtype") if isinstance(theirs, dict) else None
        if isinstance(stored, str) and same_identity(with_mode(theirs), identity(stored)):
            return stored, f"its {SPEC_FILE} says so"
        return None, None
    records = store.read().records
    dtypes = {r.get("dtype") for r in records}
    if not records or len(dtypes) != 1:
        return None, None
    stored = dtypes.pop()
    if stored is None:
        return OLD_DEFAULT_DTYPE, (f"it has no {SPEC_FILE} and its records predate the `dtype` field; "
                                   f"{OLD_DEFAULT_DTYPE} was the default then")
    return stored, "its records say so"
