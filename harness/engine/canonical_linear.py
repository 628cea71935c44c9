"""Linear layers whose output rows do not depend on how many rows are computed together.

CPU matrix libraries pick their kernel by the number of rows M. Measured on torch 2.13
(oneDNN / MKL, 1 and 2 threads, every weight shape of SmolLM2 and a few larger ones):
- bfloat16: a single row (M = 1) takes a matrix-vector path that, for inner sizes above
  1024, sums in another order than M >= 2 (the 576 x 1536 down-projection: 50 of 600
  rows differ); M >= 2 agree bit for bit, and inner sizes up to 1024 agree at any M;
- float32: row tiles of 4 and their split over threads leave rows of M < 12 that are not
  a multiple of 4 to edge kernels; M in {4, 8} and M >= 12 agree bit for bit.
A row then decodes differently alone than in a batch. The layers at risk are switched to
CanonicalLinear, which pads a call with fewer rows with zero rows up to a safe count and
drops the padding's outputs; the others are left as they are (no cost).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# bfloat16 / float16 layers whose inner size is at most this run one kernel at every row count.
SAFE_HALF_INNER = 1024


def canonical_rows(rows: int, dtype: torch.dtype) -> int:
    """How many rows to compute so that each of `rows` rows comes out as in any larger batch."""
    if dtype == torch.float32:
        return rows if rows >= 12 or rows % 4 == 0 else -(-rows // 4) * 4
    return max(rows, 2)


def at_risk(layer: nn.Linear) -> bool:
    """Whether `layer`'s rows can round differently with the number of rows computed together."""
    return layer.weight.dtype == torch.float32 or layer.in_features > SAFE_HALF_INNER


class CanonicalLinear(nn.Linear):
    """nn.Linear computed with at least `canonical_rows` rows (same weights, same outputs per row)."""

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // self.in_features
        target = canonical_rows(rows, x.dtype)
        if target == rows or rows == 0:
            return super().forward(x)
        flat = x.reshape(rows, self.in_features)
        padded = torch.cat([flat, flat.new_zeros(target - rows, self.in_features)])
        out = super().forward(padded)[:rows]
        return out.reshape(*x.shape[:-1], out.shape[-1])


def make_canonical(model: nn.Module) -> None:
    """Turn every plain nn.Linear of `model` at risk into a CanonicalLinear (in place; weights untouched)."""
    for module in model.modules():
        if type(module) is nn.Linear and at_risk(module):
            module.__class__ = CanonicalLinear


def make_plain(model: nn.Module) -> None:
    """Undo `make_canonical`."""
    for module in model.modules():
        if type(module) is CanonicalLinear:
            module.__class__ = nn.Linear
