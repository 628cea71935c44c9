"""Sweeps: a config's grid of (model, env, seed, decoder, feedback policy, lambda) decoded
into one resumable samples.jsonl, then summarised by `harness.report`.

A work unit is one (model, env, seed, decoder entry, feedback policy); a redumix unit
covers its whole lambda grid so that stages 1-3 run once per problem (a stage cache is
also shared by every unit of a model). Each record carries a `key` built only from the
config, so a re-run skips exactly the records already on disk: after a crash at any
point the folder ends with no duplicate and no missing record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from decoders import get_decoder
from envs import get_env
from harness import engine
from harness.console import note
from harness.folder_claim import claim_folder
from harness.folder_lock import folder_locked
from harness.methods import MethodCache, get_method
from harness.models import load_model
from harness.output_paths import prepare_folder
from harness.prompts import encode
from harness.record_grid import record_key, sweep_grid
from harness.records import attempt_record
from harness.runner import RunSpec, iter_attempt_batches
from harness.store import RunDir
from harness.sweep_config import DecoderEntry, EnvEntry, SweepConfig

SWEEP_SPEC_KEY = "sweep"


@dataclass(frozen=True)
class Unit:
    """One decoder entry on one (model, env, seed), under one feedback policy."""

    model: str
    env: EnvEntry
    seed: int
    decoder: DecoderEntry
    feedback: str | None
    lambdas: tuple[float, ...] | None  # the lambdas this unit decodes (None: the decoder does not mix)

    @property
    def label(self) -> str:
        parts = [self.env.label, self.decoder.label]
        if self.feedback:
            parts.append(self.feedback)
        if self.lambdas and len(self.lambdas) == 1:
            parts.append(f"lam={self.lambdas[0]:g}")
        return " ".join(parts) + f" s{self.seed}"

    def decoder_config(self) -> dict:
        config = dict(self.decoder.config)
        grids = self.decoder.grids
        if self.lambdas is not None:
            config[grids["lambdas"]] = self.lambdas if len(self.lambdas) > 1 else self.lambdas[0]
        if self.feedback is not None:
            config[grids["feedback"]] = self.feedback
        return config

    def keys(self, problem_id: str) -> list[str]:
        return [record_key(self.model, self.env.label, problem_id, self.decoder.label, lam, self.seed, self.feedback)
                for lam in (self.lambdas or (None,))]


def plan(config: SweepConfig) -> list[Unit]:
    """Every work unit of `config`, grouped by model so each model loads once."""
    units = []
    for model in config.models:
        for env in config.envs:
            for seed in config.seeds:
                for dec in config.decoders:
                    for policy in dec.feedback or (None,):
                        # A unit covers the method's whole lambda grid: its variants share work
                        # (ReDuMix's stages 1-3 run once per problem for every lambda).
                        units.append(Unit(model, env, seed, dec, policy, dec.lambdas))
    return units


@dataclass
class SweepResult:
    out: Path
    total: int  # records in the folder at the end
    new: int  # records written by this call
    timings: dict[str, float] = field(default_factory=dict)
    report: object | None = None  # harness.report.Report when a report was written


def run_sweep(config: SweepConfig, out: str | Path, *, force_new: bool = False,
              models: Mapping[str, object] | None = None, progress: bool = True,
              write_report: bool = True) -> SweepResult:
    """Decode every missing record of `config` into `out`/samples.jsonl, then write the report.

    Args:
        models: already-loaded models by config name (skips loading them).
        force_new: when `out` holds another sweep, move its files to `out`/replaced-<time>/
            and start afresh instead of refusing.

    Raises:
        ValueError: `out` holds a different sweep or run (and not force_new).
    """
    began = time.perf_counter()
    units = plan(config)
    resolved = config.resolved()
    grid = sweep_grid(resolved)
    store = RunDir(prepare_folder(out, "out"))
    with folder_locked(store.path, note=note):
        claim_folder(store, "sweep", resolved, grid, force_new=force_new, note=note)
        store.check_writable()
        contents = store.read(grid)
        for line in contents.notes():
            note(line)
        return _sweep_into(config, units, store, contents.identities, models, progress, write_report, began)


def _sweep_into(config, units, store, present, models, progress, write_report, began) -> SweepResult:
    """Decode every unit's missing records into `store` (claimed and locked by the caller)."""
    resolved = config.resolved()
    described = dict((store.read_spec() or {}).get("models") or {})
    work = []  # (unit, problems, env) with at least one missing key
    expected: set[str] = set()
    for unit in units:
        env = get_env(unit.env.name, extraction=config.extraction, **unit.env.config)
        problems = env.problems(unit.env.n, unit.seed)
        keys = {k for p in problems for k in unit.keys(p.problem_id)}
        expected |= keys
        if keys - present:
            work.append((unit, problems, env))
    if not work:
        store.write_spec({SWEEP_SPEC_KEY: resolved, "models": described, "reference": config.reference})

    timings = {"load_s": 0.0, "stage_s": 0.0, "decode_s": 0.0, "report_s": 0.0}
    bar = tqdm(total=len(expected), initial=len(expected & present), desc="sweep", unit="record",
               disable=not progress)
    try:
        new_records = _decode_work(config, work, models, store, resolved, described, present, bar, timings)
    finally:  # closed before any message about an interrupt
        bar.close()
    # Stage 1-3 time spent by this sweep, counted once per problem (its records repeat it for
    # every lambda). A first attempt reused from the greedy unit was decoding time there, so
    # its share stays in decoding rather than being moved to stages 1-3.
    stages = {(r["key"].rsplit("|", 3)[0], r["seed"], r.get("feedback_policy")):
              r["stage_s"] - (r["stage1_s"] if r.get("stage1_reused") else 0.0)
              for r in new_records if r.get("stage_s")}
    timings["stage_s"] = sum(stages.values())
    timings["decode_s"] = max(0.0, timings["decode_s"] - timings["stage_s"])

    result = SweepResult(out=store.path, total=len(present), new=len(new_records), timings=timings)
    if write_report:
        from harness.report import write_report

        t0 = time.perf_counter()
        result.report = write_report(store.path)
        timings["report_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - began
    return result


def _decode_work(config, work, models, store, resolved, described, present, bar, timings) -> list[dict]:
    """Load each model that has work (recording it in spec.json) and decode its units; the new records."""
    new_records: list[dict] = []
    loaded_by_model = dict(models or {})
    for model in dict.fromkeys(u.model for u, _, _ in work):
        if model not in loaded_by_model:
            t0 = time.perf_counter()
            loaded_by_model[model] = load_model(model, dtype=config.dtype, device=config.device)
            _warm_up(loaded_by_model[model])
            timings["load_s"] += time.perf_counter() - t0
        loaded = loaded_by_model[model]
        # Written once a model has loaded, so a model that fails to load leaves no spec behind.
        described[model] = json.loads(json.dumps(loaded.describe()))
        store.write_spec({SWEEP_SPEC_KEY: resolved, "models": described, "reference": config.reference})
        cache = MethodCache()
        model_work = [(u, p, e) for u, p, e in work if u.model == model]
        for index, (unit, problems, env) in enumerate(model_work, 1):
            bar.set_description(f"unit {index}/{len(model_work)} {unit.label}")
            t0 = time.perf_counter()
            written = _run_unit(config, unit, problems, env, loaded, store, present, cache, bar)
            timings["decode_s"] += time.perf_counter() - t0
            new_records.extend(written)
    return new_records


def _warm_up(loaded) -> None:
    """One short decode, so the first unit's timings do not carry the first call's set-up costs
    (which would make whatever runs first, usually greedy, look slower and distort cost ratios)."""
    engine.decode(loaded, [[encode(loaded.tokenizer, "Hello, how are you?")] * 2], get_decoder("greedy"),
                  max_new_tokens=2)


def _run_unit(config, unit, problems, env, loaded, store, present, cache, bar) -> list[dict]:
    """Decode the unit's missing records, appending each batch as it finishes."""
    spec = RunSpec(env=unit.env.name, decoder=unit.decoder.name, n=unit.env.n, seed=unit.seed, model=unit.model,
                   env_config=dict(unit.env.config), decoder_config=unit.decoder_config(),
                   max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, stop=list(config.stop),
                   dtype=config.dtype, device=config.device, extraction=config.extraction)
    method = get_method(spec.decoder, **spec.decoder_config)
    todo = [p for p in problems if any(k not in present for k in unit.keys(p.problem_id))]
    # The (problem, variant) pairs of this unit already on disk, in the runner's terms.
    done = {(p.problem_id, lam) for p in problems for lam, k in zip(unit.lambdas or (None,), unit.keys(p.problem_id),
                                                                    strict=True) if k in present}
    written = []
    for attempts in iter_attempt_batches(spec, env, method, loaded, todo, done, cache):
        records = [_annotate(unit, attempt_record(a, loaded.name, spec.seed), a) for a in attempts]
        records = [r for r in records if r["key"] not in present]
        store.append(records)
        present.update(r["key"] for r in records)
        written.extend(records)
        bar.update(len(records))
    return written


def _annotate(unit: Unit, record: dict, attempt) -> dict:
    """Sweep fields on a record: its key, labels, and comparable time costs."""
    lam = attempt.variant_value
    return record | {
        "key": record_key(unit.model, unit.env.label, record["problem_id"], unit.decoder.label, lam, unit.seed,
                          unit.feedback),
        "env_label": unit.env.label,
        "decoder_label": unit.decoder.label,
        "lambda": lam,
        "feedback_policy": unit.feedback,
        # Seconds of compute one answer took, batching amortised: every stage before the final
        # decoding (stage_s) plus the final decoding's share of its batch.
        "stage_s": round(attempt.cost_s - attempt.answer_s, 4),
        "cost_s": round(attempt.cost_s, 4),
    }
