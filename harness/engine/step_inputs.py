"""One decoding step's plumbing between a decoder and the forward pass: the log-probs a
decoder reads, the checks on the Step it returns, the tokens forced into it, and what each
row feeds next (its token, or a soft input's embedding)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from decoders.base import NOT_FORCED, Decoder, Step, check_state
from harness.engine.stream_batch import StreamBatch


def log_softmax(logits: Tensor, vocab_size: int | None = None) -> Tensor:
    """Log-probs of `logits`, cut to `vocab_size` columns where given."""
    if vocab_size is not None:
        logits = logits[..., :vocab_size]
    # Half-precision logits are widened so mixtures and statistics stay accurate.
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return torch.log_softmax(logits, dim=-1)


def check_step(decoder: Decoder, step: Step, num_rows: int) -> None:
    """A Step's per-row fields must cover the active rows (a wrong shape would mix rows up)."""
    fields = {"token_ids": step.token_ids, "soft_mask": step.soft_mask, "no_stop_mask": step.no_stop_mask,
              "forced_ids": step.forced_ids, "soft_weights": step.soft_weights, "soft_ids": step.soft_ids}
    for name, value in fields.items():
        expected_ndim = 2 if name in ("soft_weights", "soft_ids") else 1
        if value is not None and (value.ndim != expected_ndim or value.shape[0] != num_rows):
            raise ValueError(
                f"decoder {decoder.name!r}: Step.{name} has shape {tuple(value.shape)}; "
                f"it needs {num_rows} rows ({'(B, V)' if expected_ndim == 2 else '(B,)'}, B = active rows)"
            )
    for name in ("soft_mask", "no_stop_mask"):
        value = getattr(step, name)
        if value is not None and value.dtype != torch.bool:
            raise ValueError(f"decoder {decoder.name!r}: Step.{name} must be a bool tensor; got {value.dtype}")
    if step.soft_mask is not None and step.soft_weights is None:
        raise ValueError(f"decoder {decoder.name!r}: Step.soft_mask is set without soft_weights to feed")
    if step.soft_ids is not None and (step.soft_weights is None or step.soft_ids.shape != step.soft_weights.shape):
        raise ValueError(f"decoder {decoder.name!r}: Step.soft_ids needs soft_weights of the same (B, k) shape")
    if step.state is not None:
        check_state(decoder, step.state, num_rows)


def with_forced_tokens(step: Step, wanted: Mapping[int, int] | None, rows: Sequence[int], vocab_size: int) -> Step:
    """`step` with forced tokens in `token_ids`: the decoder's `forced_ids`, overridden by
    `wanted` ({row: token} from a caller's hook; `rows` are the step's rows in order).
    Unchanged where nothing is forced."""
    forced = step.forced_ids
    if wanted:
        forced = forced.clone() if forced is not None else torch.full_like(step.token_ids, NOT_FORCED)
        position = {row: i for i, row in enumerate(rows)}
        for row, token in wanted.items():
            if row not in position:
                raise ValueError(f"force_tokens forced a token into row {row}, which is not decoding at this step")
            forced[position[row]] = token
    if forced is None:
        return step
    forced = forced.to(step.token_ids.device, step.token_ids.dtype)
    is_forced = forced != NOT_FORCED
    if bool(((forced[is_forced] < 0) | (forced[is_forced] >= vocab_size)).any()):
        raise ValueError(f"forced token ids {forced[is_forced].tolist()} must lie in [0, {vocab_size})")
    return dataclasses.replace(step, token_ids=torch.where(is_forced, forced, step.token_ids), forced_ids=forced)


def recorded_logprobs(logprobs: Tensor, step: Step) -> list[list[float]]:
    """Per row [lp_0, ..., lp_{K-1}(, lp_dec)]: the recorded token's log-prob under each
    stream's distribution, then under the decoder's own (where it returns one)."""
    chosen = step.token_ids.to(logprobs.device)
    per_stream = logprobs.gather(-1, chosen.view(1, -1, 1).expand(logprobs.shape[0], -1, 1))[..., 0]
    columns = [per_stream]
    if step.logprobs is not None:
        columns.append(step.logprobs.gather(-1, chosen.view(-1, 1)).T.to(per_stream.dtype))
    return torch.cat(columns).T.tolist()  # (B, K [+1])


@dataclass(frozen=True)
class Inputs:
    """What some rows feed next: each row its token, or a soft input where asked."""

    token_ids: Tensor  # (B,)
    soft_weights: Tensor | None = None  # (B, V), or (B, k) over soft_ids; None: every row feeds its token
    soft_mask: Tensor | None = None  # (B,) bool; None with soft_weights: every row is soft
    soft_ids: Tensor | None = None  # (B, k) ids of sparse weights

    @property
    def soft_rows(self) -> list[bool]:
        """Per row, whether it feeds a soft input."""
        if self.soft_weights is None:
            return [False] * len(self.token_ids)
        return self.soft_mask.tolist() if self.soft_mask is not None else [True] * len(self.token_ids)

    def select(self, rows: Tensor) -> Inputs:
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.index_select(0, rows.to(t.device))

        return Inputs(pick(self.token_ids), pick(self.soft_weights), pick(self.soft_mask), pick(self.soft_ids))

    def embeddings(self, batch: StreamBatch) -> Tensor:
        """(B, H): the embedding each row feeds, `weights @ E` for soft rows, the token's own otherwise."""
        if self.soft_weights is None:
            return batch.token_embeddings(self.token_ids)
        embeds = batch.soft_embeddings(self.soft_weights, self.soft_ids)
        if self.soft_mask is not None:
            embeds = torch.where(self.soft_mask.to(embeds.device)[:, None], embeds,
                                 batch.token_embeddings(self.token_ids))
        return embeds


def next_inputs(step: Step) -> Inputs:
    """The rows' next inputs: soft where the step asks, except forced rows, which feed their token."""
    if step.soft_weights is None:
        return Inputs(step.token_ids)
    soft = step.soft_mask if step.soft_mask is not None else torch.ones_like(step.token_ids, dtype=torch.bool)
    if step.forced_ids is not None:
        soft = soft & (step.forced_ids.to(soft.device) == NOT_FORCED)
    if bool(soft.all()):
        return Inputs(step.token_ids, step.soft_weights, soft_ids=step.soft_ids)
    if not bool(soft.any()):
        return Inputs(step.token_ids)
    return Inputs(step.token_ids, step.soft_weights, soft, step.soft_ids)


def advance(batch: StreamBatch, parts: Sequence[Inputs], copies: int) -> Tensor:
    """One forward of `batch`, whose rows take `parts`' inputs in order (the rows of several
    decode calls), its `copies` streams of each row all the row's input."""
    if all(p.soft_weights is None for p in parts):
        ids = torch.cat([p.token_ids.to(batch.device) for p in parts])
        return batch.advance(token_ids=ids.repeat(copies))
    embeds = torch.cat([p.embeddings(batch) for p in parts])
    return batch.advance(embeds=embeds.repeat(copies, 1))
