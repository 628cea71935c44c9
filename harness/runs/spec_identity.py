"""When a folder's stored identity (spec.json) and a config's resolved one ask for the same records."""

from __future__ import annotations


def same_identity(stored, resolved) -> bool:
    """Whether a stored identity and a resolved one ask for the same records. A setting stored as
    null and one left out are the same: a decoder entry lists only the grid keys its own method
    declares, where specs of earlier versions listed every known grid key, null when unused."""
    return _without_nulls(stored) == _without_nulls(resolved)


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
