"""Sweep configs: one YAML file naming models, environments, decoders, lambda grids,
seeds and feedback policies, checked in full before any work starts.

Every error names the key path (e.g. ``decoders[1].lambdas[2]``), the value and the
fix; unknown keys and names answer with a did-you-mean. Checking builds every
environment and decoder once, so a config that passes cannot fail on its settings
half-way through a sweep.

Example::

    name: quick
    models: [smollm2-135m]
    seeds: [0]
    max_new_tokens: 48
    envs:
      - name: basic_arithmetic
        n: 8
        config: {min_terms: 2, max_terms: 2}
    decoders:
      - name: greedy
      - name: redumix
        lambdas: [0, 0.5, 1]
        feedback: [ground_truth]
        config: {reflection_max_new_tokens: 48}
      - name: greedy                    # greedy on another model, beside the sweep's
        label: distilled
        models: {policy: results/distilled}
      - name: dera                      # two models: the sweep's model as the reference,
        models: {aligned: results/distilled}   # a model folder as the aligned one
        lambdas: [0, 0.5, 1, 2]
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.methods.axes import NO_AXES, Axes, Axis
from harness.naming import did_you_mean
from harness.runs.limits import MAX_PROBLEMS
from harness.runs.record_json import shape_problem

# Top-level keys -> (required, default). `out` is where results go, not part of the sweep's identity.
TOP_KEYS: dict[str, tuple[bool, Any]] = {
    "name": (False, None),
    "out": (False, None),
    "models": (True, None),
    "envs": (True, None),
    "decoders": (True, None),
    "seeds": (False, [0]),
    "max_new_tokens": (False, 256),
    "batch_size": (False, 8),
    "stop": (False, ["</answer>"]),
    "dtype": (False, "auto"),
    "batch_invariant": (False, None),
    "device": (False, "cpu"),
    "extraction": (False, "strict"),
    "reference": (False, None),
    "chat_template_options": (False, None),
    "think_budget": (False, None),
}
ENV_KEYS = {"name": (True, None), "label": (False, None), "n": (False, 20), "config": (False, {})}
# Beside these, an entry may list the values of its method's grid keys (ReDuMix's `lambdas` and
# `feedback`): see `harness.methods.axes`.
DECODER_KEYS = {
    "name": (True, None),
    "label": (False, None),
    "config": (False, {}),
    "models": (False, None),
}


@dataclass(frozen=True)
class EnvEntry:
    """One environment of the sweep; `label` tells apart two entries of the same task."""

    name: str
    label: str
    n: int
    config: dict  # the overrides as written (the resolved task config is in `resolved_config`)
    resolved_config: dict


@dataclass(frozen=True)
class DecoderEntry:
    """One decoder of the sweep, with the values its method's grid keys list."""

    name: str
    label: str
    config: dict  # parameters as written, without the ones listed beside it (lambdas, ...)
    resolved_config: dict  # every parameter, defaults filled in (listed parameters as their lists)
    # The values of each grid key the entry lists beside `config`, by key ({"lambdas": (0.0, 0.5)});
    # the method's defaults where the entry gives none.
    listed: dict = dataclasses.field(default_factory=dict)
    # The method's variants, which one unit decodes together ({"lambda": 0.5}, {"n": 4}, or {} alone).
    variants: tuple[dict, ...] = ({},)
    # Roles bound to a model other than the sweep's ({"policy": "results/distilled"}: greedy on that model).
    # Roles the decoder config names itself (DeRa's ref and aligned) go into `config` instead.
    models: dict = dataclasses.field(default_factory=dict)
    axes: Axes = NO_AXES  # the method's declared grid (harness.methods.axes)

    @property
    def units(self) -> list[dict]:
        """Each unit's values of the unit axes, by record field ([{}] without unit axes)."""
        fields = [axis.record for axis in self.axes.units]
        values = [self.listed[axis.sweep_key] for axis in self.axes.units]
        return [dict(zip(fields, combo, strict=True)) for combo in itertools.product(*values)]


