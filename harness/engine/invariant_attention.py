"""Attention whose result for a query does not depend on what else is in the call.

PyTorch's CPU SDPA kernel splits keys into blocks of min(512, key length) from the
first column and queries into blocks whose size follows the query count; the sums it
forms (softmax denominators, probabilities times values) then depend on the padding
before a row's keys, on the total key length and on how many queries share the call.
So a row decoded beside longer rows, a prompt prefilled whole or as a cached prefix
plus its rest, and a decoding step (one query) against a prefill (many) all round
differently.

Here every call has one shape per query that depends only on the query's position:
- keys and values are laid out by position (position p of every row at column p,
  zeros after the row's last key), in a width that is a multiple of 512, so the
  kernel's key blocks are always [0, 512), [512, 1024), ... and each is full width;
  the masked tail of a block and whole masked blocks add exact zeros;
- queries are padded to a multiple of 4 (copies of the last one), so the kernel's
  query blocks never end in a 1-3 row edge tile.
Measured on torch 2.13 (float32 and bfloat16, 1 and 2 threads): a query's output is then
bit-identical whether it runs as a decoding step, in a whole prompt, in a prompt's rest
after a cached prefix, or beside other rows.

The position-ordered copy (`AlignedKV`) is kept across decoding steps (each step writes
one column per row); the engine starts a new one whenever its rows change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "invariant_sdpa"
KEY_BLOCK = 512  # the CPU kernel's key block (its largest): widths are multiples of it
QUERY_TILE = 4  # query counts are padded to multiples of this


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


@dataclass
class KeyLayout:
    """Where each row's keys are in the (rows, width) cache the model holds after a forward.

    `columns[b]` selects row b's real key columns in position order; `query_positions`
    is each query token's position, (rows, queries), 0 for padding queries (their output
    is never read, and attending to position 0 keeps it finite).
    """

    columns: list[slice | Tensor]
    lengths: list[int]
    query_positions: Tensor
    _masks: dict[int, Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_mask(cls, mask: Tensor, queries: int) -> KeyLayout:
        """From the 0/1 (rows, width) mask over the cache's columns; the last `queries` columns
        are this forward's inputs."""
        real = mask.bool()
        positions = real.long().cumsum(-1) - 1
        lengths = real.sum(-1).tolist()
        starts = (real.cumsum(-1) == 0).sum(-1).tolist()
        width = mask.shape[-1]
        columns: list[slice | Tensor] = []
        for row, (start, length) in enumerate(zip(starts, lengths, strict=True)):
            # Contiguous real keys (the usual layout) are a slice; a row with a gap is indexed.
            columns.append(slice(start, width) if width - start == length else real[row].nonzero()[:, 0])
        query_positions = positions[:, -queries:].masked_fill(~real[:, -queries:], 0)
        return cls(columns, lengths, query_positions)

    @classmethod
    def decoding(cls, starts: list[int], width: int, device: torch.device) -> KeyLayout:
        """A decoding step's layout when every row's keys are contiguous from `starts[b]` to the last column."""
        lengths = [width - start for start in starts]
        positions = torch.tensor(lengths, device=device)[:, None] - 1
        return cls([slice(start, width) for start in starts], lengths, positions)

    def sdpa_mask(self, width: int, queries: int) -> Tensor:
        """(rows, 1, queries, width) True where a (padded) query may attend a key position."""
        if width not in self._masks:
            positions = self.query_positions
            if queries > positions.shape[1]:
                positions = torch.cat([positions, positions[:, -1:].expand(-1, queries - positions.shape[1])], 1)
            keys = torch.arange(width, device=positions.device)
            self._masks[width] = (keys[None, None, :] <= positions[:, :, None])[:, None]
        return self._masks[width]


