"""Whether a run or sweep decodes batch-invariantly, decided before any model loads.

Asked for explicitly (`--batch-invariant on|off`, `batch_invariant:` in a sweep config),
the mode is kept, and a folder written in the other mode is refused by
`harness.runs.folder_claim` like any other difference. Not asked for, a new folder is
decoded batch-invariantly, and a folder being resumed keeps the mode it was written in,
so a folder never mixes modes. Folders written before the setting existed were decoded
without invariance: their spec.json has no `batch_invariant`, which reads as off.
"""

from __future__ import annotations

from harness.runs.store import SPEC_FILE, RunDir

KEY = "batch_invariant"
# How every run and sweep decoded before the mode was recorded.
BEFORE_THE_SETTING = False


def with_mode(identity: dict) -> dict:
    """A stored run or sweep identity with the mode it was decoded in (off where it predates the setting)."""
    return identity if KEY in identity else identity | {KEY: BEFORE_THE_SETTING}


def mode_to_run(requested: bool | None, store: RunDir, kind: str, flag: str = "--batch-invariant"
                ) -> tuple[bool, str | None]:
    """(whether to decode batch-invariantly, a line to print once the folder is claimed, or None).

    `kind`: "run" or "sweep", the entry of spec.json holding the identity (read, never written).
    """
    if requested is not None:
        return requested, None
    stored, why = _stored_mode(store, kind)
    if stored is not False:
        return True, None
    return False, (f"{store.path} was decoded without batch invariance ({why}): resuming it so, so every record "
                   f"in it shares one mode (for batch-invariant records, choose another --out or pass {flag} on "
                   "to a new folder)")


def _stored_mode(store: RunDir, kind: str) -> tuple[bool | None, str | None]:
    """(the mode `store`'s run or sweep was decoded in, how that is known), or (None, None) for a new folder.

    From spec.json; in a folder without one, from its records when they agree (records written
    before the field existed were decoded without invariance).
    """
    existing = store.read_spec()
    if existing is not None:
        theirs = existing.get(kind) if isinstance(existing, dict) else None
        if not isinstance(theirs, dict):
            return None, None
        return with_mode(theirs)[KEY], (f"its {SPEC_FILE} says so" if KEY in theirs
                                        else f"its {SPEC_FILE} predates the setting")
    modes = {record.get(KEY, BEFORE_THE_SETTING) for record in store.read().records}
    if len(modes) != 1:
        return None, None
    return modes.pop(), "its records say so"
