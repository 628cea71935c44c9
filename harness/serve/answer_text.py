"""A streamed answer's text, released as its tokens come.

Decoding a prefix of a row's tokens does not always give a prefix of the final text: the last
token may be half of a character (shown as U+FFFD until the rest comes), a tokenizer may clean
up spaces around the next token, and the answer is cut at a stop string that may still be
forming. So the text is released only up to `holdback` characters before its current end, and
never past a stop string; the answer's final text then gives the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.engine.row_end import TAIL_MARGIN


class AnswerText:
    """One choice's text as it grows; `emit(text)` gets each new stable piece.

    Args:
        tokenizer: decodes the tokens.
        stop: the request's stop strings (the answer is cut before the first).
        emit: called with each piece of text released.
    """

    def __init__(self, tokenizer, stop: Sequence[str], emit: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.emit = emit
        self.holdback = TAIL_MARGIN + max((len(s) for s in self.stop), default=0)
        self.ids: list[int] = []
        self.sent = ""

    def add(self, token: int) -> None:
        """Take the row's next token; release what is now stable."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        stable = text[: max(0, len(text) - self.holdback)]
        for stop in self.stop:
            at = text.find(stop)
            if at >= 0:
                stable = stable[:at]
        if len(stable) > len(self.sent) and stable.startswith(self.sent):
            piece, self.sent = stable[len(self.sent):], stable
            self.emit(piece)
