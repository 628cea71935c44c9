"""Ancestral sampling with temperature, top-k, top-p and min-p."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from decoders.base import Step
from decoders.registry import register_decoder
from decoders.sampling_settings import SamplingSettings


@register_decoder("sample")
@dataclass(frozen=True)
class Sample:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    num_streams = 1

    def __post_init__(self) -> None:
        _ = self.sampling  # checked here, when the config is made

    @property
    def sampling(self) -> SamplingSettings:
        """The four settings above as one `SamplingSettings`."""
        return SamplingSettings.of(self)

    def step(self, logprobs: Tensor, rngs: Sequence[torch.Generator]) -> Step:
        # Step.logprobs is the distribution before filtering: stream 0's, the default.
        return Step(token_ids=self.sampling.draw(logprobs[0], rngs))

    def config(self) -> dict:
        return dataclasses.asdict(self)
