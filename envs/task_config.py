"""Turn user-supplied task config overrides into a reasoning-gym Config dataclass.

Overrides may come from a command line as strings ("2", "0.5", "true", "('+','-')",
"+,-") or from YAML/Python as real values; each is coerced to the type annotated on the
task's Config field. Sequences accept a Python/JSON literal ("[0.5, 0.5]", "('+','-')")
or a comma-separated list ("+,-"); Optional fields accept "none"/"null"; enum fields
accept a member's value or name; dates accept ISO strings; nested dataclasses accept a
dict. The output of `config_to_dict` coerces back to the same config, so a recorded
config can be passed to `get_env(name, **config)` again.
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import datetime
import enum
import json
import types
import typing
from typing import Any

from harness.naming import did_you_mean

from .jsonable import to_jsonable

# Set by `ReasoningGymEnv.problems(seed=...)`, so a config key would be silently ignored.
ADAPTER_OWNED_KEYS = ("seed",)

_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}
_NONE = {"none", "null", "~"}


class CoercionError(ValueError):
    """A value that does not fit a field's type; the message says what was expected."""


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    """The settable fields of a Config dataclass, by name (adapter-owned keys left out)."""
    return {
        f.name: f
        for f in dataclasses.fields(config_cls)
        if f.init and f.name not in ADAPTER_OWNED_KEYS
    }


def build_config(task: str, config_cls: type, overrides: dict[str, Any]) -> Any:
    """Coerce `overrides`, build the Config and run its validate().

    Args:
        task: Task name, for error messages.
        config_cls: The task's Config dataclass.
        overrides: Field name -> value (strings are parsed, see the module docstring).

    Returns:
        The validated Config instance (seed left at its default).

    Raises:
        ValueError: Unknown key (with did-you-mean), a value of the wrong type, or a config
            the task's validate() rejects.
    """
    fields = config_fields(config_cls)
    hints = _type_hints(config_cls)
    coerced: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in ADAPTER_OWNED_KEYS:
            raise ValueError(
                f"Config key {key!r} for environment {task!r} is not a task setting: the "
                f"seed is chosen per call. Fix: drop {key}={value!r} and pass "
                f"env.problems(n, seed={value!r})."
            )
        if key not in fields:
            raise ValueError(unknown_key_message(task, key, fields))
        f = fields[key]
        try:
            coerced[key] = _coerce_field(value, hints.get(key, Any), _default_of(f))
        except CoercionError as e:
            raise ValueError(
                f"Invalid value {value!r} for config key {key!r} of environment {task!r}: {e}. "
                f"Fix: pass a value of type {_type_name(hints.get(key, Any))}, "
                f"e.g. {key}={_example(f)}."
            ) from None
    try:
        config = config_cls(**coerced)
        if hasattr(config, "validate"):
            config.validate()
    except Exception as e:  # validate() uses bare asserts; some __post_init__ raise others
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise ValueError(
            f"Invalid config for environment {task!r}: {reason} "
            f"(overrides: {_show(overrides)}). Fix: change the values so the task accepts them."
        ) from None
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """The Config as JSON types, adapter-owned keys (seed) left out."""
    return {name: to_jsonable(getattr(config, name)) for name in config_fields(type(config))}


def unknown_key_message(task: str, key: str, fields: typing.Iterable[str]) -> str:
    """The unknown-key error text, with the closest valid keys and the full list."""
    valid = sorted(fields)
    return (
        f"Unknown config key {key!r} for environment {task!r}.{did_you_mean(key, valid)} "
        f"Valid keys: {', '.join(valid)}"
    )


def _coerce_field(value: Any, tp: Any, default: Any) -> Any:
    """`coerce`, tolerating Config annotations that disagree with their own defaults."""
    if type(value) is type(default) and value == default:
        # Keeps round trips exact, e.g. intermediate_integration's `symbols: tuple = "x"`.
        return default
    try:
        return coerce(value, tp, default)
    except CoercionError:
        # rearc annotates `diff_ub: int = 0.2`: fall back to the default's numeric type.
        if tp in (int, float) and type(default) in (int, float) and type(default) is not tp:
            try:
                return coerce(value, type(default), default)
            except CoercionError:
                pass
        raise


