"""Self-certainty per decoded row, collected while the engine decodes."""

from __future__ import annotations

import math

import torch

from decoders.best_of_n.selection import LOGPROB_FLOOR
from decoders.canonical_rows import row_canonical
from harness.engine import lockstep


class SelfCertainty:
    """`on_step` observer: each row's sum over its steps of KL(U || p_t), p_t the model's next-token
    distribution (stream 0, before temperature or truncation)."""

    def __init__(self, num_rows: int) -> None:
        self.sums = torch.zeros(num_rows, dtype=torch.float64)
        self.counts = torch.zeros(num_rows, dtype=torch.float64)

    def __call__(self, view: lockstep.StepView) -> None:
        logprobs = view.logprobs[0].float().clamp(min=LOGPROB_FLOOR)
        rows, width = logprobs.shape
        # Padded to a canonical shape so each row's sum is the same whatever shares its batch.
        means = row_canonical(logprobs, fill=0.0).sum(dim=-1)[:rows].double().cpu() / width
        index = torch.tensor(view.rows, dtype=torch.long)
        self.sums.index_add_(0, index, -math.log(width) - means)
        self.counts.index_add_(0, index, torch.ones(rows, dtype=torch.float64))

    def mean(self, row: int) -> float:
        """Row `row`'s self-certainty (NaN when it decoded no token)."""
        count = float(self.counts[row])
        return float(self.sums[row]) / count if count else math.nan
