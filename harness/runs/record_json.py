"""Records as JSON text: finite numbers only, nesting kept shallow.

JSON has no NaN or infinities; Python writes them as `NaN` and `Infinity`, which other
readers refuse and which turn a summary's means and percentiles into NaN. So a record is
written with every non-finite number as null, and a line that holds one anyway (written by
another tool, or by hand) is not a record. A line nested deeper than any record is (e.g.
`[[[[...]]]]` a hundred thousand deep) would exhaust the parser's or a later reader's
recursion; it is not a record either. Pure functions.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Records nest a few levels (a record, its steps, a list of per-step values); this is far beyond.
MAX_DEPTH = 64
# Besides NaN and Infinity (refused by the parser itself), only a float literal with an exponent
# of three digits can be beyond the float range (1e999): lines without one skip the walk.
_LARGE_EXPONENT = re.compile(rb"[eE]\+?\d\d\d")


class _NotFinite(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _NotFinite(name)


def dumps_record(record: dict) -> str:
    """One line of JSON (no newline) for `record`, with every non-finite number written as null."""
    return json.dumps(finite(record), ensure_ascii=False, allow_nan=False)


def finite(value: Any) -> Any:
    """`value` with every float that is NaN or infinite replaced by None (containers copied)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def loads_line(raw: bytes) -> tuple[Any, str | None]:
    """(value, None) for a line of UTF-8 JSON that is finite and shallow; else (None, why not)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text (byte {err.start + 1})"
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        return None, f"not JSON ({err.msg}, column {err.colno})"
    except _NotFinite as err:  # parsed again to name the field (a rare line; the common one parses once)
        return None, f"not a record ({shape_problem(json.loads(text)) or f'{err} is not a finite number'})"
    except RecursionError:
        return None, f"not a record (nested deeper than {MAX_DEPTH} levels)"
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        return None, f"not JSON ({str(err).split(':', 1)[0]})"
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets > MAX_DEPTH or _LARGE_EXPONENT.search(raw):
        problem = shape_problem(value)
        if problem is not None:
            return None, f"not a record ({problem})"
    return value, None


def shape_problem(value: Any) -> str | None:
    """Why a parsed value cannot be a record's content: nested deeper than MAX_DEPTH, or a
    number that is not finite (named by its field); None when neither."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"{path or 'the value'} = {item} is not a finite number"
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if isinstance(child, dict | list | float):
                    stack.append((child, depth + 1, _child_path(path, key)))
    return None


def _child_path(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)
