"""Pure functions that turn log-probs into a token: filtering and seeded draws.

The settings they take, validated, are `decoders.sampling_settings.SamplingSettings`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def filter_logprobs(
    logprobs: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
) -> Tensor:
    """(B, V) log-probs -> (B, V) renormalised log-probs after temperature and truncation.

    Order follows the common convention (transformers' warpers, Soft Thinking):
    temperature, then top-k, then top-p, then min-p. Removed tokens get -inf.
    The most likely token always survives, so a row never becomes empty.
    """
    out = torch.log_softmax(logprobs / temperature, dim=-1)
    if top_k and top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, -math.inf)
    if top_p < 1.0:
        sorted_lp, order = torch.sort(out, dim=-1, descending=True)
        cum = sorted_lp.exp().cumsum(-1)
        # Drop a token when the mass before it already reaches top_p.
        drop_sorted = (cum - sorted_lp.exp()) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, -math.inf)
    if min_p > 0.0:
        top = out.max(dim=-1, keepdim=True).values
        out = out.masked_fill(out < top + math.log(min_p), -math.inf)
    return torch.log_softmax(out, dim=-1)


def draw(logprobs: Tensor, rngs: Sequence[torch.Generator]) -> Tensor:
    """(B, V) log-probs -> (B,) token ids, row i drawn with its own generator rngs[i].

    A generator on another device than the log-probs (a CPU one with CUDA logits)
    draws that row on its own device, since torch.multinomial refuses a generator
    from another device; that costs a transfer per row and step, so callers make
    generators on the model's device (see `row_generator`).
    """
    if len(rngs) != logprobs.shape[0]:
        raise ValueError(f"need one generator per row: {len(rngs)} for {logprobs.shape[0]} rows")
    probs = logprobs.float().exp()
    return torch.stack([_draw_row(probs[i], rngs[i]) for i in range(probs.shape[0])])


def _draw_row(probs: Tensor, gen: torch.Generator) -> Tensor:
    if gen.device == probs.device:
        return torch.multinomial(probs, 1, generator=gen)[0]
    return torch.multinomial(probs.to(gen.device), 1, generator=gen)[0].to(probs.device)


def row_generator(seed: int, key: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on `device` seeded from (seed, key), so each problem's draws are
    reproducible whatever batch it lands in.

    Pass the device of the logits (LoadedModel.device). The same seed gives different
    streams on CPU and CUDA (their generators differ), so sampled outputs on GPU are
    reproducible on GPU but do not match CPU runs.
    """
    import hashlib

    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return gen
