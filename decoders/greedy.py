"""Greedy decoding: the most likely token of the single stream."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from decoders.base import Step
from decoders.registry import register_decoder


@register_decoder("greedy")
@dataclass(frozen=True)
class Greedy:
    num_streams = 1
    deterministic = True  # draws nothing: its answer can be reused wherever the same greedy decode is needed

    def step(self, logprobs: Tensor, rngs: Sequence[torch.Generator]) -> Step:
        return Step(token_ids=logprobs[0].argmax(dim=-1))

    def config(self) -> dict:
        return dataclasses.asdict(self)
