"""Pure functions for soft (concept-token) inputs: the kept distribution, the ways of
weighting it, seeded noise, and statistics of the weights.

Every random draw takes one generator per row and draws a fixed number of values per
row and step, so a row's draws never depend on the rows batched with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from decoders.canonical_rows import row_canonical
from decoders.sampling import filter_logprobs


def kept_distribution(logprobs: Tensor, temperature: float, top_k: int, top_p: float, min_p: float,
                      max_topk: int) -> tuple[Tensor, Tensor]:
    """(B, V) log-probs -> ((B, max_topk) probabilities of the kept tokens, renormalised and
    sorted most likely first (0 past the kept set), (B, max_topk) their token ids).

    Temperature, then top-k, top-p and min-p (min-p relative to the top probability), as
    `sampling.filter_logprobs`; at most `max_topk` tokens are kept.
    """
    return kept_from_tempered(torch.log_softmax(logprobs / temperature, dim=-1), top_k, top_p, min_p, max_topk)


def kept_from_tempered(tempered: Tensor, top_k: int, top_p: float, min_p: float,
                       max_topk: int) -> tuple[Tensor, Tensor]:
    """`kept_distribution` from log-probs already divided by the temperature and renormalised.

    With top_k set, top-p and min-p run on the top_k candidates only, which keeps the same
    tokens as `sampling.filter_logprobs` (everything outside them is already removed) without
    sorting the whole vocabulary every step.
    """
    vocab = tempered.shape[-1]
    if not top_k or top_k >= vocab:
        filtered = filter_logprobs(tempered, 1.0, 0, top_p, min_p)
        top_lp, top_ids = torch.topk(filtered, min(max_topk, vocab), dim=-1)
    else:
        top_lp, top_ids = torch.topk(tempered, top_k, dim=-1)  # sorted, most likely first
        if top_p < 1.0:
            mass_before = top_lp.exp().cumsum(-1) - top_lp.exp()
            top_lp = top_lp.masked_fill(mass_before >= top_p, -math.inf)
        if min_p > 0.0:
            top_lp = top_lp.masked_fill(top_lp < top_lp[:, :1] + math.log(min_p), -math.inf)
        top_lp, top_ids = top_lp[:, :max_topk], top_ids[:, :max_topk]
    probs = top_lp.exp()  # exp(-inf) = 0 outside the kept set
    return probs / probs.sum(dim=-1, keepdim=True), top_ids


def entropy(logprobs: Tensor) -> Tensor:
    """(B, V) log-probs -> (B,) entropy in nats (0 * log 0 counted as 0), each row's the same in
    any batch (`row_canonical`)."""
    rows = logprobs.shape[0]
    logprobs = row_canonical(logprobs)
    probs = logprobs.exp()
    return -(probs * logprobs.masked_fill(probs == 0, 0.0)).sum(dim=-1)[:rows]


def weight_statistics(weights: Tensor) -> dict[str, Tensor]:
    """(B, k) weights -> per row: their entropy, the effective number of mixed tokens
    (exp of that entropy) and the largest weight."""
    logw = torch.log(weights.clamp_min(1e-30)).masked_fill(weights == 0, 0.0)
    h = -(weights * logw).sum(dim=-1)
    return {"weights_entropy": h, "effective_tokens": h.exp(), "top1_weight": weights.max(dim=-1).values}


def gumbel_noise(shape_per_row: int, rngs: Sequence[torch.Generator], device) -> Tensor:
    """(B, shape_per_row) standard Gumbel noise, row i from rngs[i]."""
    uniform = torch.stack([_uniform(shape_per_row, g, device) for g in rngs])
    return -torch.log(-torch.log(uniform))


def gumbel_softmax(probs: Tensor, noise: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """Gumbel-softmax over a kept set: ((B, k) weights softmax((log p + g) / tau),
    (B,) position of the Gumbel-max argmax(log p + g), an exact sample from p).
    Positions with p = 0 get weight 0 and are never chosen."""
    scores = torch.log(probs).masked_fill(probs == 0, -math.inf) + noise
    return torch.softmax(scores / tau, dim=-1), scores.argmax(dim=-1)


def different_tokens(probs: Tensor, noise: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """`count` tokens drawn without replacement from each row's kept set (Gumbel top-k, the
    first an exact sample from p); ((B, k) weights: their renormalised probabilities, 0
    elsewhere, (B,) position of the first drawn)."""
    scores = torch.log(probs).masked_fill(probs == 0, -math.inf) + noise
    count = min(count, probs.shape[-1])
    drawn = torch.topk(scores, count, dim=-1).indices
    chosen = torch.zeros_like(probs).scatter(-1, drawn, 1.0) * (probs > 0)
    weights = probs * chosen
    return weights / weights.sum(dim=-1, keepdim=True), drawn[:, 0]


def dirichlet(probs: Tensor, alpha: float, rngs: Sequence[torch.Generator]) -> Tensor:
    """Weights ~ Dirichlet(alpha * p) over each row's kept set (0 outside it), from the row's
    generator: independent Gamma(alpha * p_i) draws, renormalised."""
    rows = []
    for i, gen in enumerate(rngs):
        kept = probs[i] > 0
        gammas = torch.zeros_like(probs[i])
        gammas[kept] = standard_gamma(alpha * probs[i][kept], gen)
        if gammas.sum() <= 0:  # every draw underflowed (tiny shapes): the row's most likely token
            gammas[probs[i].argmax()] = 1.0
        rows.append(gammas / gammas.sum())
    return torch.stack(rows)


def draw_position(weights: Tensor, rngs: Sequence[torch.Generator]) -> Tensor:
    """(B, k) weights -> (B,) one position per row drawn from its weights (row i with rngs[i])."""
    return torch.stack([
        torch.multinomial(weights[i].to(g.device), 1, generator=g)[0].to(weights.device)
        for i, g in enumerate(rngs)
    ])


def standard_gamma(shape: Tensor, gen: torch.Generator) -> Tensor:
    """Gamma(shape, 1) draws with a seeded generator (torch's own sampler takes none):
    Marsaglia and Tsang's method, boosted by U^(1/a) for shapes below 1."""
    shape = shape.double()
    boost = shape < 1
    a = torch.where(boost, shape + 1, shape)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.zeros_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while todo.any():  # each round accepts about 95% or more of what is left
        n = int(todo.sum())
        x = torch.randn(n, generator=gen, dtype=torch.float64, device=gen.device).to(a.device)
        u = torch.rand(n, generator=gen, dtype=torch.float64, device=gen.device).to(a.device)
        v = (1 + c[todo] * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d[todo] - d[todo] * v + d[todo] * torch.log(v.clamp_min(1e-300)))
        idx = todo.nonzero().squeeze(-1)
        out[idx[ok]] = (d[todo] * v)[ok]
        todo[idx[ok]] = False
    u = torch.rand(shape.shape, generator=gen, dtype=torch.float64, device=gen.device).to(a.device)
    out = torch.where(boost, out * u ** (1.0 / shape.clamp_min(1e-12)), out)
    return out.to(torch.float32)


def _uniform(n: int, gen: torch.Generator, device) -> Tensor:
    # Open interval (0, 1): the double log of the Gumbel transform stays finite.
    u = torch.rand(n, generator=gen, device=gen.device, dtype=torch.float64).to(device)
    return u.clamp(1e-12, 1 - 1e-12).float()
