"""What a line of samples.jsonl must hold to count as a record.

Reading is strict: a line that is not a JSON object with these fields, of these
types, is skipped and reported, never counted. Pure functions of the parsed line.
"""

from __future__ import annotations

from typing import Any

_NUMBER = (int, float)

# Every record (`redumix run` and `redumix sweep`): who answered what, and how it scored.
RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "env": str,
    "problem_id": str,
    "decoder": str,
    "model": str,
    "seed": int,
    "completion": str,
    "score": _NUMBER,
    "correct": bool,
    "new_tokens": int,
    "latency_s": _NUMBER,
    "decode_s": _NUMBER,
}
# Added by sweeps: the record's identity and the labels the report groups by.
SWEEP_FIELDS: dict[str, type | tuple[type, ...]] = {
    "key": str,
    "env_label": str,
    "decoder_label": str,
    "cost_s": _NUMBER,
}
# Present only on some records, but typed when present. A method's own fields are typed by its
# declarations (`method_fields`).
OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "variant": dict,
    "reused_s": _NUMBER,
    "format_ok": bool,
    "dtype": str,  # the dtype the model ran in; records written before it was recorded lack it
    "batch_invariant": bool,  # whether rows computed as they would alone; older records lack it (off)
    "columns": dict,  # a problem file's other columns (envs.file_dataset)
}


def record_problem(value: Any, sweep: bool) -> str | None:
    """Why `value` (one parsed JSON line) is not a record; None when it is one.

    `sweep`: the folder is a sweep's, so the sweep fields are required too.
    """
    if not isinstance(value, dict):
        return f"not a record (a JSON {_json_kind(value)}, not an object)"
    required = RECORD_FIELDS | (SWEEP_FIELDS if sweep else {})
    missing = [name for name in required if name not in value]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        return f"not a record (missing {shown})"
    optional = OPTIONAL_FIELDS | method_fields(value["decoder"])
    for name, kind in (required | optional).items():
        if name in value and not _is(value[name], kind, optional=name in optional):
            return f"not a record ({name} = {_short(value[name])} is not {_kind_name(kind)})"
    variant = value.get("variant")
    if isinstance(variant, dict) and (len(variant) > 1 or not all(
            isinstance(v, _NUMBER) and not isinstance(v, bool) for v in variant.values())):
        return f"not a record (variant = {_short(variant)} is not one axis with a number, e.g. {{\"n\": 4}})"
    return None


def method_fields(decoder: str) -> dict[str, type | tuple[type, ...]]:
    """The typed fields records of method `decoder` may carry: its declared record fields, its
    variant names and its unit axes' fields (nothing for a name no longer registered)."""
    if not isinstance(decoder, str):
        return {}  # the record is refused for its decoder field anyway
    from decoders.registry import version

    key = (decoder, version())
    if key not in _FIELDS_CACHE:
        _FIELDS_CACHE[key] = _declared_fields(decoder)
    return _FIELDS_CACHE[key]


_FIELDS_CACHE: dict[tuple[str, int], dict] = {}


def _declared_fields(decoder: str) -> dict[str, type | tuple[type, ...]]:
    from harness.methods.registry import axes_of, contributions_of

    fields = dict(contributions_of(decoder).record_fields)
    try:
        axes = axes_of(decoder)
    except ValueError:
        return fields
    for axis in (*axes.variants, *axes.units):
        fields.setdefault(axis.record, _NUMBER if axis.kind in (int, float) else axis.kind)
    return fields


def _is(value: Any, kind, optional: bool) -> bool:
    if value is None:
        return optional
    if isinstance(value, bool) and kind is not bool:
        return False  # JSON true is not a seed or a score
    return isinstance(value, kind)


def _kind_name(kind) -> str:
    if kind == _NUMBER:
        return "a number"
    names = {str: "a string", int: "an integer", bool: "true or false", dict: "an object", list: "a list"}
    return names.get(kind, " or ".join(names.get(k, getattr(k, "__name__", str(k))) for k in kind)
                     if isinstance(kind, tuple) else getattr(kind, "__name__", str(kind)))


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
