"""Ancestral sampling with temperature, top-k, top-p and min-p."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from decoders.base import Step
from decoders.registry import register_decoder
from decoders.sampling import check_truncation, draw, filter_logprobs


@register_decoder("sample")
@dataclass(frozen=True)
class Sample:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    num_streams = 1

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(
                f"temperature (={self.temperature}) must be > 0; "
                "for deterministic decoding use decoder 'greedy'"
            )
        check_truncation(self.top_k, self.top_p, self.min_p)

    def step(self, logprobs: Tensor, rngs: Sequence[torch.Generator]) -> Step:
        filtered = filter_logprobs(logprobs[0], self.temperature, self.top_k, self.top_p, self.min_p)
        # Step.logprobs is the distribution before filtering: stream 0's, the default.
        return Step(token_ids=draw(filtered, rngs))

    def config(self) -> dict:
        return dataclasses.asdict(self)
