"""Name -> method, through the one registry of `decoders.registry`: a registered method class
runs its own config; a per-step decoder runs as a `SinglePass`. A name registered nowhere is
an error with a did-you-mean, never a silent fallback."""

from __future__ import annotations

from typing import Any

from decoders import get_decoder
from decoders.registry import available_decoders, contributions, method_class
from decoders.registry import version as registry_version
from harness.methods.axes import Axes, Axis
from harness.methods.base import Method
from harness.methods.contributions import NOTHING, Contributions


def get_method(name: str, **config: Any) -> Method:
    """The method `name` with `config` (string values parsed; errors name the parameter and the fix)."""
    return method_of(get_decoder(name, **config))


def method_of(decoder) -> Method:
    """The method that runs an already built decoder config."""
    return method_class(decoder.name)(decoder)


def axes_of(name: str) -> Axes:
    """The grid parameters method `name` declares (see `harness.methods.axes`)."""
    from decoders.registry import decoder_class

    return method_class(name).axes(decoder_class(name))


def contributions_of(name: str) -> Contributions:
    """What method `name` adds to records and reports (`NOTHING` for an unknown name, e.g. in an old folder)."""
    if name not in available_decoders():
        return NOTHING
    return contributions(name) or NOTHING


def _with_columns(axes: Axes) -> list[Axis]:
    """The axes with a summary column: variants that ask for one, and every unit axis (a unit's
    records are a group of their own)."""
    return [a for a in axes.variants if a.column] + list(axes.units)


def registered_axes() -> list[Axis]:
    """Every axis any registered method declares, variants then units, in name order (each once)."""
    if _axes_cache[0] != registry_version():
        _axes_cache[:] = [registry_version(), _collect_axes()]
    return _axes_cache[1]


_axes_cache: list = [None, []]


def _collect_axes() -> list[Axis]:
    out: dict[tuple, Axis] = {}
    for name in available_decoders():
        axes = axes_of(name)
        for axis in (*axes.variants, *axes.units):
            out.setdefault((axis.record, axis.param), axis)
    return list(out.values())


def bare_variant_names() -> frozenset[str]:
    """Variant names keyed by their bare value (see `Axis.bare_key`)."""
    return frozenset(a.record for a in registered_axes() if a.bare_key)


def column_axes() -> list[str]:
    """Record fields that are summary group columns of their own (`Axis.column`), each once."""
    if _columns_cache[0] != registry_version():
        columns = dict.fromkeys(a.record for name in available_decoders() for a in _with_columns(axes_of(name)))
        _columns_cache[:] = [registry_version(), list(columns)]
    return list(_columns_cache[1])


_columns_cache: list = [None, []]