@dataclass(frozen=True)
class SweepConfig:
    name: str
    out: str | None
    models: tuple[str, ...]
    envs: tuple[EnvEntry, ...]
    decoders: tuple[DecoderEntry, ...]
    seeds: tuple[int, ...]
    max_new_tokens: int
    batch_size: int
    stop: tuple[str, ...]
    dtype: str  # as written ("auto" included); run_sweep resolves it before anything is written
    device: str
    extraction: str
    reference: str | None = None  # decoder label costs are compared against (not part of the identity)
    # Rows decode as they would alone; None (not written): on, or a resumed folder's mode (run_sweep decides)
    batch_invariant: bool | None = None
    # Variables for the chat template ({enable_thinking: false}); None (not written): the template's defaults.
    chat_template_options: dict | None = None
    think_budget: int | None = None  # budget forcing, as `redumix run --think-budget`; None: no budget

    def resolved(self) -> dict:
        """The sweep's identity as JSON: two configs with equal `resolved()` make the same records."""
        data = dataclasses.asdict(self)
        # Where results go and what the sweep is called do not change its records.
        data.pop("out")
        data.pop("name")
        data.pop("reference")
        for env in data["envs"]:
            env.pop("config")
        for dec in data["decoders"]:
            dec.pop("config")
            dec.pop("axes")
            dec |= {key: list(values) for key, values in dec.pop("listed").items()}
            if not dec["models"]:
                dec.pop("models")  # as sweeps without role bindings have always been identified
            dec.pop("variants")  # made of the config (spec.json keeps them beside, under "variants")
        return json.loads(json.dumps(data))

    def variants(self) -> dict[str, list[dict]]:
        """Each decoder label's variants, as spec.json records them."""
        return {dec.label: [dict(v) for v in dec.variants] for dec in self.decoders}

    def units(self) -> dict[str, list[dict]]:
        """Each decoder label's unit-axis values (one dict per unit), as spec.json records them."""
        return {dec.label: dec.units for dec in self.decoders}


class ConfigError(ValueError):
    """A sweep config that cannot run; the message names the key path, the value and the fix."""


def load_config(path: str | Path) -> SweepConfig:
    """Read and check a sweep config file.

    Raises:
        ConfigError: unreadable file, bad YAML, or any invalid setting.
    """
    path = Path(path)
    data = read_yaml_config(path, "sweep config", "configs/quick.yaml")
    return parse_config(data, source=str(path), default_name=path.stem)


def read_yaml_config(path: Path, kind: str, example: str) -> Any:
    """The YAML document of the `kind` config file `path` (e.g. "sweep config"), a key given twice
    refused; every way it cannot be read is a ConfigError naming the file and the fix."""
    if not path.is_file():
        raise ConfigError(f"{kind} {str(path)!r} does not exist; give the path of a YAML file such as {example}")
    try:
        return yaml.load(path.read_bytes().decode("utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    except _DuplicateKey as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read (brackets or indentation hundreds of levels deep); "
                          f"a {kind} nests a few levels") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"{path}: not valid YAML: {str(err).split(':', 1)[0]}") from None


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not last-wins."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key in seen:
                raise _DuplicateKey(f"key {key!r} is given twice (lines {seen[key]} and {line}); keep one")
            if isinstance(key, str):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_config(data: Any, source: str = "config", default_name: str = "sweep") -> SweepConfig:
    """Check a config mapping (as read from YAML) and resolve it.

    Raises:
        ConfigError: the first problem found, prefixed with `source` and the key path.
    """
    # NaN and infinities cannot be written to spec.json as JSON (nor compared with it on a resume).
    problem = shape_problem(data)
    if problem is not None:
        raise ConfigError(f"{source}: {problem}; give a finite value")
    try:
        return _Checker().sweep(data, default_name)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


