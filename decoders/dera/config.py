"""DeRa: decoding-time realignment between a reference and an aligned model.

Each step mixes the two models' next-token distributions over one shared context,

    P(. | context) = softmax(lam * logits_aligned + (1 - lam) * logits_ref),

through the same log-linear mixture ReDuMix uses (`decoders.mixture`). lam = 0 decodes
the reference model, lam = 1 the aligned one; between, it interpolates the alignment
strength, and above 1 it extrapolates past the aligned model (weaker regularisation).
Negative lam would move away from the aligned model on the far side of the reference,
which no alignment strength corresponds to, so it is refused.

The config names the two models; running them is `method.py`'s job.
`lam` may be a tuple of values for a sweep: rows of every value share one batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from decoders.base import Step
from decoders.mix_step import MixtureStep
from decoders.sampling_settings import SamplingSettings

# Streams of a DeRa row, in order: the reference model's, then the aligned model's.
ROLES = ("ref", "aligned")


@dataclass(frozen=True)
class DeRa:
    """Config of a DeRa run.

    Attributes:
        lam: weight of the aligned model (1 - lam goes to the reference); a tuple decodes
            one answer per value, all values in shared batches.
        ref: the reference model (embedded name, HF folder or .gguf file); "" is the
            run's own model (`--model`, or the sweep's model).
        aligned: the aligned model, e.g. a folder written by `redumix distill`; required.
        sample / temperature / top_k / top_p / min_p: token choice from the mixture
            (greedy by default).
        lambdas_per_batch: how many lam values share one batch (0: all of them); lower it
            when batch_size x lam values x 2 models does not fit in memory.
    """

    lam: float | tuple[float, ...] = 0.5
    # The settings the contract tests run it with (two variants; the aligned model is the run's own).
    contract_config: ClassVar[dict[str, str]] = {"lam": "0,1.5", "aligned": "smollm2-135m"}
    ref: str = ""
    aligned: str = ""
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    lambdas_per_batch: int = 0

    num_streams = 2

    def __post_init__(self) -> None:
        lam = tuple(self.lam) if isinstance(self.lam, list | tuple) else self.lam
        values = lam if isinstance(lam, tuple) else (lam,)
        if not values:
            raise ValueError("lam (=()) is an empty list; give at least one value, e.g. lam=1 or lam=0,0.5,1,2")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0.0:
                raise ValueError(
                    f"lam (={value!r}) must be a number >= 0 for dera: 0 decodes the reference model, 1 the "
                    "aligned one, values above 1 extrapolate past it"
                )
        object.__setattr__(self, "lam", tuple(float(v) for v in lam) if isinstance(lam, tuple) else float(lam))
        _ = self.sampling  # checked here, when the config is made
        if self.lambdas_per_batch < 0:
            raise ValueError(
                f"lambdas_per_batch (={self.lambdas_per_batch}) must be >= 0; 0 puts every lam in one batch"
            )

    @property
    def sampling(self) -> SamplingSettings:
        """temperature / top_k / top_p / min_p as one `SamplingSettings` (used when `sample` is set)."""
        return SamplingSettings.of(self, temperature_fix="use sample=false for greedy")

    @property
    def lambdas(self) -> tuple[float, ...]:
        return self.lam if isinstance(self.lam, tuple) else (self.lam,)

    @property
    def deterministic(self) -> bool:
        return not self.sample

    def check_settings(self, max_new_tokens: int) -> None:
        """DeRa cannot start without its aligned model; say so before anything loads."""
        if not self.aligned:
            raise ValueError(
                "dera needs the aligned model: set aligned to a model folder (e.g. one written by "
                "`redumix distill`), a .gguf file or an embedded model name: `--decoder-config "
                "aligned=PATH,lam=0,0.5,1` on the command line, `models: {aligned: PATH}` in a sweep config"
            )

    def models(self) -> dict[str, str | None]:
        """The model of each role; None: the run's own model."""
        return {"ref": self.ref or None, "aligned": self.aligned or None}

    def mixture(self, lams: Sequence[float] | None = None) -> MixtureStep:
        """The step rule for rows with weights `lams` (one per row; default: the config's single lam)."""
        if lams is None:
            if isinstance(self.lam, tuple):
                raise ValueError(f"lam (={self.lam}) holds several values; pass one lam per row")
            weights: tuple[float, ...] | Tensor = (1.0 - self.lam, self.lam)
        else:
            aligned = torch.tensor(list(lams), dtype=torch.float64)
            weights = torch.stack([1.0 - aligned, aligned])
        return MixtureStep(weights, sample=self.sample, **self.sampling.fields(), name=self.name)

    def step(self, logprobs: Tensor, rngs: Sequence[torch.Generator]) -> Step:
        return self.mixture().step(logprobs, rngs)

    def config(self) -> dict:
        return dataclasses.asdict(self)
