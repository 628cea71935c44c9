"""The one registry of ways of answering: name -> config class (and method), with typed config
parsing and did-you-mean errors.

A per-step decoder registers its dataclass (`register_decoder`); a method of several stages
registers its method class with its config (`register_method`). Every module of the
`decoders` package is imported on first lookup, so a new decoder or method folder registers
itself by existing; third-party packages register through `redumix.methods` entry points.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import pkgutil
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from harness.naming import did_you_mean, unknown_name_message

_DECODERS: dict[str, type] = {}  # name -> config dataclass
_METHODS: dict[str, type] = {}  # name -> method class, for methods of their own (several stages, models)
_CONTRIBUTES: dict[str, Any] = {}  # name -> what it adds to records and reports (harness.methods.contributions)
ENTRY_POINT_GROUP = "redumix.methods"  # third-party packages register decoders and methods here
_loaded = False
_version = 0  # bumped on every change, so what is computed from the registry can be cached


def version() -> int:
    """A number that changes whenever a name is registered or removed."""
    _load_builtin_decoders()
    return _version


def register_decoder(name: str, *, contributes: Any = None) -> Callable[[type], type]:
    """Class decorator: make a per-step decoder dataclass available as `name`.

    The class is the decoder and its fields are its config; it runs as a single pass (one
    engine call per batch). A way of answering that needs several engine calls or models
    registers its method class with `register_method` instead.

    `contributes`: a `harness.methods.contributions.Contributions` (record fields, summary
    columns, report figures), or None.
    """

    def add(cls: type) -> type:
        _check_new(name, cls)
        if not callable(getattr(cls, "step", None)):
            raise TypeError(f"decoder {name!r} ({cls.__qualname__}) has no step(): a per-step decoder chooses each "
                            "token; register a method of several stages with @register_method(name, config=...)")
        cls.name = name
        _DECODERS[name] = cls
        if contributes is not None:
            _CONTRIBUTES[name] = contributes
        return cls

    return add


def register_method(name: str, *, config: type, contributes: Any = None) -> Callable[[type], type]:
    """Class decorator: make a method class (`harness.methods.base.Method`) available as `name`,
    configured by the dataclass `config` (its fields are what `--decoder-config` and sweep
    configs set). Config and method are registered together, so a name is never found
    without the code that runs it."""

    def add(method: type) -> type:
        _check_new(name, config)
        config.name = name
        _DECODERS[name] = config
        _METHODS[name] = method
        if contributes is not None:
            _CONTRIBUTES[name] = contributes
        return method

    return add


def unregister(name: str) -> None:
    """Remove `name` (a decoder or method registered at run time, e.g. by a test)."""
    global _version
    _version += 1
    for table in (_DECODERS, _METHODS, _CONTRIBUTES):
        table.pop(name, None)


def _check_new(name: str, cls: type) -> None:
    global _version
    _version += 1
    if name in _DECODERS:
        raise ValueError(f"decoder {name!r} is already registered by {_DECODERS[name]!r}; pick another name")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"decoder {name!r} must be a dataclass (its fields are its config)")


def available_decoders() -> list[str]:
    _load_builtin_decoders()
    return sorted(_DECODERS)


def decoder_class(name: str) -> type:
    _load_builtin_decoders()
    if name not in _DECODERS:
        raise ValueError(unknown_name_message("decoder", name, _DECODERS))
    return _DECODERS[name]


def method_class(name: str) -> type:
    """The class that runs `name`: its registered method, or `SinglePass` for a per-step decoder."""
    decoder_class(name)
    if name in _METHODS:
        return _METHODS[name]
    from harness.methods.single_pass import SinglePass

    return SinglePass


def contract_config(name: str) -> dict[str, str]:
    """The settings the contract tests (every registered decoder and method) run `name` with on a
    tiny model: its class's `contract_config`, or its defaults ({})."""
    return dict(getattr(decoder_class(name), "contract_config", {}))


def contributions(name: str) -> Any:
    """What `name` adds to records and reports (None: nothing beyond every method's fields)."""
    decoder_class(name)
    return _CONTRIBUTES.get(name)


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
            raise ValueError(f"Unknown parameter {key!r} for decoder {name!r}.{did_you_mean(key, fields)} "
                             f"Parameters: {', '.join(sorted(fields)) or '(none)'}")
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
    """Import every module of this package (their decorators register them), then every
    third-party package's `redumix.methods` entry point; once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import decoders

    for module in pkgutil.iter_modules(decoders.__path__):
        importlib.import_module(f"decoders.{module.name}")
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as err:  # a plugin's own bug: say which one, not a traceback
            raise ValueError(f"the {ENTRY_POINT_GROUP} entry point {entry.name!r} ({entry.value}) failed to load: "
                             f"{type(err).__name__}: {err}; fix or uninstall the package that provides it") from None
