"""Sweeps: a config's grid of (model, env, seed, decoder, its unit and variant axes) decoded
into one resumable samples.jsonl, then summarised by `harness.analysis.report`.

The work units (`harness.runs.work_units`) run on an executor (`harness.runs.executor`); this module
is the driver, the only writer of the folder. Each record carries a `key` built only from the
config, so a re-run skips exactly the records already on disk: after a crash at any
point the folder ends with no duplicate and no missing record.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from envs import get_env
from harness.console import note
from harness.engine.models import resolve_device, resolve_dtype
from harness.engine.prefix_cache import DEFAULT_BUDGET_MB, PrefixCache
from harness.methods.base import variant_key
from harness.runs.executor import LocalExecutor, WorkItem
from harness.runs.folder_claim import claim_and_read
from harness.runs.folder_lock import folder_locked
from harness.runs.invariance_mode import mode_to_run
from harness.runs.output_paths import prepare_folder
from harness.runs.record_grid import (  # noqa: F401 (record_key: importable from here too)
    by_position,
    own_problem_ids,
    record_key,
    sweep_grid,
)
from harness.runs.run_dtype import dtype_to_run
from harness.runs.store import RunDir
from harness.runs.sweep_config import SweepConfig
from harness.runs.work_units import Unit, plan  # noqa: F401 (the sweep's units, importable from here too)

SWEEP_SPEC_KEY = "sweep"


@dataclass
class SweepResult:
    out: Path
    total: int  # records in the folder at the end
    new: int  # records written by this call
    timings: dict[str, float] = field(default_factory=dict)
    report: object | None = None  # harness.analysis.report.Report when a report was written
    # Units the executor gave up on (a Ray actor's unit that raised): {"label", "error", "missing"}
    # with the number of its records still missing; their records are left for a re-run.
    failed_units: list[dict] = field(default_factory=list)


def run_sweep(config: SweepConfig, out: str | Path, *, force_new: bool = False,
              models: Mapping[str, object] | None = None, progress: bool = True,
              write_report: bool = True, prefix_cache_mb: int = DEFAULT_BUDGET_MB,
              executor: Callable[..., object] = LocalExecutor) -> SweepResult:
    """Decode every missing record of `config` into `out`/samples.jsonl, then write the report.

    Args:
        models: already-loaded models by config name (skips loading them).
        prefix_cache_mb: MiB of decoded prompts' KV caches shared by the sweep's units, so that
            ReDuMix's stages (and a greedy unit before them) prefill only new turns; 0: off.
        force_new: when `out` holds another sweep, move its files to `out`/replaced-<time>/
            and start afresh instead of refusing.
        executor: makes the executor that runs the units, called as
            `executor(config, models, prefix_cache=..., on_model_loaded=..., on_unit=...)`:
            `LocalExecutor` (here, the default) or e.g.
            `functools.partial(harness.runs.ray_executor.RayExecutor, address="auto")`. An executor with
            a `failures` list ({"unit", "label", "error"}) reports the units it gave up on there.

    The config's dtype "auto" is resolved before anything is written (spec.json and the records
    name the dtype that ran); a folder being resumed keeps the dtype it was written in.

    Raises:
        ValueError: `out` holds a different sweep or run (and not force_new).
    """
    began = time.perf_counter()
    prefix_cache = PrefixCache.of_megabytes(prefix_cache_mb, "--prefix-cache-mb")
    device = resolve_device(config.device)
    resolve_dtype(config.dtype, device)  # checked before anything is read or written
    store = RunDir(prepare_folder(out, "out"))
    with folder_locked(store.path, note=note):
        invariant, kept_mode = mode_to_run(config.batch_invariant, store, "sweep", flag="batch_invariant")
        config = dataclasses.replace(config, batch_invariant=invariant)
        dtype, adopted = dtype_to_run(config.dtype, device, store, "sweep",
                                      lambda d: dataclasses.replace(config, dtype=d).resolved(),
                                      preloaded=(models or {}).values(), flag="dtype")
        adopted = "\n".join(line for line in (kept_mode, adopted) if line) or None
        config = dataclasses.replace(config, dtype=dtype)
        units = plan(config)
        stored = store.read_spec()
        # Once: checked against the folder, then decoded.
        problems = [by_position(unit_problems(config, unit), stored) for unit in units]
        resolved = config.resolved()
        problem_ids = own_problem_ids({(unit.env.label, unit.seed): ps
                                       for unit, ps in zip(units, problems, strict=True)})
        grid = sweep_grid(resolved, config.variants(), config.units(), problem_ids)
        contents = claim_and_read(store, "sweep", resolved, grid, adopted=adopted, force_new=force_new, note=note,
                                  questions=lambda: {k: p.question for unit, ps in zip(units, problems, strict=True)
                                                     for p in ps for k in unit.keys(p.problem_id)})
        return _sweep_into(config, list(zip(units, problems, strict=True)), store, contents.identities, models,
                           progress, write_report, began, prefix_cache, executor, problem_ids)


def unit_problems(config: SweepConfig, unit: Unit) -> list:
    """The problems a unit answers: its env's first n under its seed."""
    return get_env(unit.env.name, extraction=config.extraction, **unit.env.config).problems(unit.env.n, unit.seed)


