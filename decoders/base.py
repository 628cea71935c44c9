"""The one interface every decoder implements.

The engine owns forward passes and caches; a decoder only turns the log-probs of
its K streams into the next token (or soft input) for each row. Decoders never call
a model, which keeps them pure and testable without one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

# Per-row decoder state: named tensors whose first dimension is the row.
RowState = dict[str, Tensor]

# In Step.forced_ids: this row is not forced.
NOT_FORCED = -1


@dataclass(frozen=True)
class Step:
    """What a decoder returns for one decoding step of B active rows.

    Every field but `token_ids` is optional; None leaves the default for every row.

    Attributes:
        token_ids: (B,) the token the decoder chose for each row (for a soft row, the
            readable token written to the text, its top-1 say); the engine records it
            in every stream of the row and the stop rules read it. The Step handed to
            `on_step` observers has forced tokens already in place here.
        soft_weights: (B, V) weights over the vocabulary; a row that feeds a soft
            input gets `soft_weights @ E` (E the input embeddings) instead of the
            embedding of its token. Rows not in `soft_mask` ignore their weights.
            With `soft_ids`, (B, k) weights over those ids instead (a sparse form:
            k gathered rows of E, not a product with all of E).
        soft_ids: (B, k) token ids the (B, k) `soft_weights` refer to; None: dense weights.
        soft_mask: (B,) bool, the rows that feed a soft input this step; the others
            feed their token, in the same batch. None with `soft_weights` set: every row.
        no_stop_mask: (B,) bool, rows that may not stop this step (still thinking,
            say): their EOS and any stop string that completes at this step do not
            end them. `max_new_tokens` still does.
        forced_ids: (B,) long, a token forced into the row, or NOT_FORCED (-1). A forced
            token replaces the chosen one: it is recorded, fed as a token (never a soft
            input) and read by the stop rules.
        logprobs: (B, V) the decoder's distribution BEFORE its own filtering
            (temperature, top-k / top-p / min-p): for a mixture, the mixture; None
            means stream 0's log-probs. The token was chosen from this distribution
            or from its filtered version; statistics (KL, entropy) use it, so it keeps
            full support.
        state: the rows' per-row state after this step (same keys and rows as the
            state passed in); None keeps the state as it was.
        stats: per-row numbers about this step, (B,) float tensors by name (NaN where a
            statistic does not apply to a row); methods collect them per row and the
            decoder's `summarize_steps` turns a row's lists into record fields.
    """

    token_ids: Tensor
    soft_weights: Tensor | None = None
    soft_ids: Tensor | None = None
    soft_mask: Tensor | None = None
    no_stop_mask: Tensor | None = None
    forced_ids: Tensor | None = None
    logprobs: Tensor | None = None
    state: RowState | None = None
    stats: Mapping[str, Tensor] | None = None


class Decoder(Protocol):
    """A decoding rule over K streams.

    `num_streams` says how many contexts the decoder reads per row (1 for greedy
    and sampling, 2 for dual-context mixtures).

    Per-row state: a decoder whose rows differ (one mixing weight per row, a
    thinking-phase flag, a counter) also defines `init_state(num_rows) -> RowState`.
    The engine then holds that state, passes the active rows' part to every
    `step(logprobs, rngs, state)` call, takes the new state from `Step.state`, and
    drops finished rows from every tensor (`index_select` on dim 0). Decoders without
    `init_state` are called as `step(logprobs, rngs)`.
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


def initial_state(decoder: Decoder, num_rows: int) -> RowState:
    """The decoder's per-row state for `num_rows` rows ({} when it declares none)."""
    init = getattr(decoder, "init_state", None)
    state = dict(init(num_rows)) if init is not None else {}
    check_state(decoder, state, num_rows)
    return state


def run_step(decoder: Decoder, logprobs: Tensor, rngs: Sequence[torch.Generator], state: RowState) -> Step:
    """One `decoder.step`, handing the rows' state to decoders that declare one."""
    if hasattr(decoder, "init_state"):
        return decoder.step(logprobs, rngs, state)
    return decoder.step(logprobs, rngs)


def select_state(state: RowState, rows: Tensor) -> RowState:
    """`state` for the rows `rows` (indices into its current rows), every tensor alike."""
    return {key: value.index_select(0, rows.to(value.device)) for key, value in state.items()}


def check_state(decoder: Decoder, state: Mapping[str, Tensor], num_rows: int) -> None:
    """Every entry must be a tensor with one row per active row, or rows would be mixed up."""
    for key, value in state.items():
        if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != num_rows:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(
                f"decoder {decoder.name!r}: per-row state {key!r} must be a tensor with {num_rows} rows "
                f"on dim 0 (one per active row); got {shape}"
            )
