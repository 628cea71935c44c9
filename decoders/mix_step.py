"""One decoding step over K streams mixed log-linearly: the core of ReDuMix and DeRa."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from decoders.base import RowState, Step
from decoders.mixture import mix_logprobs
from decoders.sampling_settings import SamplingSettings


@dataclass(frozen=True)
class MixtureStep:
    """Mix the K streams with `weights`, then pick greedily or by sampling.

    With `sample=False` the token is the mixture's argmax; otherwise it is drawn
    after temperature / top-k / top-p / min-p filtering, with each row's generator.
    `weights` is one weight per stream, or a (K, B) tensor of per-row weights (rows
    with different lambda in one batch); per-row weights are per-row state, so the
    engine keeps each row's weights as rows leave the batch.
    """

    weights: tuple[float, ...] | Tensor
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    name: str = "mixture"

    def __post_init__(self) -> None:
        _ = self.sampling  # checked here, when the config is made

    @property
    def sampling(self) -> SamplingSettings:
        """temperature / top_k / top_p / min_p as one `SamplingSettings` (used when `sample` is set)."""
        return SamplingSettings.of(self, temperature_fix="use sample=False for greedy")

    @property
    def num_streams(self) -> int:
        return len(self.weights)

    def init_state(self, num_rows: int) -> RowState:
        """Per-row weights as (B, K) state, rows first; shared weights need none."""
        if not isinstance(self.weights, Tensor) or self.weights.ndim == 1:
            return {}
        if self.weights.ndim != 2 or self.weights.shape[1] != num_rows:
            raise ValueError(
                f"per-row weights of shape {tuple(self.weights.shape)} do not fit {num_rows} rows; "
                f"give a (streams, rows) = ({self.num_streams}, {num_rows}) tensor"
            )
        return {"weights": self.weights.T}

    def step(self, logprobs: Tensor, rngs: Sequence[torch.Generator], state: RowState | None = None) -> Step:
        weights = state["weights"].T if state and "weights" in state else self.weights
        mixed = mix_logprobs(logprobs, weights)
        if not self.sample:
            return Step(token_ids=mixed.argmax(dim=-1), logprobs=mixed)
        return Step(token_ids=self.sampling.draw(mixed, rngs), logprobs=mixed)

    def config(self) -> dict:
        config = dataclasses.asdict(self)
        if isinstance(self.weights, Tensor):
            config["weights"] = self.weights.tolist()
        return config
