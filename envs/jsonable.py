"""Convert task metadata and configs to plain JSON types.

reasoning-gym metadata holds tuples (nearly every task's `difficulty`), int dict keys
(graph_color), `fractions.Fraction` (gsm_symbolic), numpy scalars (codeio, knights_knaves),
enums, dates and dataclasses (configs). Results and spec files must be plain JSON.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from decimal import Decimal
from fractions import Fraction
from typing import Any


def to_jsonable(value: Any) -> Any:
    """`value` rebuilt from dict/list/str/int/float/bool/None only.

    Tuples and sets become lists (sets sorted when possible), dict keys become strings,
    enums their value, dates ISO strings, dataclasses dicts, numpy values Python values,
    and anything else unknown its `str()`.
    """
    # Enums first: StrEnum/IntEnum members are also str/int but should record their value.
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str(value)  # numpy.str_ and other str subclasses become plain str
    if isinstance(value, dict):
        return {_key(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [to_jsonable(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Fraction | Decimal):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy
        return to_jsonable(value.tolist())
    return str(value)


def _key(key: Any) -> str:
    """JSON object keys must be strings; json.dumps would turn 3 into "3" anyway."""
    converted = to_jsonable(key)
    return converted if isinstance(converted, str) else str(converted)
