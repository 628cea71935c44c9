"""The answer format shared by every environment: the final answer goes in <answer> tags.

Extraction rule (strict on purpose, so `format_ok` means what it says):

* the answer is the text of the LAST complete `<answer>...</answer>` pair, stripped of
  surrounding whitespace; tags are lowercase and matched literally;
* if that text itself contains an opening `<answer>` (the model reopened the tag before
  closing it), only the part after the last opening tag counts;
* an unclosed `<answer>` at the end of a completion does NOT count. Decoders that stop on
  the string "</answer>" must put the stop string back (or call `close_stopped_answer`)
  before verifying.

This matches `reasoning_gym.utils.extract_answer` except for the reopened-tag rule.

Small models often state a right answer without the tags. The ``flexible`` mode (like
lm-eval's "flexible-extract" beside "strict-match") falls back, when no tag pair exists,
to the text after the last "answer is" / "answer:" on its line, and failing that to the
last number in the completion. `format_ok` still reports whether the tags were used.

Thinking models write their reasoning first and close it with `</think>` (Qwen3, DeepSeek-R1,
QwQ: the opening `<think>` is written by the model or by the chat template's generation
prompt). Extraction reads only what follows the LAST `</think>` (as Qwen3's model card parses
its outputs); a completion that opens `<think>` and never closes it has no answer. A
completion without either marker is read whole, as before (`split_thinking`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.naming import unknown_name_message

OPEN_TAG = "<answer>"
CLOSE_TAG = "</answer>"

ANSWER_INSTRUCTION = (
    "Give your final answer inside <answer></answer> tags, "
    "for example: <answer>your answer</answer>."
)

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", flags=re.DOTALL)
_PHRASE_RE = re.compile(r"answer\s*(?:is|:)\s*:?\s*([^\n]+)", flags=re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")

EXTRACTION_MODES: tuple[str, ...] = ("strict", "flexible")

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Thinking:
    """A completion split at the end of its thinking (see `split_thinking`).

    Attributes:
        text: the thinking, without its markers and surrounding whitespace.
        answer: what follows `</think>` (what extraction reads); "" when the thinking never closed.
        closed: whether `</think>` ended the thinking.
    """

    text: str
    answer: str
    closed: bool


def split_thinking(completion: str) -> Thinking | None:
    """The thinking and the answer part of `completion`; None when it has no thinking (no
    `</think>`, and it does not start with `<think>`). A template that opens `<think>` in the
    prompt leaves it out of the completion: `with_open_thinking` puts it back first."""
    head, close, tail = completion.rpartition(THINK_CLOSE)
    if close:
        return Thinking(_unwrapped(head), tail, True)
    if completion.lstrip().startswith(THINK_OPEN):
        return Thinking(_unwrapped(completion), "", False)
    return None


def answer_part(completion: str) -> str:
    """What extraction reads: the text after the thinking, or the whole completion without one."""
    thinking = split_thinking(completion)
    return completion if thinking is None else thinking.answer


def opens_thinking(prompt: str) -> bool:
    """Whether `prompt` ends inside an open `<think>` (templates of DeepSeek-R1 and QwQ put it
    in the generation prompt), so the completion starts with thinking."""
    return prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE)


def with_open_thinking(prompt: str, completion: str) -> str:
    """`completion` as graded: with the `<think>` its prompt opened put back in front, so a
    completion that never closes that thinking reads as unclosed thinking, not as an answer."""
    return THINK_OPEN + completion if opens_thinking(prompt) and not completion.lstrip().startswith(THINK_OPEN) \
        else completion


def _unwrapped(text: str) -> str:
    text = text.strip()
    return text.removeprefix(THINK_OPEN).strip()


def extract_answer(completion: str) -> str | None:
    """Text of the last <answer>...</answer> pair after any thinking, stripped; None when there is none."""
    matches = _ANSWER_RE.findall(answer_part(completion))
    if not matches:
        return None
    inner = matches[-1]
    # "<answer>draft <answer>final</answer>": the lazy match starts at the first tag.
    inner = inner.rsplit(OPEN_TAG, 1)[-1]
    return inner.strip()


def extract_answer_flexible(completion: str) -> str | None:
    """The tagged answer if any (and not empty), else the last "answer is X" phrase, else the last number."""
    tagged = extract_answer(completion)
    if tagged:  # an empty "<answer></answer>" states nothing; look further
        return tagged
    completion = answer_part(completion)  # never a number from the thinking
    # "The answer is **7**." -> "7": drop emphasis, quotes and the closing full stop.
    # A phrase about the tags themselves ("the answer is inside <answer> tags") is no answer.
    phrases = [p.strip().strip("*`\"'$ ").rstrip(".").strip("*`\"'$ ") for p in _PHRASE_RE.findall(completion)]
    phrases = [p for p in phrases if p and "<" not in p]
    if phrases:
        return phrases[-1]
    numbers = _NUMBER_RE.findall(completion)
    return numbers[-1] if numbers else None


def check_extraction_mode(mode: str) -> None:
    """Raise ValueError (with did-you-mean) unless `mode` is a known extraction mode."""
    if mode not in EXTRACTION_MODES:
        raise ValueError(unknown_name_message("answer extraction mode", mode, EXTRACTION_MODES))


def wrap_answer(answer: str) -> str:
    """`answer` inside answer tags, the form `extract_answer` accepts."""
    return f"{OPEN_TAG}{answer}{CLOSE_TAG}"


def close_stopped_answer(completion: str) -> str:
    """Append "</answer>" when generation stopped inside an open answer tag.

    For decoders that use "</answer>" as a stop string and get the text back without it.
    A completion whose last tag is already closed (or that has no tag) is returned unchanged.
    """
    last_open = completion.rfind(OPEN_TAG)
    if last_open != -1 and completion.find(CLOSE_TAG, last_open) == -1:
        return completion + CLOSE_TAG
    return completion
