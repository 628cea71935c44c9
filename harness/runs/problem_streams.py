"""Which problems a folder's seeds stand for, as part of its identity.

Folders written before seeds drew disjoint problem streams (`envs.reasoning_gym_env.dataset_seed`)
hold, for every seed but 0, problems that this version no longer generates under the same ids.
Their spec lacks the marker below, so resuming one is refused rather than mixing two sets of
questions under one id; a folder of seed 0 alone is unaffected and resumes as before.
"""

from __future__ import annotations

from collections.abc import Iterable

KEY = "problem_streams"


def stream_identity(seeds: Iterable[int]) -> dict:
    """What a spec adds to its identity for these seeds."""
    return {KEY: "disjoint"} if any(seed != 0 for seed in seeds) else {}


def stream_change_note(theirs: dict, changed: list[str]) -> str | None:
    """Why a folder whose spec `theirs` differs from this config's in `changed` cannot be
    resumed, when the only difference is its age (it predates the marker); else None."""
    if changed != [KEY] or KEY in theirs:
        return None
    return ("its problems for seeds other than 0 were drawn before each seed had problems of its own (then seed "
            "s + 1 repeated seed s's problems shifted by one), so the same ids now name other questions")
