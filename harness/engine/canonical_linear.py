"""Linear layers whose output rows do not depend on how many rows are computed together.

CPU matrix libraries pick their kernel by the number of rows M: in bfloat16 a single
row (M = 1) takes a matrix-vector path that sums in another order than M >= 2 (the
576 x 1536 down-projection of SmolLM2: 50 of 600 rows differ); in float32 the row
tiles of 4 and their split over threads leave rows of M < 12 that are not a multiple
of 4 to edge kernels. A row then decodes differently alone than in a batch. Measured
on torch 2.13 (oneDNN / MKL, 1 and 2 threads): M >= 2 agree bit for bit in bfloat16,
and M in {4, 8} or M >= 12 agree in float32; so a call with fewer rows is padded with
zero rows up to such a count and the padding's outputs are dropped.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def canonical_rows(rows: int, dtype: torch.dtype) -> int:
    """How many rows to compute so that each of `rows` rows comes out as in any larger batch."""
    if dtype == torch.float32:
        return rows if rows >= 12 or rows % 4 == 0 else -(-rows // 4) * 4
    return max(rows, 2)


class CanonicalLinear(nn.Linear):
    """nn.Linear computed with at least `canonical_rows` rows (same weights, same outputs per row)."""

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // x.shape[-1] if x.numel() else 0
        target = canonical_rows(rows, x.dtype)
        if target == rows or rows == 0:
            return super().forward(x)
        flat = x.reshape(rows, x.shape[-1])
        padded = torch.cat([flat, flat.new_zeros(target - rows, flat.shape[-1])])
        out = super().forward(padded)[:rows]
        return out.reshape(*x.shape[:-1], out.shape[-1])


def make_canonical(model: nn.Module) -> None:
    """Turn every plain nn.Linear of `model` into a CanonicalLinear (in place; weights untouched)."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = CanonicalLinear


def make_plain(model: nn.Module) -> None:
    """Undo `make_canonical`."""
    for module in model.modules():
        if type(module) is CanonicalLinear:
            module.__class__ = nn.Linear
