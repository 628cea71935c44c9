"""A batch of streams that share one model: left padding, attention mask, position
ids and a KV cache, advanced one token (or one soft input) at a time."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer


class StreamBatch:
    """Rows decoded together in one forward per step.

    Each row is a token sequence; rows are left-padded to a common length so the
    newest token of every row sits in the last column. Positions come from the
    attention mask, so padding never shifts a row's positions.
    """

    def __init__(self, model: PreTrainedModel, pad_token_id: int) -> None:
        self.model = model
        self.pad_token_id = pad_token_id
        self.device = model.device
        self.cache: DynamicCache | None = None
        self.mask: Tensor | None = None  # (rows, seen) 1 for real tokens
        self.last_position: Tensor | None = None  # (rows, 1)
        # Newer transformers name the cache argument `cache`; older ones `past_key_values`.
        params = inspect.signature(model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @torch.inference_mode()
    def prefill(self, rows: Sequence[Sequence[int]]) -> Tensor:
        """Run the prompts; return (rows, V) logits for the next token of each row."""
        if not rows or any(len(r) == 0 for r in rows):
            raise ValueError("every stream needs a non-empty prompt (got an empty one)")
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        self.cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            **{self.cache_kwarg: self.cache},
            use_cache=True,
            logits_to_keep=1,
        )
        self.mask = mask
        self.last_position = positions[:, -1:]
        return out.logits[:, -1]

    @torch.inference_mode()
    def advance(self, token_ids: Tensor | None = None, embeds: Tensor | None = None) -> Tensor:
        """Append one input per row, (rows,) ids or (rows, H) embeddings; return (rows, V) logits."""
        rows = self.mask.shape[0]
        self.mask = torch.cat([self.mask, self.mask.new_ones((rows, 1))], dim=1)
        self.last_position = self.last_position + 1
        kwargs = {}
        if embeds is not None:
            kwargs["inputs_embeds"] = embeds.to(self.device, self.model.dtype)[:, None, :]
        else:
            kwargs["input_ids"] = token_ids.to(self.device)[:, None]
        out = self.model(
            attention_mask=self.mask,
            position_ids=self.last_position,
            **{self.cache_kwarg: self.cache},
            use_cache=True,
            **kwargs,
        )
        return out.logits[:, -1]

    def keep(self, rows: Tensor) -> None:
        """Drop every row not listed in `rows` (indices into the current rows)."""
        rows = rows.to(self.device)
        self.cache.batch_select_indices(rows)
        self.mask = self.mask[rows]
        self.last_position = self.last_position[rows]
        # Columns that are padding in every remaining row cost compute and hold nothing.
        first_real = int((self.mask.cumsum(-1) == 0).sum(-1).min())
        if first_real > 0 and _crop_left(self.cache, first_real):
            self.mask = self.mask[:, first_real:]

    def input_embeddings(self) -> Tensor:
        return self.model.get_input_embeddings().weight


def _crop_left(cache: DynamicCache, columns: int) -> bool:
    """Drop the first `columns` cached positions of every layer; False (and no change)
    when the cache has layers of another kind (sliding windows, recurrent state)."""
    if not all(type(layer) is DynamicLayer for layer in cache.layers):
        return False
    for layer in cache.layers:
        layer.keys = layer.keys[:, :, columns:]
        layer.values = layer.values[:, :, columns:]
    return True
