"""Did-you-mean lookups shared by every registry (decoders, environments, models)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Names from `choices` that look like `name`, best first."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`" Did you mean: greedy?"` (the closest `choices`), or "" when none is close; for messages
    that go on differently from `unknown_name_message`."""
    guesses = closest(name, choices)
    return f" Did you mean: {', '.join(guesses)}?" if guesses else ""


def unknown_name_message(kind: str, name: str, choices: Iterable[str]) -> str:
    """`Unknown decoder 'gredy'. Did you mean: greedy? Available: greedy, sample`."""
    choices = sorted(choices)
    return f"Unknown {kind} {name!r}.{did_you_mean(name, choices)} Available: {', '.join(choices)}"
