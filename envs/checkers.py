"""Answer checkers for datasets users bring (`envs.file_dataset`): how an extracted answer is
scored against the dataset's answer column.

A dataset names its checker in the env config (`checker`):

* ``exact``: the answer equals the gold text, surrounding whitespace stripped and inner runs of
  whitespace read as one space (``ignore_case``: also ignore letter case);
* ``numeric``: both read as numbers and equal within ``tolerance`` (absolute, default 1e-6) or
  ``rel_tolerance`` (relative to the gold, default 0). Numbers may be written as integers,
  decimals (``1,234.5``), scientific (``1e-3``), fractions (``3/4``, ``\\frac{3}{4}``), mixed
  numbers (``1 1/2``), with a currency sign before, a percent sign or a unit after (``12 cm``),
  inside ``$...$`` or ``\\boxed{}``; "50%" reads as 50;
* ``regex``: the gold is a regular expression the whole answer must match (``ignore_case``);
* ``math``: Math-Verify (HuggingFace's `math-verify`) parses both as mathematics and compares
  them symbolically: ``\\frac{1}{2}``, ``1/2`` and ``0.5`` are one value, and so are ``12 cm``
  and ``12``; text without ``$`` delimiters is also read as LaTeX;
* ``MODULE:FUNCTION`` or ``path/to/file.py:FUNCTION``: a function of the user's called as
  ``fn(answer, gold)`` or ``fn(answer, gold, columns)`` (``columns``: the row's other columns)
  that returns a score in [0, 1] (a bool counts as 0 or 1), or ``(score, message)``.

A checker prepares each gold answer once (`prepare`: a `numeric` gold must be a number, a `regex`
gold a valid pattern, a `math` gold something Math-Verify reads), raising `ValueError` for a gold
it cannot use, and scores an answer with `check`, giving a `Check`: the score and a message
saying what is wrong with the answer. The message goes into `verifier` feedback, so a built-in
checker's never states the gold; a user's function's message is passed on as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import numbers
import re
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from harness.naming import did_you_mean

BUILT_IN_CHECKERS: tuple[str, ...] = ("exact", "numeric", "regex", "math")
# Option -> (default, the checkers that take it).
OPTIONS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "tolerance": (1e-6, ("numeric",)),
    "rel_tolerance": (0.0, ("numeric",)),
    "ignore_case": (False, ("exact", "regex")),
}
# Math-Verify bounds each parse and comparison with SIGALRM, which exists on the main thread only.
MATH_TIMEOUT_S = 5


@dataclass(frozen=True)
class Check:
    """One answer's score in [0, 1] and what is wrong with it ("" when nothing is said)."""

    score: float
    message: str = ""


class Checker:
    """A checker with its options; `spec` is how the config names it."""

    spec: str = ""

    def options(self) -> dict[str, Any]:
        """The options this checker took, resolved (for the env's config)."""
        return {}

    def prepare(self, gold: str) -> Any:
        """What `check` compares with; ValueError (a short reason) for a gold it cannot use."""
        return gold

    def check(self, answer: str, prepared: Any, columns: Mapping[str, Any]) -> Check:
        raise NotImplementedError


