"""A sweep's work units: plain data, so a unit can run in another process or on another machine.

A unit is one decoder entry on one (model, env, seed), under one value of each of the
method's unit axes (ReDuMix's feedback policy); it covers all of the method's variants,
which share work (ReDuMix's stages 1-3 run once per problem for every lambda;
self-consistency's sample counts share one set of samples). Both kinds of axes are the
method's declarations (`harness.methods.axes`). Its record keys are made of the config alone.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from harness.methods.axes import unit_key, variant_key
from harness.runs.record_grid import record_key
from harness.runs.sweep_config import DecoderEntry, EnvEntry, SweepConfig


@dataclass(frozen=True)
class Unit:
    """One decoder entry on one (model, env, seed), under one value of each unit axis."""

    model: str
    env: EnvEntry
    seed: int
    decoder: DecoderEntry
    # The unit axes' values, as (record field, value) pairs ((("feedback_policy", "binary"),)); () without any.
    setting: tuple[tuple[str, Any], ...] = ()

    @property
    def fields(self) -> dict[str, Any]:
        """The unit axes' values by record field, as every record of the unit carries them."""
        return dict(self.setting)

    @property
    def label(self) -> str:
        parts = [self.env.label, self.decoder.label, *(str(v) for _, v in self.setting)]
        if len(self.variants) == 1 and self.variants[0]:
            parts.append(variant_key(self.variants[0]))
        return " ".join(parts) + f" s{self.seed}"

    def decoder_config(self) -> dict:
        """The method's config for this unit: the entry's, its listed grids, this unit's axis values."""
        config = dict(self.decoder.config)
        for axis in self.decoder.axes.variants:
            values = self.decoder.listed.get(axis.sweep_key)
            if values is not None:
                config[axis.param] = tuple(values) if len(values) > 1 else values[0]
        params = {axis.record: axis.param for axis in self.decoder.axes.units}
        for field, value in self.setting:
            config[params[field]] = value
        return config

    def keys(self, problem_id: str) -> list[str]:
        """The record keys of one problem, one per variant (in the order of `variants`)."""
        unit = unit_key(self.fields)
        return [record_key(self.model, self.env.label, problem_id, self.decoder.label, v, self.seed, unit)
                for v in self.variants]

    @property
    def variants(self) -> tuple[dict, ...]:
        return self.decoder.variants


def plan(config: SweepConfig) -> list[Unit]:
    """Every work unit of `config`, grouped by model so each model loads once."""
    units = []
    for model in config.models:
        for env in config.envs:
            for seed in config.seeds:
                for dec in config.decoders:
                    # A unit covers all of the method's variants (they share work); one unit per
                    # combination of its unit axes' values.
                    for setting in unit_settings(dec):
                        units.append(Unit(model, env, seed, dec, setting))
    return units


def unit_settings(dec: DecoderEntry) -> list[tuple[tuple[str, Any], ...]]:
    """Each combination of the entry's unit-axis values, as `Unit.setting`s ([()] without unit axes)."""
    fields = [axis.record for axis in dec.axes.units]
    values = [dec.listed[axis.sweep_key] for axis in dec.axes.units]
    return [tuple(zip(fields, combo, strict=True)) for combo in itertools.product(*values)]
