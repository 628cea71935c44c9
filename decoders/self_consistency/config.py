"""Self-consistency (Wang et al., 2022): the config of N sampled answers and a majority vote.

Each of the N answers is an ordinary sample (the `sample` rule below); the method that
draws them in one batched engine call and votes is `method.py` beside it,
since decoders never run a model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from decoders.sample import Sample


@dataclass(frozen=True)
class SelfConsistency(Sample):
    """N samples per problem (temperature / top-k / top-p / min-p as for `sample`), majority vote.

    `n` may be a list (n=1,4,8): each value is a variant, and all of them share one set of
    max(n) samples per problem (N=4 votes over the first 4 samples of N=8).
    """

    n: int | tuple[int, ...] = 5
    # The settings the contract tests run it with (two sample counts sharing samples).
    contract_config: ClassVar[dict[str, str]] = {"n": "1,3", "temperature": "1.0"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.n, list | tuple):
            object.__setattr__(self, "n", tuple(self.n))
            if not self.n:
                raise ValueError("n (=[]) is an empty list; give at least one sample count, e.g. n=5 or n=1,4,8")
        for value in self.counts:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"n (={value!r}) must be a whole number >= 1 (samples per problem); "
                                 "e.g. n=5, or n=1,4,8 for several")
        if len(set(self.counts)) != len(self.counts):
            raise ValueError(f"n (={list(self.counts)}) repeats a value; give each sample count once")

    @property
    def counts(self) -> tuple[int, ...]:
        """The sample counts asked for (one for a single n)."""
        return self.n if isinstance(self.n, tuple) else (self.n,)

    def sampler(self) -> Sample:
        """The per-sample rule: plain sampling with the same settings."""
        return Sample(**self.sampling.fields())

    def config(self) -> dict:
        config = dataclasses.asdict(self)
        if isinstance(self.n, tuple):
            config["n"] = list(self.n)
        return config
