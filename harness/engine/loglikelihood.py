"""Batched scoring of continuations: log P(continuation | context) under one model.

Rows are left-padded like the engine's prompts (attention mask, positions from the
mask), so every row's continuation ends in the last column and one forward with
`logits_to_keep` = the longest continuation scores a whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.engine.models import LoadedModel, context_window


@dataclass(frozen=True)
class ContinuationScore:
    """log P(continuation | context), and whether greedy decoding would produce it."""

    logprob: float
    is_greedy: bool
    tokens: int  # continuation tokens scored


def score_continuations(
    loaded: LoadedModel,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[ContinuationScore]:
    """Score (context ids, continuation ids) pairs in batches; results keep the input order.

    A pair longer than `max_length` (default: the model's context window) loses
    context tokens from the left; the continuation itself is always scored whole.

    Raises:
        ValueError: an empty context or continuation, a continuation that does not
            fit `max_length`, or batch_size < 1.
    """
    return _batched(loaded, pairs, batch_size, max_length, score_rows)


def continuation_logprobs(
    loaded: LoadedModel,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[Tensor]:
    """(len(continuation), V) log-probs the model gives at each continuation position, per pair.

    For mixtures: the rows of several contexts are mixed, then scored with `score_rows`.
    Same batching, truncation and errors as `score_continuations`.
    """
    return _batched(loaded, pairs, batch_size, max_length, lambda rows, _: rows.clone())


def score_rows(rows: Tensor, continuation: Sequence[int]) -> ContinuationScore:
    """(n, V) log-probs at the n continuation positions -> the continuation's score."""
    target = torch.as_tensor(list(continuation), device=rows.device)
    chosen = rows.gather(-1, target.view(-1, 1))[:, 0]
    return ContinuationScore(
        logprob=float(chosen.sum()), is_greedy=bool((rows.argmax(-1) == target).all()), tokens=len(continuation)
    )


def _batched(loaded, pairs, batch_size, max_length, finish):
    if batch_size < 1:
        raise ValueError(f"batch_size (={batch_size}) must be >= 1")
    limit = max_length or context_window(loaded.model) or 2048
    for i, (context, continuation) in enumerate(pairs):
        if not context:
            raise ValueError(f"pair {i}: the context is empty; start it with a BOS (or EOS) token")
        if not continuation:
            raise ValueError(f"pair {i}: the continuation is empty; there is nothing to score")
        if len(continuation) > limit:
            raise ValueError(
                f"pair {i}: the continuation has {len(continuation)} tokens, more than max_length={limit}"
            )
    # Longest first: similar lengths share a batch, so little compute goes to padding.
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    out: list = [None] * len(pairs)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        rows = _forward_batch(loaded, [pairs[i] for i in chunk], limit)
        for i, row in zip(chunk, rows, strict=True):
            out[i] = finish(row, pairs[i][1])
    return out


@torch.inference_mode()
def _forward_batch(loaded: LoadedModel, pairs, limit: int) -> list[Tensor]:
    """One forward over the batch -> per pair the (n, V) log-probs predicting its continuation."""
    # The model sees context + continuation minus its last token; position t predicts token t + 1.
    inputs = [(list(c) + list(x))[-(limit + 1) :][:-1] for c, x in pairs]
    keep = max(len(x) for _, x in pairs)
    width = max(len(r) for r in inputs)
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(inputs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for i, row in enumerate(inputs):
        ids[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    device = loaded.model.device
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    logits = loaded.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    logprobs = torch.log_softmax(logits[:, -keep:].float(), dim=-1)  # (B, keep, V)
    return [logprobs[i, keep - len(x) :] for i, (_, x) in enumerate(pairs)]
