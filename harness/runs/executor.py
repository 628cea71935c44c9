"""Executors: where a sweep's work units run.

An executor maps work items (a unit, the problems still to do, the (problem, variant)
pairs already on disk) to record batches: `map_units(items)` yields `(unit, records)` as
each batch finishes. It writes nothing; the sweep driver is the single writer of the
store. `LocalExecutor` runs the units here, one model loaded at a time, with one method
cache per model, so a greedy unit's answers are a later ReDuMix unit's first attempts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from decoders import get_decoder
from envs import get_env
from harness.console import note
from harness.engine import lockstep
from harness.engine.model_pool import ModelPool
from harness.engine.prefix_cache import PrefixCache
from harness.engine.prompts import encode
from harness.methods import Attempt, MethodCache, get_method
from harness.methods.axes import unit_key
from harness.methods.base import role_model_names
from harness.methods.registry import column_axes
from harness.runs.record_grid import record_key
from harness.runs.records import attempt_record
from harness.runs.runner import RunSpec, iter_attempt_batches, unread_options_note
from harness.runs.sweep_config import SweepConfig
from harness.runs.work_units import Unit


@dataclass(frozen=True)
class WorkItem:
    """A unit with what is left of it: the problems to decode and the (problem id, variant) pairs to skip."""

    unit: Unit
    problems: tuple  # envs.Problem, the unit's problems with at least one record missing
    done: frozenset  # (problem id, variant key) pairs already recorded


@dataclass
class LocalExecutor:
    """Runs work items in this process.

    Args:
        config: the sweep's config (generation settings, dtype, device).
        models: already-loaded models by config name (not loaded again).
        prefix_cache: shared by every unit (None: off), so a unit's decoded prompts start the next's.
        on_model_loaded: called with (name, loaded model) before a model's first unit runs.
        on_unit: called with (index, count, unit) when a model's unit starts.
    """

    config: SweepConfig
    models: Mapping[str, object] | None = None
    prefix_cache: PrefixCache | None = None
    on_model_loaded: Callable[[str, object], None] | None = None
    on_unit: Callable[[int, int, Unit], None] | None = None
    timings: dict[str, float] = field(default_factory=lambda: {"load_s": 0.0, "decode_s": 0.0})

    def map_units(self, items: Sequence[WorkItem]) -> Iterator[tuple[Unit, list[dict]]]:
        runner = UnitRunner(self.config, self.models, self.prefix_cache, self.on_model_loaded, self.timings)
        for model in dict.fromkeys(item.unit.model for item in items):
            runner.get(model)
            model_items = [item for item in items if item.unit.model == model]
            for index, item in enumerate(model_items, 1):
                if self.on_unit is not None:
                    self.on_unit(index, len(model_items), item.unit)
                for records in runner.run(item):
                    yield item.unit, records


class UnitRunner:
    """Runs one work item at a time, keeping its models loaded and one method cache per model
    across items (a greedy unit's answers are a later ReDuMix unit's first attempts).

    Args:
        config, models, prefix_cache: as `LocalExecutor`'s.
        on_model_loaded: called with (name, loaded model) the first time a model is used.
        timings: "load_s" and "decode_s" are added to it.
    """

    def __init__(self, config: SweepConfig, models: Mapping[str, object] | None = None,
                 prefix_cache: PrefixCache | None = None,
                 on_model_loaded: Callable[[str, object], None] | None = None,
                 timings: dict[str, float] | None = None) -> None:
        self.config = config
        self.on_model_loaded = on_model_loaded
        self.timings = timings if timings is not None else {"load_s": 0.0, "decode_s": 0.0}
        self._announced: set[str] = set()
        self._caches: dict[str, MethodCache] = {}

        def loaded_now(name: str, model, seconds: float) -> None:
            self.timings["load_s"] += seconds

        self.pool = ModelPool(config.dtype, config.device, dict(models or {}), on_load=loaded_now,
                              warm_up=_warm_up, prefix_cache=prefix_cache,
                              batch_invariant=config.batch_invariant is not False)

    def get(self, name: str):
        model = self.pool.get(name)
        if name not in self._announced:
            unread = unread_options_note(model, self.config.chat_template_options)
            if unread:
                note(unread)
            if self.on_model_loaded is not None:
                self.on_model_loaded(name, model)
        self._announced.add(name)
        return model

    def run(self, item: WorkItem) -> Iterator[list[dict]]:
        """The item's records, a batch at a time."""
        model, pool = item.unit.model, self.pool
        self.get(model)
        cache = self._caches.setdefault(model, MethodCache())
        spec, env, method = prepare(self.config, item)
        # Every model of the method's roles (DeRa's aligned one) loads before the unit's clock starts.
        names = role_model_names(method, model) | item.unit.decoder.models
        for name in names.values():
            self.get(name)
        by_role = pool.by_role(names)
        # Which model played each role, where one is not the unit's own.
        roles = {"models": {r: m.name for r, m in by_role.items()}} if set(names.values()) != {model} else {}
        t0 = time.perf_counter()
        for attempts in iter_attempt_batches(spec, env, method, by_role, list(item.problems),
                                             set(item.done), cache):
            first = pool.get(model)
            records = [sweep_record(item.unit, attempt_record(a, first, spec.seed) | roles, a)
                       for a in attempts]
            self.timings["decode_s"] += time.perf_counter() - t0
            yield records
            t0 = time.perf_counter()
        self.timings["decode_s"] += time.perf_counter() - t0


def prepare(config: SweepConfig, item: WorkItem):
    """(run spec, environment, method) of a work item."""
    unit = item.unit
    spec = RunSpec(env=unit.env.name, decoder=unit.decoder.name, n=unit.env.n, seed=unit.seed, model=unit.model,
                   env_config=dict(unit.env.config), decoder_config=unit.decoder_config(),
                   max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, stop=list(config.stop),
                   dtype=config.dtype, device=config.device, extraction=config.extraction,
                   chat_template_options=config.chat_template_options, think_budget=config.think_budget)
    env = get_env(unit.env.name, extraction=config.extraction, **unit.env.config)
    return spec, env, get_method(spec.decoder, **spec.decoder_config)


def sweep_record(unit: Unit, record: dict, attempt: Attempt) -> dict:
    """Sweep fields on a record: its key, labels, its unit axes' values and comparable time costs.
    Every grid axis with a summary column of its own is on every record, null where the method has
    no such axis (a greedy record's lambda), so tables of a sweep have one shape."""
    return dict.fromkeys(column_axes()) | record | unit.fields | {
        "key": record_key(unit.model, unit.env.label, record["problem_id"], unit.decoder.label, attempt.variant,
                          unit.seed, unit_key(unit.fields)),
        "env_label": unit.env.label,
        "decoder_label": unit.decoder.label,
        # Seconds of compute one answer took, batching amortised: every stage before the final
        # decoding (stage_s) plus the final decoding's share of its batch.
        "stage_s": round(attempt.cost_s - attempt.answer_s, 4),
        "cost_s": round(attempt.cost_s, 4),
    }


def _warm_up(loaded) -> None:
    """One short decode, so the first unit's timings do not carry the first call's set-up costs
    (which would make whatever runs first, usually greedy, look slower and distort cost ratios)."""
    lockstep.decode(loaded, [[encode(loaded.tokenizer, "Hello, how are you?")] * 2], get_decoder("greedy"),
                  max_new_tokens=2)
