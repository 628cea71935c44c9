"""The log-linear mixture shared by every mixing decoder (ReDuMix, DeRa, CFG).

    mix(lp_1..lp_K; w_1..w_K) = log_softmax( sum_k w_k * lp_k )

Mixing log-probs or raw logits gives the same distribution after renormalisation,
so sources may be either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def mix_logprobs(logprobs: Tensor, weights: Sequence[float] | Tensor) -> Tensor:
    """(K, B, V) source log-probs and K weights -> (B, V) normalised mixture log-probs.

    Edge cases, decided once here:
    - a source with weight exactly 0 contributes nothing, even where its log-prob
      is -inf (0 * -inf would otherwise be NaN);
    - a token with -inf under any source of nonzero weight stays impossible (for a
      negative weight, -inf * w would otherwise be +inf);
    - a row where that leaves no possible token falls back to the source of
      largest weight, so decoding never sees NaN.
    """
    w = torch.as_tensor(weights, dtype=logprobs.dtype, device=logprobs.device)
    if w.ndim != 1 or w.shape[0] != logprobs.shape[0]:
        raise ValueError(f"need one weight per source: {tuple(w.shape)} weights for {logprobs.shape[0]} sources")
    w = w.view(-1, 1, 1)
    active = w != 0
    impossible = (torch.isneginf(logprobs) & active).any(dim=0)
    finite = torch.where(torch.isneginf(logprobs), torch.zeros_like(logprobs), logprobs)
    summed = (torch.where(active, w * finite, torch.zeros_like(finite))).sum(dim=0)
    summed = summed.masked_fill(impossible, -math.inf)
    dead = impossible.all(dim=-1)
    if dead.any():
        summed[dead] = logprobs[int(w.view(-1).argmax())][dead]
    return torch.log_softmax(summed, dim=-1)
