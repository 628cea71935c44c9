"""Task-specific hints for `verifier` feedback: what is wrong, never what is right.

A hint may compare the answer with the gold (too high / too low, wrong length) but must not
state the gold or anything from which it can be read off directly. Hints are best effort:
tasks without an entry, and answers a hint cannot parse in its own way, give no hints.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from .base import Problem

HintFn = Callable[[str, Problem], list[str]]


def verifier_hints(problem: Problem, answer: str | None) -> list[str]:
    """Hint sentences for a wrong `answer` to `problem`; [] when the task has no hint rule."""
    rule = HINTS.get(problem.env)
    if rule is None or answer is None:
        return []
    try:
        return rule(answer, problem)
    except Exception:  # a hint must never break grading; odd gold formats just give none
        return []


def _number(text: str) -> Decimal | None:
    """Decimal value of "1,234", " -7 ", "3.50"; None for anything else (incl. NaN/inf)."""
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _compare(answer: Decimal, gold: Decimal, what: str) -> list[str]:
    if answer > gold:
        return [f"{what} is too high."]
    if answer < gold:
        return [f"{what} is too low."]
    return [f"{what} has the right value but is not written in the expected form."]


def _value_hint(answer: str, problem: Problem) -> list[str]:
    """Arithmetic results: not a number / too high / too low."""
    value, gold = _number(answer), _number(problem.gold)
    if value is None:
        return ["The answer is not a number."]
    return _compare(value, gold, "The answer") if gold is not None else []


def _count_hint(answer: str, problem: Problem) -> list[str]:
    """Counts: not a whole number / too high / too low."""
    value, gold = _number(answer), _number(problem.gold)
    if value is None or value != value.to_integral_value():
        return ["The answer is not a whole number."]
    return _compare(value, gold, "Your count") if gold is not None else []


def _parse_list(text: str) -> list | None:
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return list(value) if isinstance(value, list | tuple) else None
    return None


def _number_sorting_hint(answer: str, problem: Problem) -> list[str]:
    items = _parse_list(answer.strip())
    if items is None:
        return ["The answer is not a list of numbers in the format the question asks for."]
    expected = [Decimal(str(v)) for v in problem.metadata["sorted_numbers"]]
    if len(items) != len(expected):
        return [f"Your list has {len(items)} numbers but the question gives {len(expected)}."]
    values = [_number(str(v)) for v in items]
    if any(v is None for v in values):
        return ["Some items in your list are not numbers."]
    direction = problem.metadata.get("direction", "ascending")
    hints = []
    if values != sorted(values, reverse=direction == "descending"):
        hints.append(f"The list is not sorted in {direction} order.")
    # The scorer tolerates rounding differences up to 1, so compare the same way.
    if any(abs(a - b) > 1 for a, b in zip(sorted(values), sorted(expected), strict=True)):
        hints.append("The list does not contain exactly the numbers from the question.")
    return hints


def _word_sorting_hint(answer: str, problem: Problem) -> list[str]:
    words = [w.strip() for w in re.split(r",\s*", answer.strip()) if w.strip()]
    expected = list(problem.metadata["sorted_words"])
    if len(words) != len(expected):
        return [f"Your answer has {len(words)} words but the question gives {len(expected)}."]
    hints = []
    if sorted(words) != sorted(expected):
        hints.append("Your answer does not contain exactly the words from the question.")
    direction = problem.metadata.get("direction", "ascending")
    if words != sorted(words, reverse=direction == "descending"):
        hints.append(f"The words are not in {direction} ASCII/Unicode order.")
    return hints


def _spell_backward_hint(answer: str, problem: Problem) -> list[str]:
    given, gold = answer.strip(), problem.gold
    if len(given) != len(gold):
        return [f"Your answer has {len(given)} characters but the word has {len(gold)}."]
    if sorted(given.lower()) != sorted(gold.lower()):
        return ["Your answer uses different letters than the word."]
    return ["The letters are not in reverse order."]


HINTS: dict[str, HintFn] = {
    "basic_arithmetic": _value_hint,
    "chain_sum": _value_hint,
    "products": _value_hint,
    "gcd": _value_hint,
    "lcm": _value_hint,
    "letter_counting": _count_hint,
    "count_bits": _count_hint,
    "count_primes": _count_hint,
    "number_sorting": _number_sorting_hint,
    "word_sorting": _word_sorting_hint,
    "spell_backward": _spell_backward_hint,
}
