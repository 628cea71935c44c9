"""Interrupts: Ctrl-C and SIGTERM end a command between batches, never inside a write.

`signals_deferred` holds SIGINT and SIGTERM back while a critical section (appending
a batch of records) runs and delivers them right after. `sigterm_as_interrupt` makes
SIGTERM behave like Ctrl-C, so both end with the same one-line message.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Run the block with SIGINT/SIGTERM held; a signal that arrived meanwhile is delivered after it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set from the main thread; other threads are not interrupted anyway
        return
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in HELD}
    for sig in HELD:
        signal.signal(sig, lambda number, _frame: received.append(number))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for number in received[:1]:
            signal.raise_signal(number)


def _raise_interrupt(_number, _frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def sigterm_handler_kept() -> Iterator[None]:
    """Run the block, then put SIGTERM's handler back as it was: a library that installs its own
    (ray.init makes SIGTERM exit at once, with no message) must not undo `sigterm_as_interrupt`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