class AlignedKV:
    """Each layer's keys and values with position p of every row at column p (zeros after
    the row's last key), in a width that is a multiple of KEY_BLOCK."""

    def __init__(self) -> None:
        self._layers: dict[int, tuple[Tensor, Tensor, list[int]]] = {}

    def update(self, layer: int, key: Tensor, value: Tensor, layout: KeyLayout) -> tuple[Tensor, Tensor]:
        """The aligned keys and values of `layer` once the cache holds `key`, `value` (rows, heads, width, dim)."""
        queries = layout.query_positions.shape[1]
        held = self._layers.get(layer)
        grew_by_one = (held is not None and queries == 1
                       and all(n == old + 1 for n, old in zip(layout.lengths, held[2], strict=True)))
        if grew_by_one:
            keys, values, _ = held
            width = round_up(max(layout.lengths), KEY_BLOCK)
            if width > keys.shape[2]:
                keys, values = _widen(keys, width), _widen(values, width)
            rows = torch.arange(key.shape[0], device=key.device)
            at = torch.tensor(layout.lengths, device=key.device) - 1
            keys[rows, :, at] = key[:, :, -1]
            values[rows, :, at] = value[:, :, -1]
        else:
            keys, values = _aligned(key, layout), _aligned(value, layout)
        self._layers[layer] = (keys, values, list(layout.lengths))
        return keys, values


def _aligned(states: Tensor, layout: KeyLayout) -> Tensor:
    rows, heads, _, dim = states.shape
    out = states.new_zeros(rows, heads, round_up(max(layout.lengths), KEY_BLOCK), dim)
    for row, (columns, length) in enumerate(zip(layout.columns, layout.lengths, strict=True)):
        out[row, :, :length] = states[row, :, columns]
    return out


def _widen(states: Tensor, width: int) -> Tensor:
    wider = states.new_zeros(*states.shape[:2], width, states.shape[3])
    wider[:, :, : states.shape[2]] = states
    return wider


def invariant_sdpa_attention(module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                             scaling: float | None = None, key_layout: KeyLayout | None = None,
                             aligned_kv: AlignedKV | None = None, **kwargs) -> tuple[Tensor, None]:
    """transformers' attention-function signature; with the engine's `key_layout` and
    `aligned_kv`, the call shape above, otherwise transformers' SDPA."""
    if (key_layout is None or aligned_kv is None or kwargs.get("softcap") is not None
            or kwargs.get("position_bias") is not None or kwargs.get("sliding_window") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    keys, values = aligned_kv.update(module.layer_idx, key, value, key_layout)
    rows, heads, queries, dim = query.shape
    padded = round_up(queries, QUERY_TILE)
    if padded > queries:
        query = torch.cat([query, query[:, :, -1:].expand(rows, heads, padded - queries, dim)], 2)
    grouped = heads != keys.shape[1]
    if grouped and keys.device.type != "cpu":
        # SDPA's enable_gqa takes no mask on some GPU backends: expand the key heads instead.
        keys = keys.repeat_interleave(heads // keys.shape[1], 1)
        values = values.repeat_interleave(heads // values.shape[1], 1)
        grouped = False
    out = torch.nn.functional.scaled_dot_product_attention(
        query, keys, values, attn_mask=key_layout.sdpa_mask(keys.shape[2], padded), scale=scaling,
        enable_gqa=grouped)
    return out[:, :, :queries].transpose(1, 2).contiguous(), None


def install(model: PreTrainedModel) -> bool:
    """Switch a model that uses transformers' SDPA to this attention; True if it now uses it.

    Calls without the engine's layout (a model's own `generate`, log-likelihood scoring)
    still run transformers' SDPA.
    """
    switchable = getattr(model, "_can_set_attn_implementation", lambda: False)()
    if getattr(model.config, "_attn_implementation", None) in ("sdpa", "ragged_sdpa") and switchable:
        model.set_attn_implementation(NAME)
    return getattr(model.config, "_attn_implementation", None) == NAME


def installed(model: PreTrainedModel) -> bool:
    return getattr(model.config, "_attn_implementation", None) == NAME


AttentionInterface.register(NAME, invariant_sdpa_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)