def make_checker(spec: Any, options: Mapping[str, Any]) -> Checker:
    """The checker `spec` names (see the module docstring) with `options` (strings coerced).

    Raises:
        ValueError: an unknown checker (did-you-mean), an option the checker does not take or a
            bad value, or a user's function that cannot be imported or called.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"checker (={spec!r}) must be one of {', '.join(BUILT_IN_CHECKERS)} or MODULE:FUNCTION")
    spec = spec.strip()
    name = spec if ":" not in spec else "function"
    for key in options:
        takers = OPTIONS[key][1]
        if name not in takers:
            raise ValueError(f"{key} (={options[key]!r}) applies to checker={' or checker='.join(takers)}, "
                             f"not checker={spec}; drop it or change the checker")
    if ":" in spec:
        return FunctionChecker(spec)
    if name not in BUILT_IN_CHECKERS:
        raise ValueError(f"checker (={spec!r}) is not a checker.{did_you_mean(spec, BUILT_IN_CHECKERS)} "
                         f"Use one of {', '.join(BUILT_IN_CHECKERS)}, or MODULE:FUNCTION / path/to/file.py:FUNCTION "
                         "for a function of your own")
    if name == "exact":
        return ExactChecker(_bool(options.get("ignore_case", False), "ignore_case"))
    if name == "regex":
        return RegexChecker(_bool(options.get("ignore_case", False), "ignore_case"))
    if name == "numeric":
        return NumericChecker(_non_negative(options.get("tolerance", OPTIONS["tolerance"][0]), "tolerance"),
                              _non_negative(options.get("rel_tolerance", OPTIONS["rel_tolerance"][0]),
                                            "rel_tolerance"))
    return MathChecker()


# -- built-in checkers -----------------------------------------------------------------


def _spaces(text: str) -> str:
    return " ".join(text.split())


class ExactChecker(Checker):
    spec = "exact"

    def __init__(self, ignore_case: bool = False) -> None:
        self.ignore_case = ignore_case

    def options(self) -> dict[str, Any]:
        return {"ignore_case": self.ignore_case}

    def prepare(self, gold: str) -> str:
        return self._norm(gold)

    def check(self, answer: str, prepared: str, columns: Mapping[str, Any]) -> Check:
        if self._norm(answer) == prepared:
            return Check(1.0)
        return Check(0.0, "The answer does not match the expected answer.")

    def _norm(self, text: str) -> str:
        text = _spaces(text)
        return text.casefold() if self.ignore_case else text


class RegexChecker(Checker):
    spec = "regex"

    def __init__(self, ignore_case: bool = False) -> None:
        self.ignore_case = ignore_case

    def options(self) -> dict[str, Any]:
        return {"ignore_case": self.ignore_case}

    def prepare(self, gold: str) -> re.Pattern:
        try:
            return re.compile(gold, re.IGNORECASE if self.ignore_case else 0)
        except re.error as err:
            raise ValueError(f"{gold!r} is not a valid regular expression ({err})") from None

    def check(self, answer: str, prepared: re.Pattern, columns: Mapping[str, Any]) -> Check:
        if prepared.fullmatch(answer.strip()):
            return Check(1.0)
        return Check(0.0, "The answer does not have the expected form.")


class NumericChecker(Checker):
    spec = "numeric"

    def __init__(self, tolerance: float = 1e-6, rel_tolerance: float = 0.0) -> None:
        self.tolerance, self.rel_tolerance = tolerance, rel_tolerance

    def options(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "rel_tolerance": self.rel_tolerance}

    def prepare(self, gold: str) -> Fraction:
        value = read_number(gold)
        if value is None:
            raise ValueError(f"{_cut(gold)!r} is not a number")
        return value

    def check(self, answer: str, prepared: Fraction, columns: Mapping[str, Any]) -> Check:
        value = read_number(answer)
        if value is None:
            return Check(0.0, "The answer is not a number.")
        if math.isclose(float(value), float(prepared), rel_tol=self.rel_tolerance, abs_tol=self.tolerance) \
                or value == prepared:
            return Check(1.0)
        return Check(0.0, "The answer is too high." if value > prepared else "The answer is too low.")


_NUMBER = r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?"
_PLAIN_RE = re.compile(rf"({_NUMBER})")
_MIXED_RE = re.compile(r"([-+−]?)(\d+)\s+(\d+)\s*/\s*(\d+)")
_FRACTION_RE = re.compile(rf"({_NUMBER})\s*/\s*({_NUMBER})")
_LATEX_FRAC_RE = re.compile(rf"([-+−]?)\\[dt]?frac\s*\{{\s*({_NUMBER})\s*\}}\s*\{{\s*({_NUMBER})\s*\}}")
_CURRENCY = ("\\$", "$", "€", "£", "¥", "USD", "EUR")
_UNIT_RE = re.compile(r"[%°µA-Za-z\u00c0-\u024f][%°µA-Za-z\u00c0-\u024f /.'’-]*")


def read_number(text: str) -> Fraction | None:
    """The number `text` states (see `numeric` in the module docstring), exactly; None when it
    states none, or more than one, or an infinity or NaN."""
    text = _unwrap(text.strip())
    for sign in _CURRENCY:
        if text.startswith(sign) or text.startswith("-" + sign):
            negative = text.startswith("-")
            text = text[len(sign) + negative:].strip()
            text = "-" + text if negative else text
            break
    for pattern, build in ((_LATEX_FRAC_RE, _latex_fraction), (_MIXED_RE, _mixed), (_FRACTION_RE, _fraction),
                           (_PLAIN_RE, _plain)):
        match = pattern.match(text)
        if match is None or not match.group(0).strip(" +-−"):
            continue
        if not _is_unit(text[match.end():]):
            continue
        try:
            value = build(match)
        except (ValueError, ZeroDivisionError):
            return None
        if value is not None:
            return value
    return None


def _unwrap(text: str) -> str:
    """Drop $...$, \\(...\\), \\boxed{...} and \\text{...} around or inside a number."""
    for start, end in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(start) and text.endswith(end) and len(text) > len(start) + len(end):
            text = text[len(start):-len(end)].strip()
    boxed = re.fullmatch(r"\\boxed\s*\{(.*)\}", text)
    if boxed:
        text = boxed.group(1).strip()
    text = re.sub(r"\\(?:text|mathrm|textrm|mbox)\s*\{([^{}]*)\}", r" \1", text)
    return text.replace("\\,", "").replace("\\!", "").replace("\\%", "%").replace("\\ ", " ").strip()


def _is_unit(rest: str) -> bool:
    """Whether what follows a number is nothing or a unit ("cm", "km/h", "m^2", "%", "apples"), not more maths."""
    rest = re.sub(r"\^\{?[23]\}?|[²³]", "", rest).strip()
    return not rest or _UNIT_RE.fullmatch(rest) is not None


def _to_fraction(text: str) -> Fraction:
    return Fraction(text.replace(",", "").replace("−", "-").lstrip("+"))


def _plain(match: re.Match) -> Fraction:
    return _to_fraction(match.group(1))


def _fraction(match: re.Match) -> Fraction:
    return _to_fraction(match.group(1)) / _to_fraction(match.group(2))


def _latex_fraction(match: re.Match) -> Fraction:
    value = _to_fraction(match.group(2)) / _to_fraction(match.group(3))
    return -value if match.group(1) in ("-", "−") else value


def _mixed(match: re.Match) -> Fraction:
    value = int(match.group(2)) + Fraction(int(match.group(3)), int(match.group(4)))
    return -value if match.group(1) in ("-", "−") else value


class MathChecker(Checker):
    spec = "math"

    def __init__(self) -> None:
        _math_verify()  # a missing install is said now, not at the first answer

    def prepare(self, gold: str) -> list:
        parsed = _math_parse(gold)
        if not parsed:
            raise ValueError(f"Math-Verify reads no mathematical expression in {_cut(gold)!r}; write it as a "
                             "number or LaTeX, or use checker=exact")
        return parsed

    def check(self, answer: str, prepared: list, columns: Mapping[str, Any]) -> Check:
        parsed = _math_parse(answer)
        if not parsed:
            return Check(0.0, "The answer could not be read as a mathematical expression.")
        _, verify = _math_verify()
        if verify(prepared, parsed, timeout_seconds=_math_timeout(), raise_on_error=True):
            return Check(1.0)
        return Check(0.0, "The answer is not equal to the expected value.")


def _math_verify():
    try:
        from math_verify import parse, verify
    except ImportError as err:
        raise ValueError(f"checker=math needs the package math-verify ({err}). Fix: pip install math-verify") from None
    return parse, verify


def _math_timeout() -> int | None:
    return MATH_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _math_parse(text: str) -> list:
    """Math-Verify's reading of `text`; text without math delimiters is tried as LaTeX too."""
    parse, _ = _math_verify()
    parsed = parse(text, parsing_timeout=_math_timeout(), raise_on_error=True)
    if not parsed and "$" not in text and "\\(" not in text and "\\[" not in text:
        parsed = parse(f"${text}$", parsing_timeout=_math_timeout(), raise_on_error=True)
    return parsed


