"""Which records a run or sweep folder is meant to hold, computed from its spec alone.

A record's identity is its sweep `key` (model|env|problem|decoder|variant|seed|unit),
or, in a `redumix run` folder, its problem and variant. A variant is written as
`harness.methods.base.variant_key` names it ("n=4", "-", or a bare number on an axis keyed
so, such as ReDuMix's lambda); the unit part holds the values of the method's unit axes
(`harness.methods.axes.unit_key`: ReDuMix's feedback policy, or "-"). The grid of a spec is the set
of identities its config asks for: reading a folder counts a record only when its
identity is in the grid, and only once; resuming decodes exactly the missing ones.
Problem ids are deterministic ("<env>-s<seed>-<index>"), so no problem is generated; problems
with ids of their own (a problem file's rows, `envs.file_dataset`) are listed in spec.json's
"problem_ids" (`own_problem_ids`), as the env gave them when the folder was last written.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envs.base import problem_id
from harness.methods.axes import unit_key
from harness.methods.base import variant_key
from harness.methods.registry import axes_of


def record_key(model: str, env: str, problem: str, decoder: str, variant: Mapping[str, Any], seed: int,
               unit: str | None) -> str:
    """A sweep record's identity, e.g. 'smollm2-135m|basic_arithmetic|basic_arithmetic-s0-3|redumix|0.5|0|binary';
    `unit`: the unit axes' values as `harness.methods.axes.unit_key` writes them (None: "-")."""
    return "|".join([model, env, problem, decoder, variant_key(variant), str(seed), unit or "-"])


def run_record_identity(problem: str, variant: Mapping[str, Any]) -> str:
    """A `redumix run` record's identity: its problem and its variant (e.g. its lambda)."""
    return f"{problem}|{variant_key(variant)}"


def record_identity(record: dict) -> str:
    """The identity of a record already checked by `harness.runs.record_schema`."""
    if "key" in record:
        return record["key"]
    return run_record_identity(record["problem_id"], record_variant(record))


def record_variant(record: Mapping[str, Any]) -> dict:
    """The variant a record was decoded under. Records written before variants were recorded
    carry only the value of their variant axis as a field of its name (ReDuMix's `lambda`: the
    axes keyed by their bare value, which were the only ones then)."""
    if isinstance(record.get("variant"), dict):
        return dict(record["variant"])
    from harness.methods.registry import bare_variant_names

    return next(({name: record[name]} for name in sorted(bare_variant_names()) if record.get(name) is not None), {})


@dataclass(frozen=True)
class Grid:
    """The identities of every record a spec asks for."""

    expected: frozenset[str]
    kind: str  # "sweep" or "run"

    def __contains__(self, identity: str) -> bool:
        return identity in self.expected

    def __len__(self) -> int:
        return len(self.expected)


def by_position(problems: list, stored_spec: dict | None) -> list:
    """`problems`, named by position when the folder's spec.json lists no "problem_ids": a folder
    written before problems with ids of their own were listed goes on naming them as it did."""
    if stored_spec is None or "problem_ids" in stored_spec:
        return problems
    return [dataclasses.replace(p, problem_id=problem_id(p.env, p.seed, p.index)) for p in problems]


def own_problem_ids(problems: Mapping[tuple[str, int], list]) -> dict[str, dict[str, list[str]]]:
    """spec.json's "problem_ids" of a sweep: {env label: {seed: ids}} of the (env label, seed)
    pairs of `problems` (each: its `envs.Problem`s) whose ids are not their positions'."""
    listed: dict[str, dict[str, list[str]]] = {}
    for (label, seed), found in problems.items():
        ids = [p.problem_id for p in found]
        if ids != [problem_id(p.env, p.seed, p.index) for p in found]:
            listed.setdefault(label, {})[str(seed)] = ids
    return listed


def sweep_grid(resolved: dict, variants: Mapping[str, list[dict]] | None = None,
               units: Mapping[str, list[dict]] | None = None,
               problem_ids: Mapping[str, Mapping[str, list[str]]] | None = None) -> Grid:
    """The grid of a sweep's resolved config (`SweepConfig.resolved()`, as spec.json stores it).

    `variants` and `units`: each decoder label's variants and unit-axis values (spec.json's
    "variants" and "units"); a decoder not in them has the ones its method declares for the
    values the entry lists (specs written before they were recorded). `problem_ids`: the ids of
    problems that have their own (`own_problem_ids`); any other problem's id is its position's.
    """
    keys = set()
    for model in resolved["models"]:
        for env in resolved["envs"]:
            for seed in resolved["seeds"]:
                problems = ((problem_ids or {}).get(env["label"]) or {}).get(str(seed)) or \
                    [problem_id(env["name"], seed, i) for i in range(env["n"])]
                for dec in resolved["decoders"]:
                    for unit in _units(dec, units):
                        for variant in _variants(dec, variants):
                            keys.update(record_key(model, env["label"], p, dec["label"], variant, seed, unit_key(unit))
                                        for p in problems)
    return Grid(frozenset(keys), "sweep")


def run_grid(run: dict, variants: list[dict] | None = None, problem_ids: list[str] | None = None) -> Grid:
    """The grid of a `redumix run` spec (spec.json's "run"): its problems under each variant it
    decodes (`variants`: spec.json's; without them, those its method has for the stored config;
    `problem_ids`: spec.json's, for problems with ids of their own, else their positions')."""
    if variants is None:
        variants = _config_variants(run["decoder"], run.get("decoder_config") or {})
    problems = problem_ids or [problem_id(run["env"], run["seed"], i) for i in range(run["n"])]
    return Grid(frozenset(run_record_identity(p, v) for p in problems for v in variants), "run")


def grid_of(spec: dict | None) -> Grid | None:
    """The grid of a folder's spec.json; None when there is no spec (nothing to check against)."""
    if spec is None:
        return None
    if "sweep" in spec:
        return sweep_grid(spec["sweep"], spec.get("variants"), spec.get("units"), spec.get("problem_ids"))
    return run_grid(spec["run"], spec.get("variants"), spec.get("problem_ids"))


def _variants(dec: dict, variants: Mapping[str, list[dict]] | None) -> list[dict]:
    if variants and dec["label"] in variants:
        return variants[dec["label"]]
    for axis in axes_of(dec["name"]).variants:
        if dec.get(axis.sweep_key):
            return [{axis.record: value} for value in dec[axis.sweep_key]]
    return [{}]


def _config_variants(decoder: str, config: dict) -> list[dict]:
    """The variants method `decoder` decodes under `config` (a spec written before variants were stored)."""
    from harness.methods.registry import get_method

    listed = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return get_method(decoder, **listed).variants()


def _units(dec: dict, units: Mapping[str, list[dict]] | None) -> list[dict]:
    if units and dec["label"] in units:
        return units[dec["label"]]
    axes = axes_of(dec["name"]).units
    values = [dec.get(axis.sweep_key) or [] for axis in axes]
    return [dict(zip([a.record for a in axes], combo, strict=True)) for combo in itertools.product(*values)]
