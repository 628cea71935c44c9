"""Notes to the person at the terminal: one line each on stderr, clear of progress bars."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def note(message: str) -> None:
    tqdm.write(f"note: {message}", file=sys.stderr)
