"""What a method lets a sweep vary, declared as data.

A method names its grid parameters once, as `Axes`; work units, record keys, the record
grid, sweep config parsing, resuming and the summary's group columns are all computed
from these declarations, so none of those layers knows any one method's parameters.

- A *variant* axis is decoded together in one unit, sharing work: ReDuMix's lambdas
  share stages 1-3, self-consistency's sample counts share one set of samples. Each
  value is one record per problem, keyed by its variant ({"lambda": 0.5} -> "0.5",
  {"n": 4} -> "n=4").
- A *unit* axis gets one unit per value: ReDuMix's feedback policy (each policy writes
  other stages). Its value is the record key's last part and a record field.

Pure data and pure functions: nothing here loads a model or reads a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Axis:
    """One grid parameter of a method.

    Attributes:
        param: the config parameter it sets ("lam", "feedback", "n").
        record: for a variant axis, its name in variants and records ({"lambda": 0.5}); for a
            unit axis, the record field that holds the unit's value ("feedback_policy").
        sweep_key: the key of a sweep's decoder entry that lists its values beside `config`
            ("lambdas: [0, 0.5, 1]"); None: the values are listed inside `config` itself
            (`config: {n: [1, 4, 8]}`).
        kind: the type of one value (float, int or str); sweep lists are checked against it.
        column: the summary gets a column of its own named `record` (grouping and plotting by
            it); otherwise a variant shows in the shared `variant` column as "name=value". A unit
            axis always has a column.
        bare_key: the variant is keyed by its bare value ("0.5", not "lambda=0.5"), as stores
            written by earlier versions key it.
        example: a value for error messages ("[0, 0.5, 1]").
    """

    param: str
    record: str
    sweep_key: str | None = None
    kind: type = float
    column: bool = False
    bare_key: bool = False
    example: str = ""


@dataclass(frozen=True)
class Axes:
    """A method's grid: the axes it decodes together (`variants`) and one unit each (`units`)."""

    variants: tuple[Axis, ...] = ()
    units: tuple[Axis, ...] = ()

    def __post_init__(self) -> None:
        names = [a.param for a in (*self.variants, *self.units)]
        if len(set(names)) != len(names):
            raise ValueError(f"axes declare a parameter twice: {names}")
        for axis in self.units:
            if axis.sweep_key is None:
                raise ValueError(f"unit axis {axis.param!r} needs a sweep_key: sweeps list its values beside `config`")

    def listed_beside_config(self) -> dict[str, Axis]:
        """The axes a sweep entry lists beside `config`, by their key ({"lambdas": <lam axis>})."""
        return {a.sweep_key: a for a in (*self.variants, *self.units) if a.sweep_key}

    def variant_axis(self, param: str) -> Axis | None:
        return next((a for a in self.variants if a.param == param), None)


NO_AXES = Axes()


def variant_key(variant: Mapping[str, Any], bare: Iterable[str] = ()) -> str:
    """How records and skip sets name a variant: "-" for none, "name=value" (e.g. "n=4"), or the
    bare number for an axis in `bare` (as stores have always keyed ReDuMix's lambdas)."""
    if not variant:
        return "-"
    if len(variant) != 1:
        raise ValueError(f"a variant has at most one axis, got {dict(variant)!r}")
    (axis, value), = variant.items()
    return repr(float(value)) if axis in bare else f"{axis}={value}"


def unit_key(values: Mapping[str, Any]) -> str:
    """The record key's last part for a unit's axis values ({"feedback_policy": "binary"} -> "binary"):
    "-" with no unit axis, the bare value with one, "field=value" joined by ";" with several."""
    if not values:
        return "-"
    if len(values) == 1:
        return str(next(iter(values.values())))
    return ";".join(f"{name}={value}" for name, value in values.items())
