"""Environments by name, offered by environment *families*.

A family is one source of environments: reasoning-gym's tasks (built in, registered in
`envs.reasoning_gym_env`) or a third-party package's. It is an object with

* ``names()``: the environment names it offers, e.g. ["basic_arithmetic", ...];
* ``make(name, extraction=..., **config)``: the `Env` called `name` with config overrides
  (`extraction` is the answer-extraction mode of `envs.answer`, always passed);
* ``description``: one line saying what its environments are (optional);
* ``unsupported()``: optional, name -> reason for names it knowingly refuses;
* ``accepts(name)``: optional, whether it takes a name that `names()` cannot list (the `file`
  family takes every ``file:PATH``, `envs.file_dataset`). Listed names come first; two families
  accepting one name is an error naming both.

It joins with `register_env_family(name, family)`. Third-party packages declare an entry
point in the group ``redumix.envs`` (see docs/extending.md); they are loaded on the first
lookup. Environment names are global: `get_env("basic_arithmetic")` needs no family name,
and two families offering the same name is an error naming both.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

from harness.naming import unknown_name_message

from .base import Env

ENTRY_POINT_GROUP = "redumix.envs"
BUILT_IN = "built in"
# Modules whose import registers the built-in families: add a new built-in family's module here.
BUILTIN_FAMILY_MODULES = ("envs.reasoning_gym_env", "envs.file_dataset")


@runtime_checkable
class EnvFamily(Protocol):
    """A source of environments (see the module docstring)."""

    def names(self) -> Iterable[str]:
        """The environment names this family offers."""
        ...

    def make(self, name: str, /, **config: Any) -> Env:
        """The environment `name`; `config` holds `extraction` and the config overrides."""
        ...


class EnvPluginError(ValueError):
    """A third-party environment family that cannot be loaded or used (one-line message)."""


@dataclass(frozen=True)
class EnvFamilyInfo:
    """One registered family as `env_families` lists it."""

    name: str
    description: str
    origin: str  # "built in", or the entry point and distribution it came from
    envs: tuple[str, ...]
    family: Any


# Registry state; `isolated_env_registry` saves and restores all of it.
_LOCK = threading.RLock()
_families: dict[str, Any] = {}  # family name -> family
_origins: dict[str, str] = {}  # family name -> where it came from
_index: dict[str, str] | None = None  # env name -> family name, rebuilt after any change
_plugins_loaded = False
_loaded_entry_points: set[str] = set()  # "name = value" of each entry point loaded
_loading: str | None = None  # the origin of the entry point being loaded


def register_env_family(name: str, family: Any) -> Any:
    """Offer `family`'s environments under the family name `name`; returns `family`.

    Registering the same object again under the same name does nothing.

    Raises:
        TypeError: `family` has no callable `names` and `make`.
        ValueError: Another family is registered as `name`.
    """
    global _index
    if not isinstance(name, str) or not name:
        raise TypeError(f"An environment family name must be a non-empty string, got {name!r}")
    if not _is_family(family):
        raise TypeError(
            f"Environment family {name!r} must have callable names() and make(name, **config); "
            f"got {type(family).__name__}"
        )
    with _LOCK:
        if name in _families:
            if _families[name] is family:
                return family
            raise ValueError(
                f"Environment family {name!r} is already registered ({_origins[name]}). "
                "Fix: give the new family another name."
            )
        _families[name] = family
        _origins[name] = _loading or BUILT_IN
        _index = None
    return family


def unregister_env_family(name: str) -> Any:
    """Remove the family `name` (its environments are no longer found); returns it.

    Raises:
        ValueError: No family is registered as `name` (with did-you-mean).
    """
    global _index
    with _LOCK:
        if name not in _families:
            raise ValueError(unknown_name_message("environment family", name, _families))
        _origins.pop(name)
        _index = None
        return _families.pop(name)


@contextlib.contextmanager
def registered_env_family(name: str, family: Any) -> Iterator[Any]:
    """`register_env_family` for the duration of a `with` block, e.g. in a test."""
    register_env_family(name, family)
    try:
        yield family
    finally:
        with _LOCK:
            if _families.get(name) is family:
                unregister_env_family(name)


@contextlib.contextmanager
def isolated_env_registry() -> Iterator[None]:
    """Forget, on leaving the block, every family registered and plugin loaded inside it (for
    tests: entry points are looked up again at the first lookup inside the block too)."""
    global _families, _origins, _index, _plugins_loaded, _loaded_entry_points
    _ensure_builtins()
    with _LOCK:
        saved = (dict(_families), dict(_origins), set(_loaded_entry_points), _plugins_loaded)
        _plugins_loaded = False
        _index = None
    try:
        yield
    finally:
        with _LOCK:
            _families, _origins, _loaded_entry_points, _plugins_loaded = saved
            _index = None


def load_env_plugins() -> None:
    """Load the entry points of group `redumix.envs` not loaded yet (done at the first lookup;
    call it again after installing a plugin into a running process).

    Raises:
        EnvPluginError: An entry point fails to load or names no environment family.
    """
    global _plugins_loaded
    _ensure_builtins()
    with _LOCK:
        for entry_point in _entry_points():
            key = f"{entry_point.name} = {entry_point.value}"
            if key not in _loaded_entry_points:
                _load_entry_point(entry_point)
                _loaded_entry_points.add(key)
        _plugins_loaded = True


def env_families() -> list[EnvFamilyInfo]:
    """Every registered family with its environments, by family name."""
    index = _env_index()
    return [
        EnvFamilyInfo(
            name=name,
            description=_description(family),
            origin=_origins[name],
            envs=tuple(sorted(env for env, owner in index.items() if owner == name)),
            family=family,
        )
        for name, family in sorted(_families.items())
    ]


def family_of(env: str) -> str:
    """The name of the family offering environment `env`.

    Raises:
        ValueError: Unknown environment (with did-you-mean).
    """
    family_name = _family_for(env)
    if family_name is None:
        raise ValueError(unknown_name_message("environment", env, _env_index()))
    return family_name


def available_envs() -> list[str]:
    """Sorted names of every family's environments (names a family accepts without listing them,
    such as `file:PATH`, are not among them: see `is_env_name`)."""
    return sorted(_env_index())


def is_env_name(name: str) -> bool:
    """Whether `get_env` knows `name`: a listed name, or one a family accepts (`file:PATH`)."""
    return _family_for(name) is not None


def get_env(name: str, /, *, extraction: str = "strict", **config: Any) -> Env:
    """The environment `name` with config overrides, from the family that offers it.

    Args:
        name: An environment name, e.g. "basic_arithmetic" (see `available_envs`).
        **config: The environment's config fields. For reasoning-gym tasks: Config fields,
            strings coerced to the field types (e.g. min_terms="2", operators="+,-"); `size`
            is the pool size for the two size-dependent tasks; `seed` is not accepted (pass
            it to `problems`).
        extraction: "strict" (only <answer> tags count, the default) or "flexible"
            (falls back to an "answer is" phrase, then the last number; see `envs.answer`).

    Raises:
        ValueError: Unknown or unsupported name (with did-you-mean), unknown config key,
            a value of the wrong type, or a config the environment rejects.
        EnvPluginError (a ValueError): A plugin family that cannot be loaded, two families
            offering one name, or a family building something that is not that environment.
    """
    family_name = _family_for(name)
    if family_name is None:
        index = _env_index()
        reason = _unsupported_reason(name)
        if reason is not None:
            raise ValueError(
                f"Environment {name!r} is not supported: {reason}. Available: {', '.join(sorted(index))}"
            )
        raise ValueError(unknown_name_message("environment", name, index))
    env = _families[family_name].make(name, extraction=extraction, **config)
    if not isinstance(env, Env) or env.name != name:
        what = f"environment {env.name!r}" if isinstance(env, Env) else type(env).__name__
        raise EnvPluginError(
            f"Environment family {family_name!r} ({_origins[family_name]}) built {what} when asked "
            f"for {name!r}. Fix: its make() must return an Env (see envs.base) named {name!r}."
        )
    return env


# -- internals -----------------------------------------------------------------------


def _is_family(obj: Any) -> bool:
    return callable(getattr(obj, "names", None)) and callable(getattr(obj, "make", None))


def _description(family: Any) -> str:
    text = getattr(family, "description", None) or (getattr(family, "__doc__", None) or "")
    return " ".join(str(text).strip().splitlines()[0].split()) if str(text).strip() else ""


def _ensure_builtins() -> None:
    for module in BUILTIN_FAMILY_MODULES:
        importlib.import_module(module)


def _env_index() -> dict[str, str]:
    """env name -> family name, loading plugins first; checks that no name has two families."""
    global _index
    if not _plugins_loaded:
        load_env_plugins()
    with _LOCK:
        if _index is not None:
            return _index
        index: dict[str, str] = {}
        for family_name in sorted(_families):
            for env in _family_names(family_name):
                other = index.setdefault(env, family_name)
                if other != family_name:
                    raise EnvPluginError(
                        f"Environment {env!r} is offered by two families: {other!r} ({_origins[other]}) "
                        f"and {family_name!r} ({_origins[family_name]}). Fix: uninstall the package of one "
                        "of them, or have one of them rename its environment."
                    )
        _index = index
        return index


def _family_for(name: str) -> str | None:
    """The family offering `name`: the one that lists it, else the one that accepts it."""
    index = _env_index()
    if name in index:
        return index[name]
    with _LOCK:
        takers = [family_name for family_name, family in sorted(_families.items())
                  if callable(getattr(family, "accepts", None)) and family.accepts(name)]
    if len(takers) > 1:
        raise EnvPluginError(
            f"Environment {name!r} is accepted by two families: {takers[0]!r} ({_origins[takers[0]]}) and "
            f"{takers[1]!r} ({_origins[takers[1]]}). Fix: uninstall the package of one of them."
        )
    return takers[0] if takers else None


def _family_names(family_name: str) -> list[str]:
    family, origin = _families[family_name], _origins[family_name]
    if origin == BUILT_IN:
        names = list(family.names())
    else:
        try:
            names = list(family.names())
        except Exception as err:
            raise EnvPluginError(
                f"Environment family {family_name!r} ({origin}) failed to list its environments: "
                f"{_one_line(err)}. Fix: {_reinstall_fix(origin)}"
            ) from err
    bad = [env for env in names if not isinstance(env, str) or not env]
    if bad:
        raise EnvPluginError(
            f"Environment family {family_name!r} ({origin}) offers names that are not non-empty "
            f"strings: {bad[:3]!r}. Fix: its names() must return strings."
        )
    return names


def _unsupported_reason(name: str) -> str | None:
    for family in _families.values():
        unsupported = getattr(family, "unsupported", None)
        reasons: Mapping[str, str] = unsupported() if callable(unsupported) else {}
        if name in reasons:
            return reasons[name]
    return None


def _entry_points() -> list[metadata.EntryPoint]:
    # Looked up through the module at call time, so that tests can replace it.
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name, ep.value))


def _entry_point_origin(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    where = f" of {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point '{entry_point.name} = {entry_point.value}'{where}"


def _distribution(origin: str) -> str | None:
    head, sep, tail = origin.rpartition("' of ")
    return tail.rsplit(" ", 1)[0] if sep else None


def _reinstall_fix(origin: str) -> str:
    dist = _distribution(origin)
    if dist is None:
        return "reinstall the package that declares it, or uninstall that package to go on without it."
    return f"pip install --force-reinstall {dist}, or pip uninstall {dist} to go on without it."


def _uninstall(origin: str) -> str:
    dist = _distribution(origin)
    what = f"pip uninstall {dist}" if dist else "uninstall the package that declares it"
    return f"{what} to go on without it"


def _one_line(err: BaseException) -> str:
    text = " ".join(part.strip() for part in str(err).strip().splitlines() if part.strip())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _load_entry_point(entry_point: metadata.EntryPoint) -> None:
    """Load one entry point: a family (registered under the entry point's name), a class or
    function returning one, or a module or function that registers families itself."""
    global _loading, _index
    origin = _entry_point_origin(entry_point)
    before = dict(_families)
    _loading = origin
    try:
        target = entry_point.load()
        if isinstance(target, type) or (not _is_family(target) and not isinstance(target, types.ModuleType)):
            if not callable(target):
                raise _NotAFamily(f"it names a {type(target).__name__}")
            target = target()
            if target is not None and not _is_family(target):
                raise _NotAFamily(f"calling it returned a {type(target).__name__}")
        if _is_family(target) and not any(target is family for family in _families.values()):
            register_env_family(entry_point.name, target)
        if _families.keys() == before.keys() and not any(target is family for family in _families.values()):
            raise _NotAFamily("loading it registered no environment family")
    except Exception as err:
        with _LOCK:
            for name in set(_families) - set(before):
                _families.pop(name)
                _origins.pop(name)
            _index = None
        if isinstance(err, _NotAFamily):
            raise EnvPluginError(
                f"Environment plugin {origin} (group {ENTRY_POINT_GROUP}) is not an environment family: "
                f"{err}. Fix: its package must point the entry point at a family (an object with names() "
                "and make()), a class or function returning one, or a module that calls "
                f"envs.register_env_family (see docs/extending.md); until then {_uninstall(origin)}."
            ) from None
        raise EnvPluginError(
            f"Environment plugin {origin} (group {ENTRY_POINT_GROUP}) failed to load: {_one_line(err)}. "
            f"Fix: {_reinstall_fix(origin)}"
        ) from err
    finally:
        _loading = None


class _NotAFamily(Exception):
    pass
