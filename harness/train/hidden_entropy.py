"""Entropies along a rollout's thinking, as pure functions of tensors and texts.

- `energy_entropy`: the entropy (nats) of a hidden state's energy across its dimensions,
  p_i = h_i^2 / sum_j h_j^2. A proxy for "hidden-state entropy": it is highest (log H) when
  every dimension carries the same share and 0 when one dimension carries all of it, and it
  does not change with the state's scale.
- `next_token_entropy`: the entropy (nats) of the next-token distribution softmax(logits / T).
- `effective_tokens`: exp of the entropy of mixture weights, how many tokens an input fed in
  effect (1 for a token).
- `thinking_steps`: how many leading completion steps belong to the thinking, by text.
- `position_means`: the mean of a per-step value at each thinking position, over the rows
  still thinking there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def energy_entropy(hidden: Tensor) -> Tensor:
    """(..., H) hidden states -> (...) entropy in nats of p_i = h_i^2 / ||h||^2 (0 for a zero state)."""
    energy = hidden.float().pow(2)
    total = energy.sum(dim=-1, keepdim=True)
    p = energy / total.clamp_min(torch.finfo(energy.dtype).tiny)
    return -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=-1)


def next_token_entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """(..., V) logits -> (...) entropy in nats of softmax(logits / temperature)."""
    if temperature <= 0:
        raise ValueError(f"temperature (={temperature:g}) must be above 0")
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -torch.where(logp > float("-inf"), logp.exp() * logp, torch.zeros_like(logp)).sum(dim=-1)


def effective_tokens(weights: Tensor) -> Tensor:
    """(..., K) mixture weights (summing to 1; zeros allowed) -> (...) exp(entropy of the weights)."""
    w = weights.float()
    return torch.exp(-torch.where(w > 0, w * w.log(), torch.zeros_like(w)).sum(dim=-1))


def thinking_steps(token_texts: Sequence[str], marker: str) -> int:
    """How many leading steps of a completion (each step's text, in order) start before `marker`
    does: the thinking. A completion without the marker thought throughout."""
    text = "".join(token_texts)
    at = text.find(marker)
    if at < 0:
        return len(token_texts)
    start, count = 0, 0
    for piece in token_texts:
        if start >= at:
            break
        count += 1
        start += len(piece)
    return count


def position_means(values: Sequence[Sequence[float]], min_rows: int = 1) -> list[tuple[int, float, int]]:
    """Per position t: (t, the mean of the rows' t-th value, how many rows have one), for the
    positions at least `min_rows` rows reach; `values[r]` holds row r's thinking steps in order."""
    if min_rows < 1:
        raise ValueError(f"min_rows (={min_rows}) must be at least 1")
    out = []
    longest = max((len(row) for row in values), default=0)
    for t in range(longest):
        here = [row[t] for row in values if len(row) > t and not math.isnan(row[t])]
        if len(here) >= min_rows:
            out.append((t, sum(here) / len(here), len(here)))
    return out
