"""Decode-step attention in which each group of rows reads only its own keys.

A batch that decodes contexts of very different lengths together (x and x2 of a
ReDuMix row) is left-padded to its longest row, and SDPA with a padding mask still
reads every padded key of every row and takes the masked path. Here the rows of a
step are split into runs of similar length; each run attends over its own columns
(from its first real key on) in one SDPA call, without a mask where none of its rows
has padding there. The result equals masked SDPA over the padded batch (up to
floating-point summation order).

The engine installs it on models that use SDPA (`install`) and passes the rows'
layout to each decoding forward (`RaggedRows`, computed on the host once per batch
change, so a step adds no device synchronisation). Any other call, a prefill, a
model's own `generate`, a layer whose keys are not the full rows (a sliding
window), goes to transformers' SDPA unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "ragged_sdpa"

# Rows join one group while its longest row is at most this many times its shortest:
# padding up to that much costs less than another attention call.
SPREAD = 1.5


@dataclass(frozen=True)
class RowGroup:
    """Rows [start, stop) of the batch, attending over key columns [first_key, width)."""

    start: int
    stop: int
    first_key: int
    masked: bool  # some row of the group has padding among those columns


@dataclass(frozen=True)
class RaggedRows:
    """A decoding step's rows as groups; `width` is the key length they index into."""

    groups: tuple[RowGroup, ...]
    width: int


def row_layout(mask: Tensor) -> tuple[list[int], list[bool]]:
    """For a (rows, width) 0/1 mask: each row's first real column, and whether the row
    has padding after it (a hole, as a reused prefix followed by a padded rest leaves)."""
    real = mask.bool()
    starts = (real.cumsum(-1) == 0).sum(-1)
    holes = real.sum(-1) != mask.shape[-1] - starts
    return starts.tolist(), holes.tolist()


def ragged_rows(starts: Sequence[int], holes: Sequence[bool], width: int, spread: float = SPREAD) -> RaggedRows:
    """Group consecutive rows whose lengths (width - start) stay within `spread` of each other."""
    groups: list[RowGroup] = []
    shortest = longest = 0
    for row, (start, hole) in enumerate(zip(starts, holes, strict=True)):
        length = max(1, width - start)
        if groups and max(longest, length) <= spread * min(shortest, length):
            last = groups[-1]
            first_key = min(last.first_key, start)
            masked = last.masked or hole or start != last.first_key
            groups[-1] = RowGroup(last.start, row + 1, first_key, masked)
            shortest, longest = min(shortest, length), max(longest, length)
        else:
            groups.append(RowGroup(row, row + 1, start, hole))
            shortest = longest = length
    return RaggedRows(tuple(groups), width)


def ragged_sdpa_attention(module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                          scaling: float | None = None, ragged_rows: RaggedRows | None = None,
                          **kwargs) -> tuple[Tensor, None]:
    """transformers' attention-function signature; with `ragged_rows` on a one-token
    step, per-group SDPA, otherwise transformers' SDPA."""
    if (ragged_rows is None or query.shape[2] != 1 or key.shape[2] != ragged_rows.width
            or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = heads != kv_heads
    outputs = []
    for group in ragged_rows.groups:
        part = slice(group.start, group.stop)
        keys, values = key[part, :, group.first_key:], value[part, :, group.first_key:]
        if group.masked and attention_mask is not None:
            # Query heads that share a key head become that head's queries, (rows, kv_heads,
            # heads per kv head, dim): grouped-query attention with a mask shared by all heads,
            # without copying keys (SDPA's enable_gqa takes no mask on some backends).
            packed = query[part].reshape(-1, kv_heads, heads // kv_heads, dim)
            out = torch.nn.functional.scaled_dot_product_attention(
                packed, keys, values, attn_mask=attention_mask[part, ..., group.first_key:], scale=scaling)
            outputs.append(out.reshape(-1, heads, 1, dim))
        else:
            outputs.append(torch.nn.functional.scaled_dot_product_attention(
                query[part], keys, values, scale=scaling, enable_gqa=grouped))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    return out.transpose(1, 2).contiguous(), None


def install(model: PreTrainedModel) -> bool:
    """Switch a model that uses transformers' SDPA to this attention; True if it now uses it.

    Every call the engine does not mark with `ragged_rows` still runs transformers' SDPA,
    so the model computes as before everywhere else.
    """
    # Models whose attention classes do not read transformers' attention functions cannot switch.
    switchable = getattr(model, "_can_set_attn_implementation", lambda: False)()
    if getattr(model.config, "_attn_implementation", None) == "sdpa" and switchable:
        model.set_attn_implementation(NAME)
    return getattr(model.config, "_attn_implementation", None) == NAME


AttentionInterface.register(NAME, ragged_sdpa_attention)
# Masks are built as for SDPA (the fallback and masked groups read them).
AttentionMaskInterface.register(NAME, sdpa_mask)
