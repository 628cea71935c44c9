"""Each generated token's text, for records that keep per-step arrays: the pieces join to
the decoded completion, so a report can show an answer token by token without a tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence

# Tokens before the one being decoded that a windowed decode reads: enough for a tokenizer's
# merges across token boundaries (a UTF-8 character split over bytes, a leading-space marker).
_WINDOW_TOKENS = 6
_INCOMPLETE = "\ufffd"  # what a decode shows for a UTF-8 character whose bytes have not all come


def token_texts(tokenizer, token_ids: Sequence[int], completion: str | None = None) -> list[str]:
    """The text each token adds, so that the pieces concatenate to `completion` (default: the
    decoded tokens, special tokens skipped, as the engine decodes a row).

    A token whose bytes only complete a character together with later tokens adds "" and the
    token that completes it adds the character; special tokens add "". A completion cut just
    after a stop string loses the cut text from its last pieces.

    Each token is decoded in a short window of the tokens before it (linear in the length);
    when those pieces do not rebuild the whole decode (a tokenizer whose clean-up looks
    further back), every prefix is decoded instead (exact, quadratic in the length).
    """
    ids = list(token_ids)
    whole = _decode(tokenizer, ids)
    pieces = _windowed_pieces(tokenizer, ids)
    joined = "".join(pieces)
    # Only a character the tokens never completed may be missing from the windowed pieces.
    if not (whole.startswith(joined) and not whole[len(joined):].strip(_INCOMPLETE)):
        pieces = _prefix_pieces(tokenizer, ids)
    _settle(pieces, whole if completion is None else completion)
    return pieces


def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True) if ids else ""


def _windowed_pieces(tokenizer, ids: list[int]) -> list[str]:
    """Each token's text as the difference between decoding a few tokens before it with and
    without it; held back ("") while the text ends in an incomplete character."""
    pieces: list[str] = []
    start = settled = 0  # the window's first token; the tokens before `settled` have their text
    for i in range(len(ids)):
        before = _decode(tokenizer, ids[start:settled])
        after = _decode(tokenizer, ids[start : i + 1])
        if len(after) > len(before) and after.startswith(before) and not after.endswith(_INCOMPLETE):
            pieces.append(after[len(before):])
            start, settled = max(start, i + 1 - _WINDOW_TOKENS), i + 1
        else:
            pieces.append("")
    return pieces


def _prefix_pieces(tokenizer, ids: list[int]) -> list[str]:
    """Each token's text from decoding every prefix: what the prefix adds to the text so far,
    earlier pieces trimmed where a later token changed text before it."""
    pieces: list[str] = []
    for i in range(len(ids)):
        pieces.append("")
        prefix = _decode(tokenizer, ids[: i + 1])
        if not prefix.endswith(_INCOMPLETE):
            _settle(pieces, prefix)
    return pieces


def _settle(pieces: list[str], text: str) -> None:
    """Make `pieces` concatenate to `text`: keep their longest run that is a prefix of it
    (trimming pieces from the end) and give the rest to the last piece."""
    if not pieces:
        return
    joined = "".join(pieces)
    common = 0
    for a, b in zip(joined, text, strict=False):
        if a != b:
            break
        common += 1
    excess = len(joined) - common
    at = len(pieces) - 1
    while excess > 0:
        cut = min(excess, len(pieces[at]))
        pieces[at] = pieces[at][: len(pieces[at]) - cut]
        excess -= cut
        at -= 1
    pieces[-1] += text[common:]
