"""Per-step statistics of a two-stream mixture, collected per row during decoding.

Stream 0 is P1 and stream 1 is P2 (ReDuMix: the original context x and the reflective x2;
DeRa: the reference and the aligned model); the mixture is the decoder's `Step.logprobs`.
`log_ratio_p1_p2` is log P1 - log P2 of the token the row took at that step (forced tokens
included): positive where P1 pulled the text that way, negative where P2 did.
Record fields are the means over a row's steps; with `keep_steps`, every step's values.
"""

from __future__ import annotations

import math

import torch

from decoders import divergence
from decoders.canonical_rows import row_canonical
from harness.engine import lockstep

STAT_NAMES = ("kl_mix_p1", "kl_mix_p2", "kl_p1_p2", "js_p1_p2", "entropy_mix", "top1_agree", "log_ratio_p1_p2")


class MixtureStats:
    """`on_step` observer: per-row sums of the divergence statistics over decoding steps."""

    def __init__(self, num_rows: int, keep_steps: bool = False) -> None:
        self.sums = torch.zeros(num_rows, len(STAT_NAMES), dtype=torch.float64)
        self.counts = torch.zeros(num_rows, dtype=torch.float64)
        self.steps: list[list[list[float]]] | None = [[] for _ in range(num_rows)] if keep_steps else None

    def __call__(self, view: lockstep.StepView) -> None:
        lp1, lp2 = view.logprobs[0], view.logprobs[1]
        mixed = view.step.logprobs.to(lp1.dtype)
        rows = lp1.shape[0]
        lp1, lp2, mixed = (row_canonical(t) for t in (lp1, lp2, mixed))
        token_ids = row_canonical(view.step.token_ids[:, None].to(lp1.device), fill=0)[:, 0]
        values = torch.stack([
            divergence.kl(mixed, lp1), divergence.kl(mixed, lp2), divergence.kl(lp1, lp2),
            divergence.js(lp1, lp2), divergence.entropy(mixed), divergence.top1_agree(lp1, lp2),
            divergence.log_ratio_at(lp1, lp2, token_ids),
        ], dim=-1)[:rows].double().cpu()
        rows = torch.tensor(view.rows)
        self.sums[rows] += values
        self.counts[rows] += 1
        if self.steps is not None:
            for row, row_values in zip(view.rows, values.tolist(), strict=True):
                self.steps[row].append(row_values)

    def per_step(self, row: int) -> dict[str, list[float]]:
        """Each statistic's value at every step of `row` (rounded: these go to JSON)."""
        columns = zip(*self.steps[row], strict=True) if self.steps[row] else [[] for _ in STAT_NAMES]
        return {name: [round(v, 6) for v in column] for name, column in zip(STAT_NAMES, columns, strict=True)}

    def means(self, row: int) -> dict[str, float]:
        count = float(self.counts[row])
        return {
            name: (float(self.sums[row, k]) / count if count else math.nan)
            for k, name in enumerate(STAT_NAMES)
        }
