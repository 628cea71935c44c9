"""A sweep's work units: plain data, so a unit can run in another process or on another machine.

A unit is one decoder entry on one (model, env, seed), under one feedback policy; it covers
all of the method's variants, which share work (ReDuMix's stages 1-3 run once per problem
for every lambda; self-consistency's sample counts share one set of samples). Its record
keys are made of the config alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.runs.record_grid import record_key
from harness.runs.sweep_config import DecoderEntry, EnvEntry, SweepConfig


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
        """The record keys of one problem, one per variant (in the order of `variants`)."""
        return [record_key(self.model, self.env.label, problem_id, self.decoder.label, v, self.seed, self.feedback)
                for v in self.variants]

    @property
    def variants(self) -> tuple[dict, ...]:
        if self.lambdas is not None:
            return tuple({"lambda": lam} for lam in self.lambdas)
        return self.decoder.variants


def plan(config: SweepConfig) -> list[Unit]:
    """Every work unit of `config`, grouped by model so each model loads once."""
    units = []
    for model in config.models:
        for env in config.envs:
            for seed in config.seeds:
                for dec in config.decoders:
                    for policy in dec.feedback or (None,):
                        # A unit covers all of the method's variants: they share work.
                        units.append(Unit(model, env, seed, dec, policy, dec.lambdas))
    return units