class _Checker:
    def sweep(self, data: Any, default_name: str) -> SweepConfig:
        top = _mapping(data, "the top level", TOP_KEYS)
        name = _string(top["name"] if top["name"] is not None else default_name, "name")
        out = _string(top["out"], "out") if top["out"] is not None else None
        models = tuple(_string(m, f"models[{i}]") for i, m in enumerate(_list(top["models"], "models")))
        _unique(models, "models")
        seeds = tuple(_int(s, f"seeds[{i}]", minimum=0) for i, s in enumerate(_list(top["seeds"], "seeds")))
        _unique(seeds, "seeds")
        max_new_tokens = _int(top["max_new_tokens"], "max_new_tokens", minimum=1)
        batch_size = _int(top["batch_size"], "batch_size", minimum=1)
        stop_value = top["stop"]
        stop = tuple(_string(s, f"stop[{i}]") for i, s in enumerate(_list(stop_value, "stop", allow_empty=True)))
        dtype = self._choice(top["dtype"], "dtype", _dtypes())
        batch_invariant = None if top["batch_invariant"] is None else _mode(top["batch_invariant"])
        device = _string(top["device"], "device")
        self._check_device_and_dtype(device, dtype)
        from envs.answer import EXTRACTION_MODES

        extraction = self._choice(top["extraction"], "extraction", EXTRACTION_MODES)
        for i, model in enumerate(models):
            self._check_model(model, f"models[{i}]")
        envs = tuple(self._env(e, f"envs[{i}]", extraction) for i, e in enumerate(_list(top["envs"], "envs")))
        _unique([e.label for e in envs], "envs", what="label", fix="give one of them a distinct `label`")
        decoders = tuple(entry for i, d in enumerate(_list(top["decoders"], "decoders"))
                         for entry in self._decoders(d, f"decoders[{i}]"))
        _unique([d.label for d in decoders], "decoders", what="label", fix="give one of them a distinct `label`")
        self._check_units_fit_envs(decoders, envs, extraction)
        self._check_settings(decoders, max_new_tokens)
        options = top["chat_template_options"]
        if options is not None:
            from harness.engine.prompts import check_chat_template_options

            try:
                check_chat_template_options(_mapping(options, "chat_template_options"))
            except ValueError as err:
                raise ConfigError(str(err)) from None
        think_budget = top["think_budget"]
        if think_budget is not None:
            think_budget = _int(think_budget, "think_budget", minimum=0) or None
            if think_budget is not None and think_budget >= max_new_tokens:
                raise ConfigError(f"think_budget (={think_budget}) leaves no room for the answer within "
                                  f"max_new_tokens (={max_new_tokens}); lower it or raise max_new_tokens")
        config = SweepConfig(
            name=name, out=out, models=models, envs=envs, decoders=decoders, seeds=seeds,
            max_new_tokens=max_new_tokens, batch_size=batch_size, stop=stop, dtype=dtype, device=device,
            extraction=extraction, reference=self._reference(top["reference"], decoders),
            batch_invariant=batch_invariant, chat_template_options=dict(options) if options else None,
            think_budget=think_budget,
        )
        self._check_problems(config)
        return config

    def _reference(self, value: Any, decoders: tuple[DecoderEntry, ...]) -> str | None:
        """The decoder label costs are compared against: as given, or the first single-pass decoder."""
        labels = [d.label for d in decoders]
        if value is None:
            from decoders import get_decoder
            from harness.methods import method_of
            from harness.methods.single_pass import SinglePass

            return next((d.label for d in decoders
                         if isinstance(method_of(get_decoder(d.name, **d.config)), SinglePass)), None)
        label = _string(value, "reference")
        if label not in labels:
            hint = did_you_mean(label, labels)
            raise ConfigError(f"reference (={label!r}) is not a decoder label of this config.{hint} "
                              f"Labels: {', '.join(labels)}")
        return label

    def _env(self, data: Any, path: str, extraction: str) -> EnvEntry:
        from envs import available_envs, get_env, is_env_name

        entry = _mapping(data, path, ENV_KEYS)
        name = _string(entry["name"], f"{path}.name")
        if not is_env_name(name):  # a listed name, or one a family takes (file:PATH)
            hint = did_you_mean(name, available_envs())
            raise ConfigError(f"{path}.name (={name!r}) is not an environment.{hint} "
                              "See `redumix list envs` for every name")
        overrides = _mapping(entry["config"], f"{path}.config")
        if "extraction" in overrides:
            raise ConfigError(f"{path}.config.extraction (={overrides['extraction']!r}): the answer extraction is "
                              "set once for the whole sweep; write `extraction: ...` at the top level")
        try:
            env = get_env(name, extraction=extraction, **overrides)
        except ValueError as err:
            raise ConfigError(f"{path}.config: {err}") from None
        label = _string(entry["label"] if entry["label"] is not None else name, f"{path}.label")
        _check_label(label, f"{path}.label")
        return EnvEntry(name=name, label=label, n=_int(entry["n"], f"{path}.n", minimum=1, maximum=MAX_PROBLEMS),
                        config=dict(overrides), resolved_config=env.config())

    def _decoders(self, data: Any, path: str) -> list[DecoderEntry]:
        """One entry, or one per combination where `config` lists several values for parameters
        that take one (`max_topk: [5, 10]` -> labels "soft max_topk=5", "soft max_topk=10").
        Lists of a parameter the method declares a variant axis (gumbel's tau) stay whole."""
        from decoders import available_decoders
        from harness.methods.registry import axes_of

        if not isinstance(data, dict) or not isinstance(data.get("config"), dict) or \
                data.get("name") not in available_decoders():
            return [self._decoder(data, path)]
        config = data["config"]
        axes = axes_of(data["name"])
        listed = [k for k, v in config.items() if isinstance(v, list) and axes.variant_axis(k) is None]
        if not listed:
            return [self._decoder(data, path)]
        label = data.get("label") or data["name"]
        entries = []
        for values in itertools.product(*(_list(config[k], f"{path}.config.{k}") for k in listed)):
            suffix = " ".join(f"{k}={v}" for k, v in zip(listed, values, strict=True))
            entries.append(self._decoder(data | {"config": config | dict(zip(listed, values, strict=True)),
                                                 "label": f"{label} {suffix}"}, path))
        return entries

    def _decoder(self, data: Any, path: str) -> DecoderEntry:
        from decoders import available_decoders, get_decoder
        from decoders.registry import decoder_class
        from harness.methods import method_of
        from harness.methods.registry import axes_of, registered_axes

        # Any method's grid key passes the key check, so using one on a method without it says so.
        every_grid_key = {a.sweep_key: (False, None) for a in registered_axes() if a.sweep_key}
        entry = _mapping(data, path, DECODER_KEYS | every_grid_key)
        name = _string(entry["name"], f"{path}.name")
        if name not in available_decoders():
            hint = did_you_mean(name, available_decoders())
            raise ConfigError(f"{path}.name (={name!r}) is not a decoder.{hint} "
                              f"Available: {', '.join(available_decoders())}")
        config = dict(_mapping(entry["config"], f"{path}.config"))
        bound = self._role_models(entry["models"], f"{path}.models", name, config)
        fields = {f.name for f in dataclasses.fields(decoder_class(name))}
        config |= {role: model for role, model in bound.items() if role in fields}
        bound = {role: model for role, model in bound.items() if role not in fields}
        for role, model in bound.items():
            self._check_model(model, f"{path}.models.{role}")
        # The grid keys the method takes beside `config` (e.g. lambdas -> its `lam`): its own declaration.
        axes = axes_of(name)
        own = axes.listed_beside_config()
        for key in every_grid_key:
            if entry[key] is not None and key not in own:
                takers = sorted(n for n in available_decoders() if key in axes_of(n).listed_beside_config())
                raise ConfigError(f"{path}.{key} (={entry[key]!r}): decoder {name!r} takes no `{key}` (the decoders "
                                  f"that do: {', '.join(takers)}); remove `{key}`")
        for key, axis in own.items():
            if axis.param in config:
                raise ConfigError(f"{path}.config.{axis.param} (={config[axis.param]!r}): set it with `{key}: [...]` "
                                  f"beside `config`, which the sweep expands into a grid")
        try:
            base = get_decoder(name, **config)
        except ValueError as err:
            raise ConfigError(f"{path}.config: {err}") from None
        except TypeError as err:  # a list or mapping where the parameter takes one value
            nested = [f"{key} (={value!r})" for key, value in config.items() if isinstance(value, list | dict)]
            raise ConfigError(f"{path}.config: {', '.join(nested) or 'a value'} is not a value {name!r} takes "
                              f"({err}); give a number, a string or true/false") from None

        resolved = base.config()
        listed = {}
        for key, axis in own.items():
            values = self._grid(entry[key], f"{path}.{key}", name, axis, config)
            if values is None:  # the method's default value(s)
                default = resolved[axis.param]
                values = tuple(axis.kind(v) for v in (default if isinstance(default, list | tuple) else [default]))
            listed[key] = values
            resolved[axis.param] = list(values)
        for role, model in method_of(base).role_models().items():
            if model is not None:
                self._check_model(model, f"{path}.models.{role}")
        label = _string(entry["label"] if entry["label"] is not None else name, f"{path}.label")
        _check_label(label, f"{path}.label")
        with_grid = dict(config)
        for axis in axes.variants:
            if axis.sweep_key in listed:
                values = listed[axis.sweep_key]
                with_grid[axis.param] = values if len(values) > 1 else values[0]
        variants = tuple(method_of(get_decoder(name, **with_grid)).variants())
        return DecoderEntry(name=name, label=label, config=config, resolved_config=resolved, listed=listed,
                            variants=variants, models=bound, axes=axes)

    def _role_models(self, value: Any, path: str, decoder: str, config: dict) -> dict[str, str]:
        """`models: {role: model}`: the models a decoder runs on instead of the sweep's, by role
        ({policy: PATH} for most decoders, {aligned: PATH} for DeRa); roles left out run on the
        sweep's model."""
        from decoders import get_decoder
        from harness.methods import method_of

        if value is None:
            return {}
        roles = method_of(get_decoder(decoder)).roles()
        given = _mapping(value, path)
        for role, model in given.items():
            if role not in roles:
                hint = did_you_mean(role, roles)
                raise ConfigError(f"{path}.{role}: {decoder!r} has no model role {role!r}.{hint} "
                                  f"Roles: {', '.join(roles)}")
            if role in config:
                raise ConfigError(f"{path}.{role} (={model!r}) and config.{role} (={config[role]!r}) both name it; "
                                  "give it once")
            _string(model, f"{path}.{role}")
        return dict(given)

    def _grid(self, value, path: str, decoder: str, axis: Axis, config: dict) -> tuple | None:
        """The values listed for `axis` (None: not given), each checked by building the decoder with it."""
        from decoders import get_decoder

        if value is None:
            return None
        items = _list(value, path)
        key = path.rsplit(".", 1)[1]
        out = []
        for i, item in enumerate(items):
            if axis.kind in (int, float) and (isinstance(item, bool) or not isinstance(item, int | float)):
                raise ConfigError(f"{path}[{i}] (={item!r}) is not a number; write e.g. {key}: "
                                  f"{axis.example or '[0, 0.5, 1]'}")
            if axis.kind is str and not isinstance(item, str):
                raise ConfigError(f"{path}[{i}] (={item!r}) is not a name; write e.g. {key}: {axis.example or '[a]'}")
            try:
                get_decoder(decoder, **config, **{axis.param: axis.kind(item)})
            except ValueError as err:
                raise ConfigError(f"{path}[{i}] (={item!r}): {err}") from None
            out.append(axis.kind(item))
        _unique(out, path)
        return tuple(out)

    def _check_settings(self, decoders, max_new_tokens: int) -> None:
        from decoders import get_decoder
        from harness.methods import method_of

        for i, dec in enumerate(decoders):
            try:
                method_of(get_decoder(dec.name, **dec.config)).check_settings(max_new_tokens)
            except ValueError as err:
                raise ConfigError(f"decoders[{i}].config: {err}") from None

    def _check_units_fit_envs(self, decoders, envs, extraction) -> None:
        """Every unit's method can run on every env (ReDuMix's feedback policy needs an env that gives it)."""
        from decoders import get_decoder
        from envs import get_env
        from harness.methods import method_of

        for d_index, dec in enumerate(decoders):
            for axis in dec.axes.units:
                for v_index, value in enumerate(dec.listed[axis.sweep_key]):
                    method = method_of(get_decoder(dec.name, **dec.config, **{axis.param: value}))
                    for env in envs:
                        try:
                            method.check_env(get_env(env.name, extraction=extraction, **env.config))
                        except ValueError as err:
                            raise ConfigError(f"decoders[{d_index}].{axis.sweep_key}[{v_index}] (={value!r}) with "
                                              f"environment {env.label!r}: {err}") from None

    def _check_problems(self, config: SweepConfig) -> None:
        # Asking for more problems than a size-bound task holds fails here, not mid-sweep.
        from envs import get_env

        for i, env in enumerate(config.envs):
            task = get_env(env.name, extraction=config.extraction, **env.config)
            for seed in config.seeds:
                try:
                    task.problems(env.n, seed)
                except ValueError as err:
                    raise ConfigError(f"envs[{i}].n (={env.n}) with seed {seed}: {err}") from None

    def _check_model(self, model: str, path: str) -> None:
        from harness.engine.models import resolve_source

        try:
            resolve_source(model)
        except ValueError as err:
            raise ConfigError(f"{path}: {err}") from None

    def _check_device_and_dtype(self, device: str, dtype: str) -> None:
        """The device exists here and can run the dtype (float16 needs native fp16 on a CPU,
        bfloat16 a GPU with bf16); "auto" always can."""
        from harness.engine.models import resolve_device, resolve_dtype

        try:
            resolved = resolve_device(device)
        except ValueError as err:
            raise ConfigError(f"device: {err}") from None
        try:
            resolve_dtype(dtype, resolved)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _choice(self, value: Any, path: str, choices) -> str:
        value = _string(value, path)
        if value not in choices:
            hint = did_you_mean(value, choices)
            raise ConfigError(f"{path} (={value!r}) is not one of {', '.join(choices)}.{hint}")
        return value


