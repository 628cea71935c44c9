"""Name -> decoder class registry, with typed config parsing and did-you-mean errors."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from harness.naming import closest, unknown_name_message

_DECODERS: dict[str, type] = {}


def register_decoder(name: str) -> Callable[[type], type]:
    """Class decorator: make a dataclass decoder available as `name`."""

    def add(cls: type) -> type:
        if name in _DECODERS:
            raise ValueError(f"decoder {name!r} is already registered by {_DECODERS[name]!r}")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"decoder {name!r} must be a dataclass (its fields are its config)")
        cls.name = name
        _DECODERS[name] = cls
        return cls

    return add


def available_decoders() -> list[str]:
    _load_builtin_decoders()
    return sorted(_DECODERS)


def decoder_class(name: str) -> type:
    _load_builtin_decoders()
    if name not in _DECODERS:
        raise ValueError(unknown_name_message("decoder", name, _DECODERS))
    return _DECODERS[name]


def get_decoder(name: str, **config: Any):
    """Build decoder `name` from keyword config; string values are parsed to the field type.

    Raises:
        ValueError: unknown decoder or parameter (with the closest match), or a value
            that fails the decoder's validation (naming parameter, value and fix).
    """
    cls = decoder_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in config.items():
        if key not in fields:
            guesses = closest(key, fields)
            hint = f" Did you mean: {', '.join(guesses)}?" if guesses else ""
            raise ValueError(
                f"Unknown parameter {key!r} for decoder {name!r}.{hint} "
                f"Parameters: {', '.join(sorted(fields)) or '(none)'}"
            )
        kwargs[key] = parse_value(key, value, _resolved_type(cls, key))
    return cls(**kwargs)


def takes_list(name: str, field: str) -> bool:
    """Whether decoder `name`'s parameter `field` accepts a list of values (its variants, e.g.
    redumix's lam, gumbel's tau, self_consistency's n)."""
    annotation = _resolved_type(decoder_class(name), field)
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return any(_tuple_item(kind) is not None for kind in options)


def _resolved_type(cls: type, field: str) -> Any:
    return typing.get_type_hints(cls).get(field, str)


def parse_value(key: str, value: Any, annotation: Any) -> Any:
    """Coerce a command-line string to the annotated type; other values pass through."""
    if not isinstance(value, str):
        return value
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    if type(None) in options and value.lower() in ("none", "null", ""):
        return None
    for kind in options:
        if kind is bool:
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
        elif kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
        elif kind is str:
            return value
        elif _tuple_item(kind) is not None:
            # "0,0.5,1" -> (0.0, 0.5, 1.0); "" -> () (the decoder decides whether empty is allowed)
            try:
                return tuple(_tuple_item(kind)(part) for part in value.split(",") if part.strip())
            except ValueError:
                continue
    names = " or ".join(
        f"comma-separated list of {_tuple_item(k).__name__}s" if _tuple_item(k) is not None
        else getattr(k, "__name__", str(k)) for k in options
    )
    raise ValueError(f"{key} (={value!r}) is not a valid {names}; write e.g. {key}=1")


def _tuple_item(annotation: Any) -> type | None:
    """The item type of tuple[float, ...] or tuple[int, ...]; None for anything else."""
    if typing.get_origin(annotation) is tuple and typing.get_args(annotation) in ((float, ...), (int, ...)):
        return typing.get_args(annotation)[0]
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def parse_key_values(items: list[str] | None, what: str) -> dict[str, str]:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}; a malformed item names the option."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in _split_top_level(item):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{what} item {part!r} is not key=value; write e.g. {what} temperature=0.7")
            key, value = key.strip(), value.strip()
            if out.get(key, value) != value:
                raise ValueError(f"{what} gives {key} twice ({key}={out[key]} and {key}={value}); give it once")
            out[key] = value
    return out


def _split_top_level(item: str) -> list[str]:
    """Split 'a=1,b=2' on commas that start a new key=value (so 'lam=0,0.5,1' stays whole)."""
    parts: list[str] = []
    for piece in item.split(","):
        if parts and "=" not in piece:
            parts[-1] += "," + piece
        else:
            parts.append(piece)
    return [p for p in parts if p.strip()]


def as_mapping(decoder) -> Mapping[str, Any]:
    return dataclasses.asdict(decoder)


def _load_builtin_decoders() -> None:
    # Importing the modules runs their @register_decoder decorators.
    from decoders import dera, greedy, gumbel, redumix, sample, self_consistency, soft  # noqa: F401
