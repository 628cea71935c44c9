"""When a decoding row ends: an EOS, a stop string in its text, or its token limit."""

from __future__ import annotations

# Characters a stop-string window holds beyond the longest stop string and the newest
# token's own text. They cover what decoding a slice of tokens changes at its edges,
# a few characters each: a character split over byte tokens shows as U+FFFD at either
# end, SentencePiece-style decoders drop the slice's leading space, and a new token can
# rewrite the character before it (a completed UTF-8 sequence, " ." cleaned to ".").
TAIL_MARGIN = 8


def end_of_row(ids, eos, stop_strings, tokenizer, max_new_tokens, held=0):
    """(reason, stop string, cut text) if the row is done, else None.

    The row's first `held` tokens came at steps where it could not stop: an EOS among
    them, or a stop string that ends within their text, does not end it.
    """
    if len(ids) > held:
        if ids[-1] in eos:
            return "eos", None, None
        if stop_strings and stop_in_tail(ids, stop_strings, tokenizer):
            hit = first_stop(ids, held, stop_strings, tokenizer)
            if hit is not None:
                return "stop", *hit
    if len(ids) >= max_new_tokens:
        return "length", None, None
    return None


def first_stop(ids, held, stop_strings, tokenizer) -> tuple[str, str] | None:
    """(stop string, text cut just after it) for the stop string that ends first after
    the held tokens' text, or None."""
    # The window's edges can show a stop string the full text lacks, and only the full
    # text gives the cut, so the full text settles a hit: one decode per row in practice.
    text = tokenizer.decode(ids, skip_special_tokens=True)
    held_chars = len(tokenizer.decode(ids[:held], skip_special_tokens=True)) if held else 0
    hits = []
    for stop in stop_strings:
        at = text.find(stop, max(0, held_chars - len(stop) + 1))
        if at >= 0:
            hits.append((at + len(stop), stop))
    if not hits:
        return None
    end, stop = min(hits)
    return stop, text[:end]


def stop_in_tail(ids, stop_strings, tokenizer) -> bool:
    """Whether a stop string shows in the decoded text of the row's last tokens.

    Rows are checked every step, so a stop string new to the full text ends in what the
    newest token added or changed. The window covers that, the longest stop string and
    TAIL_MARGIN characters, and doubles while its tokens are too short (byte pieces,
    skipped special tokens), so a step costs a bounded decode instead of one linear in
    the row's length. It never misses a stop string new to the full text (the row had
    none a step earlier, or it would have ended), but may report one the full text lacks.
    """
    longest = max(len(s) for s in stop_strings)
    need = longest + TAIL_MARGIN + len(tokenizer.decode(ids[-1:], skip_special_tokens=True))
    size = longest + TAIL_MARGIN + 1
    while True:
        window = tokenizer.decode(ids[-size:], skip_special_tokens=True)
        if size >= len(ids) or len(window) >= need:
            return any(s in window for s in stop_strings)
        size *= 2
