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
    """(K, B, V) source log-probs and (K,) or per-row (K, B) weights -> (B, V) mixture log-probs.

    Edge cases, decided once here:
    - a source with weight exactly 0 contributes nothing, even where its log-prob
      is -inf (0 * -inf would otherwise be NaN);
    - a token with -inf under any source of nonzero weight stays impossible (for a
      negative weight, -inf * w would otherwise be +inf);
    - a row where that leaves no possible token falls back to the row's source of
      largest weight, so decoding never sees NaN.
    """
    num_sources, num_rows, _ = logprobs.shape
    w = torch.as_tensor(weights, dtype=logprobs.dtype, device=logprobs.device)
    if w.ndim == 1 and w.shape[0] == num_sources:
        w = w.view(-1, 1).expand(num_sources, num_rows)
    if w.shape != (num_sources, num_rows):
        raise ValueError(
            f"need one weight per source (or per source and row): weights of shape {tuple(w.shape)} "
            f"for {num_sources} sources x {num_rows} rows"
        )
    w = w.unsqueeze(-1)  # (K, B, 1)
    neg_inf = torch.isneginf(logprobs)
    if not bool(neg_inf.any()):
        # The usual step: every log-prob finite, none of the cases below (same values, fewer passes).
        return torch.log_softmax((w * logprobs).sum(dim=0), dim=-1)
    active = w != 0
    impossible = (neg_inf & active).any(dim=0)
    finite = torch.where(neg_inf, torch.zeros_like(logprobs), logprobs)
    summed = (torch.where(active, w * finite, torch.zeros_like(finite))).sum(dim=0)
    summed = summed.masked_fill(impossible, -math.inf)
    dead = impossible.all(dim=-1)
    if dead.any():
        strongest = w.argmax(dim=0).view(1, num_rows, 1).expand(1, num_rows, logprobs.shape[-1])
        summed[dead] = logprobs.gather(0, strongest)[0][dead]
    return torch.log_softmax(summed, dim=-1)
