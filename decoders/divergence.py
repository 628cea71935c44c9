"""Per-step statistics between distributions given as log-probs over the last axis.

All take (..., V) log-probs and return (...) values in nats. Tokens with zero
probability contribute zero, as the limits 0 * log 0 = 0 say.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _plogp_ratio(lp: Tensor, lq: Tensor) -> Tensor:
    p = lp.exp()
    # Where p == 0 the term is 0 whatever q is; where q == 0 < p it is +inf.
    diff = torch.where(p > 0, lp - lq, torch.zeros_like(lp))
    return torch.where(p > 0, p * diff, torch.zeros_like(lp))


def kl(lp: Tensor, lq: Tensor) -> Tensor:
    """KL(P || Q)."""
    return _plogp_ratio(lp, lq).sum(-1)


def js(lp: Tensor, lq: Tensor) -> Tensor:
    """Jensen-Shannon divergence, bounded by log 2."""
    lm = torch.logaddexp(lp, lq) - math.log(2.0)
    return 0.5 * (kl(lp, lm) + kl(lq, lm))


def entropy(lp: Tensor) -> Tensor:
    p = lp.exp()
    return -torch.where(p > 0, p * lp, torch.zeros_like(lp)).sum(-1)


def top1_agree(lp: Tensor, lq: Tensor) -> Tensor:
    """1.0 where both distributions have the same most likely token."""
    return (lp.argmax(-1) == lq.argmax(-1)).to(lp.dtype)


def log_ratio_at(lp: Tensor, lq: Tensor, token_ids: Tensor) -> Tensor:
    """log P(t) - log Q(t) of each row's token t ((...) ids into the last axis): positive where
    P made that token likelier than Q did, which says which distribution pulled it in."""
    index = token_ids.to(lp.device).long().unsqueeze(-1)
    return lp.gather(-1, index).squeeze(-1) - lq.gather(-1, index).squeeze(-1)
