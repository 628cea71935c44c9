"""Per-row statistics that come out the same whatever shares the batch."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Vocabularies are padded to a multiple of this many entries (zero probability) so that a
# row's entries take the same SIMD lanes in any batch: elementwise kernels round a tail that
# is not a full vector differently.
LANES = 64


def row_canonical(values: Tensor, fill: float = -math.inf) -> Tensor:
    """(rows, V) -> at least 2 rows (the last repeated) of V padded with `fill` to a multiple of
    LANES: the shape in which each row's statistics come out the same whatever shares the batch.

    A sum over one long row is split between threads; over two or more rows it is not.
    """
    rows, width = values.shape
    if width % LANES:
        values = torch.nn.functional.pad(values, (0, LANES - width % LANES), value=fill)
    return torch.cat([values, values[-1:]]) if rows == 1 else values
