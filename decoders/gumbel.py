"""The Gumbel-softmax decoder (Randomized Soft Thinking's best noise).

While thinking, a row's weights over its kept tokens are softmax((log p + g) / tau) with
g standard Gumbel noise from the row's generator, and the recorded token is the
Gumbel-max argmax(log p + g): the text is an exact sample from the kept distribution.
Small tau makes the input nearly one-hot on that sample; large tau spreads it.

`tau` may be a list (tau=0.1,0.5,1): each value is a variant of one unit, decoded on its
own (the values share no work). Thinking and the answer phase: see `decoders.thinking`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from decoders.registry import register_decoder
from decoders.soft_weights import gumbel_noise, gumbel_softmax
from decoders.thinking import ThinkingDecoder
from decoders.thinking_report import THINKING
from harness.methods.axes import Axis


@register_decoder("gumbel", contributes=THINKING)
@dataclass(frozen=True)
class Gumbel(ThinkingDecoder):
    """Attributes (beyond ThinkingDecoder's): `tau`, the Gumbel-softmax temperature (> 0),
    or a list of values to decode as variants."""

    tau: float | tuple[float, ...] = 0.5
    # A list of taus is decoded value by value as variants of one unit (they share no work).
    variant_axes: ClassVar[tuple[Axis, ...]] = (Axis("tau", "tau", kind=float, example="[0.1, 0.5, 1]"),)
    # The settings the contract tests run it with on a tiny model (two variants, a marker it can write).
    contract_config: ClassVar[dict[str, str]] = {"think_end": "ab", "tau": "0.5,1.0"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.tau, list | tuple):
            object.__setattr__(self, "tau", tuple(self.tau))
            if not self.tau:
                raise ValueError("tau (=[]) is an empty list; give at least one value, e.g. tau=0.5 or tau=0.1,0.5,1")
        for value in self.taus:
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"tau (={value!r}) must be > 0 (the Gumbel-softmax temperature); e.g. tau=0.5")
        if len(set(self.taus)) != len(self.taus):
            raise ValueError(f"tau (={list(self.taus)}) repeats a value; give each once")

    @property
    def taus(self) -> tuple[float, ...]:
        return self.tau if isinstance(self.tau, tuple) else (self.tau,)

    def variants(self) -> list[dict]:
        """One variant per tau when tau is a list; [{}] for a single value."""
        return [{"tau": float(t)} for t in self.tau] if isinstance(self.tau, tuple) else [{}]

    def for_variant(self, variant: dict) -> Gumbel:
        return self if not variant else dataclasses.replace(self, tau=variant["tau"])

    def config(self) -> dict:
        config = super().config()
        if isinstance(self.tau, tuple):
            config["tau"] = list(self.tau)
        return config

    def mix(self, probs: Tensor, rngs: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
        return gumbel_softmax(probs, gumbel_noise(probs.shape[-1], rngs, probs.device), float(self.tau))