def _mode(value: Any) -> bool:
    """`batch_invariant`: on/off (YAML may read them as booleans already)."""
    from harness.engine.batch_invariance import parse_mode

    try:
        return parse_mode(value, flag="batch_invariant")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _dtypes() -> list[str]:
    """`auto` (bfloat16 where the hardware runs it natively, else float32) and every dtype a model loads in."""
    from harness.engine.dtype_choice import DTYPE_CHOICES

    return list(DTYPE_CHOICES)


def _mapping(value: Any, path: str, keys: dict[str, tuple[bool, Any]] | None = None) -> dict:
    """`value` as a dict; with `keys`, unknown keys are errors and missing optional ones get defaults."""
    if value is None and keys is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path} (={value!r}) must be a mapping of key: value pairs")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{path}: key {key!r} must be a string")
    if keys is None:
        return value
    where = "" if path == "the top level" else f"{path}."
    for key in value:
        if key not in keys:
            hint = did_you_mean(key, keys)
            raise ConfigError(f"{where}{key}: unknown key{' at the top level' if not where else ''}.{hint} "
                              f"Allowed keys: {', '.join(sorted(keys))}")
    out = {}
    for key, (required, default) in keys.items():
        if key in value:
            out[key] = value[key]
        elif required:
            raise ConfigError(f"{where}{key} is missing; add it (see configs/quick.yaml for an example)")
        else:
            out[key] = _copy(default)  # never share a mutable default between configs
    return out


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _list(value: Any, path: str, allow_empty: bool = False) -> list:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        raise ConfigError(f"{path} (={value!r}) must be a list; write e.g. {path.rsplit('.', 1)[-1]}: [{value}]")
    if not isinstance(value, list):
        raise ConfigError(f"{path} (={value!r}) must be a list")
    if not value and not allow_empty:
        raise ConfigError(f"{path} is empty; give at least one entry")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path} (={value!r}) must be a non-empty string")
    return value


def _int(value: Any, path: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{path} (={value!r}) must be an integer >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{path} (={value!r}) must be at most {maximum:,}")
    return value


def _check_label(label: str, path: str) -> None:
    # Labels are parts of record keys, which join their parts with "|".
    if "|" in label:
        raise ConfigError(f"{path} (={label!r}) must not contain '|'; pick another label")


def _unique(values, path: str, what: str = "entry", fix: str = "remove the repeat") -> None:
    seen: dict = {}
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"{path}[{i}] repeats the {what} {value!r} of {path}[{seen[value]}]; {fix}")
        seen[value] = i
