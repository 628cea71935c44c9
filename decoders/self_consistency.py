"""Self-consistency (Wang et al., 2022): the config of N sampled answers and a majority vote.

Each of the N answers is an ordinary sample (the `sample` rule below); the method that
draws them in one batched engine call and votes lives in `harness.methods.self_consistency`,
since decoders never run a model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from decoders.registry import register_decoder
from decoders.sample import Sample


@register_decoder("self_consistency")
@dataclass(frozen=True)
class SelfConsistency(Sample):
    """N samples per problem (temperature / top-k / top-p / min-p as for `sample`), majority vote."""

    n: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n (={self.n!r}) must be a whole number >= 1 (samples per problem); e.g. n=5")

    def sampler(self) -> Sample:
        """The per-sample rule: plain sampling with the same settings."""
        return Sample(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p)

    def config(self) -> dict:
        return dataclasses.asdict(self)
