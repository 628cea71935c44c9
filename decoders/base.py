"""The one interface every decoder implements.

The engine owns forward passes and caches; a decoder only turns the log-probs of
its K streams into the next token (or soft input) for each row. Decoders never call
a model, which keeps them pure and testable without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class Step:
    """What a decoder returns for one decoding step of B active rows.

    Attributes:
        token_ids: (B,) the token recorded in every stream of each row.
        soft_weights: (B, V) optional weights over the vocabulary; when set, the
            engine feeds `soft_weights @ E` (E the input embeddings) instead of
            the embedding of `token_ids`.
        logprobs: (B, V) optional distribution the token was chosen from (e.g. the
            mixture), used for per-step statistics; None means "stream 0".
    """

    token_ids: Tensor
    soft_weights: Tensor | None = None
    logprobs: Tensor | None = None


class Decoder(Protocol):
    """A decoding rule over K streams.

    `num_streams` says how many contexts the decoder reads per row (1 for greedy
    and sampling, 2 for dual-context mixtures).

    A decoder with per-row settings (say, one mixing weight per row) also defines
    `select_rows(indices) -> Decoder`, the same decoder for the kept rows only; the
    engine calls it whenever finished rows leave the batch (see `select_rows` below).
    """

    name: str
    num_streams: int

    def step(self, logprobs: Tensor, rngs: Sequence[torch.Generator]) -> Step:
        """(K, B, V) log-probs of the K streams -> Step.

        `rngs` holds one seeded generator per active row, so a row's random draws
        do not depend on which other rows share its batch.
        """
        ...

    def config(self) -> dict:
        """The resolved configuration, as recorded next to every result."""
        ...


def select_rows(decoder: Decoder, indices: Tensor) -> Decoder:
    """`decoder` for the rows `indices` of its current batch (unchanged if it has no per-row state)."""
    select = getattr(decoder, "select_rows", None)
    return select(indices) if select is not None else decoder