def coerce(value: Any, tp: Any, default: Any = dataclasses.MISSING) -> Any:
    """`value` converted to annotation `tp`.

    Args:
        value: A string from a command line, or an already-typed value.
        tp: The field's type annotation.
        default: The field's default; a bare `tuple` annotation takes its element type and
            sequences their container type (list vs tuple) from it.

    Raises:
        CoercionError: The value does not fit.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Any:
        return _literal(value) if isinstance(value, str) else value

    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in args if a is not type(None)]
        if len(options) < len(args) and _is_none(value):
            return None
        reasons = []
        for option in options:
            try:
                return coerce(value, option, default)
            except CoercionError as e:
                reasons.append(str(e))
        raise CoercionError("; ".join(reasons))

    if origin is typing.Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and value == str(choice)):
                return choice
        raise CoercionError(f"expected one of {', '.join(map(repr, args))}")

    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _coerce_enum(value, tp)
    if tp is bool:
        return _coerce_bool(value)
    if tp is int:
        return _coerce_int(value)
    if tp is float:
        return _coerce_float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise CoercionError(f"expected a string, got {type(value).__name__}")

    if tp in (list, tuple) or origin in (list, tuple, collections.abc.Sequence):
        return _coerce_sequence(value, tp, origin, args, default)

    if tp is dict or origin is dict:
        parsed = _literal(value) if isinstance(value, str) else value
        if not isinstance(parsed, dict):
            raise CoercionError("expected a dict literal such as {'a': 1}")
        return parsed

    if tp in (datetime.date, datetime.time, datetime.datetime):
        if isinstance(value, tp):
            return value
        if isinstance(value, str):
            try:
                return tp.fromisoformat(value.strip())
            except ValueError as e:
                raise CoercionError(f"expected an ISO {tp.__name__} ({e})") from None
        raise CoercionError(f"expected an ISO {tp.__name__} string")

    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        parsed = _literal(value) if isinstance(value, str) else value
        if isinstance(parsed, dict):
            try:
                return tp(**parsed)
            except TypeError as e:
                raise CoercionError(f"cannot build {tp.__name__} from {parsed!r}: {e}") from None
        raise CoercionError(f"expected a {tp.__name__} or a dict of its fields")

    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise CoercionError(f"cannot set a field of type {_type_name(tp)} from {value!r}")


def _coerce_sequence(value: Any, tp: Any, origin: Any, args: tuple, default: Any) -> Any:
    if isinstance(value, str):
        items = _split_sequence(value)
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        raise CoercionError(f"expected a list such as '+,-' or \"('+', '-')\", got {value!r}")

    container_origin = origin or tp
    if container_origin is tuple and len(args) > 1 and args[1] is not Ellipsis:
        # Fixed-length tuple such as tuple[float, float]. A one-argument tuple[str] falls
        # through: polynomial_multiplication writes it for a tuple of any length.
        if len(items) != len(args):
            raise CoercionError(f"expected exactly {len(args)} items, got {len(items)}")
        return tuple(coerce(v, a) for v, a in zip(items, args, strict=True))

    if args:
        element = args[0]
    else:
        element = _element_type_of(default)
    out = [coerce(v, element) for v in items]

    # Keep the container the task's own default uses: several Configs annotate list[str]
    # but default to a tuple, and their code may rely on either.
    if isinstance(default, list | tuple):
        return type(default)(out)
    return list(out) if container_origin is list else tuple(out)


def _split_sequence(text: str) -> list[Any]:
    """Items of a list literal ("('+','-')", "[0.5, 0.5]") or a comma list ("+,-")."""
    stripped = text.strip()
    if not stripped:
        return []
    if stripped[0] in "([{":
        parsed = _literal(stripped)
        if isinstance(parsed, str):
            raise CoercionError(f"could not parse {text!r} as a list literal")
        if isinstance(parsed, list | tuple | set | frozenset):
            return list(parsed)
        return [parsed]
    # A plain comma-separated list; empty pieces ("a,,b", trailing comma) are dropped.
    return [piece.strip() for piece in stripped.split(",") if piece.strip()]


def _element_type_of(default: Any) -> Any:
    """Element type of a bare `tuple` annotation, read off the default's items."""
    if isinstance(default, list | tuple) and default:
        kinds = {type(v) for v in default}
        if len(kinds) == 1:
            return kinds.pop()
    if isinstance(default, str):
        return str  # intermediate_integration: `symbols: tuple = "x"`
    return Any


def _literal(text: str) -> Any:
    """Python or JSON literal; a string that is neither stays a string."""
    for parse in (ast.literal_eval, json.loads):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise CoercionError("expected a boolean: true/false, yes/no, on/off or 1/0")


def _coerce_int(value: Any) -> int:
    if isinstance(value, bool):
        raise CoercionError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            pass
    raise CoercionError("expected an integer")


def _coerce_float(value: Any) -> float:
    if isinstance(value, bool):
        raise CoercionError("expected a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise CoercionError("expected a number")


def _coerce_enum(value: Any, tp: type[enum.Enum]) -> enum.Enum:
    if isinstance(value, tp):
        return value
    for member in tp:
        if value == member.value or (
            isinstance(value, str)
            and value.strip().lower() in (str(member.value).lower(), member.name.lower())
        ):
            return member
    raise CoercionError(f"expected one of {', '.join(repr(m.value) for m in tp)}")


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE)


def _type_hints(config_cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # an unresolvable forward reference: fall back to the raw strings
        return {}


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _example(f: dataclasses.Field) -> str:
    default = _default_of(f)
    if default is dataclasses.MISSING:
        return "<value>"
    return repr(to_jsonable(default))


def _show(overrides: dict[str, Any]) -> str:
    if not overrides:
        return "none, i.e. the task's defaults"
    return ", ".join(f"{k}={v!r}" for k, v in overrides.items())
