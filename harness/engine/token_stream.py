"""Answers as they are written: a caller's sink gets each new token of the rows that write an answer.

A server streaming a request sets a sink for the request (`streaming(sink)`); a method marks the
`decode` call whose rows are its answers (`answer_rows(problem ids)`): a single pass's one call,
DeRa's blend, ReDuMix's final mixture, not a first attempt or a reflection. Every token such a
row gets is handed to the sink as (problem id, token id) as soon as it is decoded, from the thread
that decodes it. Outside `streaming` nothing is handed anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

TokenSink = Callable[[str, int], None]

_SINK: ContextVar[TokenSink | None] = ContextVar("token_sink", default=None)
_ANSWER_ROWS: ContextVar[Sequence[str] | None] = ContextVar("answer_rows", default=None)


@contextmanager
def streaming(sink: TokenSink) -> Iterator[None]:
    """Hand `sink` every answer token of the `decode` calls made inside the block."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


@contextmanager
def answer_rows(problem_ids: Sequence[str]) -> Iterator[None]:
    """The `decode` call inside the block writes answers: row i answers `problem_ids[i]`."""
    token = _ANSWER_ROWS.set(list(problem_ids))
    try:
        yield
    finally:
        _ANSWER_ROWS.reset(token)


def row_sink(num_rows: int) -> Callable[[int, int], None] | None:
    """For a `decode` call of `num_rows` rows: (row, token) -> the sink, where the call streams; else None."""
    sink, rows = _SINK.get(), _ANSWER_ROWS.get()
    if sink is None or rows is None:
        return None
    if len(rows) != num_rows:
        raise ValueError(f"answer_rows names {len(rows)} problems for a decode call of {num_rows} rows")
    return lambda row, token: sink(rows[row], token)