# -- a user's function -----------------------------------------------------------------


class FunctionChecker(Checker):
    """`MODULE:FUNCTION` or `path/to/file.py:FUNCTION`, resolved (and its signature checked) now."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.fn, self.takes_columns = _load_function(spec)

    def check(self, answer: str, prepared: str, columns: Mapping[str, Any]) -> Check:
        raw = self.fn(answer, prepared, dict(columns)) if self.takes_columns else self.fn(answer, prepared)
        return _as_check(raw, self.spec)


def _load_function(spec: str) -> tuple[Callable, bool]:
    where, _, attr = spec.rpartition(":")
    fix = ("Fix: give checker=MODULE:FUNCTION for an importable module, or checker=path/to/file.py:FUNCTION "
           "(a path from the current folder)")
    if not where or not attr:
        raise ValueError(f"checker (={spec!r}) names no function. {fix}")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"checker (={spec!r}): no file {where} (looked in {path.resolve().parent}). {fix}")
        module_name = f"redumix_checker_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        try:
            sys.modules[module_name] = module
            loader_spec.loader.exec_module(module)
        except Exception as err:
            sys.modules.pop(module_name, None)
            raise ValueError(f"checker (={spec!r}): {where} failed to import: {_one_line(err)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as err:
            raise ValueError(f"checker (={spec!r}): module {where!r} cannot be imported ({_one_line(err)}). "
                             f"{fix}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        found = "has no" if fn is None else "has a non-callable"
        raise ValueError(f"checker (={spec!r}): {where} {found} {attr!r}. {fix}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn, False
    for count in (3, 2):
        try:
            signature.bind(*range(count))
        except TypeError:
            continue
        return fn, count == 3
    raise ValueError(f"checker (={spec!r}): {attr}{signature} must take (answer, gold) or (answer, gold, columns)")


def _as_check(raw: Any, spec: str) -> Check:
    """A user's function's result as a Check; ValueError for anything but a score in [0, 1] (and a message)."""
    message = ""
    if isinstance(raw, tuple | list) and len(raw) == 2 and isinstance(raw[1], str | None):
        raw, message = raw[0], raw[1] or ""
    if isinstance(raw, bool):
        return Check(float(raw), message)
    if isinstance(raw, numbers.Real):
        score = float(raw)
        if math.isfinite(score) and 0.0 <= score <= 1.0:
            return Check(score, message)
    raise ValueError(f"checker {spec!r} returned {_cut(repr(raw))}, not a score in [0, 1] or (score, message)")


# -- option values ---------------------------------------------------------------------


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"{key} (={value!r}) must be true or false")


def _non_negative(value: Any, key: str) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{key} (={value!r}) must be a finite number >= 0, e.g. {key}=0.01")
    return number


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _one_line(err: BaseException) -> str:
    text = " ".join(part.strip() for part in str(err).strip().splitlines() if part.strip())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