def _without_variant(key: str) -> str:
    """A record key without its variant part: the (unit, problem) the record belongs to."""
    parts = key.split("|")
    return "|".join(parts[:4] + parts[5:])


def _sweep_into(config, units, store, present, models, progress, write_report, began,
                prefix_cache, make_executor=LocalExecutor, problem_ids=None) -> SweepResult:
    """Decode every unit's missing records into `store` (claimed and locked by the caller);
    `units`: (unit, its problems) pairs; `problem_ids`: spec.json's (`own_problem_ids`).

    The executor runs the units; this driver alone writes: each batch of records is appended
    as it arrives, and spec.json is written once a model has loaded.
    """
    resolved = config.resolved()
    described = dict((store.read_spec() or {}).get("models") or {})
    items = []  # units with at least one missing key
    expected: set[str] = set()
    for unit, problems in units:
        keys = {k for p in problems for k in unit.keys(p.problem_id)}
        expected |= keys
        if keys - present:
            todo = tuple(p for p in problems if any(k not in present for k in unit.keys(p.problem_id)))
            # The (problem, variant) pairs of this unit already on disk, in the runner's terms.
            done = frozenset((p.problem_id, variant_key(v)) for p in problems
                             for v, k in zip(unit.variants, unit.keys(p.problem_id), strict=True)
                             if k in present)
            items.append(WorkItem(unit, todo, done))

    def write_spec() -> None:
        store.write_spec({SWEEP_SPEC_KEY: resolved, "models": described, "reference": config.reference,
                          "variants": config.variants(), "units": config.units()}
                         | ({"problem_ids": problem_ids} if problem_ids else {}))

    def model_loaded(name: str, loaded) -> None:
        # Written once a model has loaded, so a model that fails to load leaves no spec behind.
        described[name] = json.loads(json.dumps(loaded.describe()))
        write_spec()

    if not items:
        write_spec()
    bar = tqdm(total=len(expected), initial=len(expected & present), desc="sweep", unit="record",
               disable=not progress)
    executor = make_executor(config, models, prefix_cache=prefix_cache, on_model_loaded=model_loaded,
                             on_unit=lambda i, n, unit: bar.set_description(f"unit {i}/{n} {unit.label}"))
    new_records: list[dict] = []
    try:
        for _, records in executor.map_units(items):
            # A key already held is dropped: an executor that retries (Ray) may send a record twice.
            records = list({r["key"]: r for r in records if r["key"] not in present}.values())
            store.append(records)
            present.update(r["key"] for r in records)
            new_records.extend(records)
            bar.update(len(records))
    finally:  # closed before any message about an interrupt
        bar.close()
    timings = {**executor.timings, "stage_s": 0.0, "report_s": 0.0}
    # Time of the stages before the final decoding spent by this sweep, counted once per problem
    # of a unit (its records repeat it for every variant). Work reused from another unit (a
    # greedy first attempt) was decoding time there, so its share stays in decoding.
    stages = {_without_variant(r["key"]): r["stage_s"] - r.get("reused_s", 0.0)
              for r in new_records if r.get("stage_s")}
    timings["stage_s"] = sum(stages.values())
    timings["decode_s"] = max(0.0, timings["decode_s"] - timings["stage_s"])

    failed_units = [{"label": f["label"], "error": f["error"],
                     "missing": len({k for p in item.problems for k in f["unit"].keys(p.problem_id)} - present)}
                    for f in getattr(executor, "failures", ())
                    for item in items if item.unit == f["unit"]]
    result = SweepResult(out=store.path, total=len(present), new=len(new_records), timings=timings,
                         failed_units=failed_units)
    if write_report:
        from harness.analysis.report import write_report

        t0 = time.perf_counter()
        result.report = write_report(store.path)
        timings["report_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - began
    return result
