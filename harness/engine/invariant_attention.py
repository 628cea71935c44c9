"""Attention whose result for a query does not depend on what else is in the call.

PyTorch's CPU SDPA kernel splits keys into blocks of min(512, key length) from the
first column and queries into blocks whose size follows the query count; the sums it
forms (softmax denominators, probabilities times values) then depend on the padding
before a row's keys, on the total key length and on how many queries share the call.
So a row decoded beside longer rows, a prompt prefilled whole or as a cached prefix
plus its rest, and a decoding step (one query) against a prefill (many) all round
differently.

Here a query's call shape depends only on the query's position:
- keys and values are laid out by position (position p of every row at column p, zeros
  after the row's last key), and a query at position p attends over the first
  `key_width(p)` columns: 64, 128 or 256 for early positions, else a multiple of 128. The
  kernel's key blocks are then a function of p alone ([0, 512), [512, 1024), ... up to
  that width), and the masked tail of a block adds exact zeros;
- the query heads that share a key head are packed as that head's query rows, padded to a
  multiple of 4 rows (copies of the last one), so the kernel's query blocks never end in a
  1-3 row edge tile (a decoding step of SmolLM2's 3 heads per key head computes 4 rows).
Measured on torch 2.13 (float32 and bfloat16, 1 and 2 threads): a query's output is then
bit-identical whether it runs as a decoding step, in a whole prompt, in a prompt's rest
after a cached prefix, or beside other rows. Queries of one key width share a call (rows
of a decoding step, runs of a prompt); short widths keep a short context's step cheap.

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
SHORT_WIDTHS = (64, 128, 256)  # key spans of early positions
WIDTH_STEP = 128  # later spans are multiples of this: less masked work per query, a few more calls
QUERY_TILE = 4  # query counts are padded to multiples of this


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def key_width(position: int) -> int:
    """How many key columns a query at `position` attends over: a function of the position
    alone, so its call shape (and its sums) never depend on the other queries."""
    for width in SHORT_WIDTHS:
        if position < width:
            return width
    return round_up(position + 1, WIDTH_STEP)


@dataclass
class QueryGroup:
    """Queries attended in one call: rows [rows.start, rows.stop), query columns `queries` at
    `positions` (rows, queries), over the first `width` aligned key columns."""

    rows: slice
    queries: slice
    width: int
    positions: Tensor
    _masks: dict[int, Tensor] = field(default_factory=dict, repr=False)

    def mask(self, heads_per_key: int) -> Tensor:
        """(rows, 1, padded query rows, width): True where a query row may attend a key position, for
        the query heads of one key head packed as rows (head-major), padded to QUERY_TILE rows."""
        if heads_per_key not in self._masks:
            positions = self.positions.repeat(1, heads_per_key)
            padded = round_up(positions.shape[1], QUERY_TILE)
            if padded > positions.shape[1]:
                positions = torch.cat([positions, positions[:, -1:].expand(-1, padded - positions.shape[1])], 1)
            keys = torch.arange(self.width, device=positions.device)
            self._masks[heads_per_key] = (keys[None, None, :] <= positions[:, :, None])[:, None]
        return self._masks[heads_per_key]


@dataclass
class KeyLayout:
    """Where each row's keys are in the (rows, width) cache the model holds after a forward,
    and the calls its queries are attended in (the same for every layer of the forward).

    `columns[b]` selects row b's real key columns in position order.
    """

    columns: list[slice | Tensor]
    lengths: list[int]
    groups: list[QueryGroup] = field(default_factory=list)
    _slots: dict[tuple[int, int], Tensor] = field(default_factory=dict, repr=False)

    def newest_slots(self, heads: int, width: int, device: torch.device) -> Tensor:
        """Where each (row, head)'s newest key goes in a (rows * heads * width, dim) view of an
        aligned buffer: made once per step, shared by every layer."""
        if (heads, width) not in self._slots:
            rows = torch.arange(len(self.lengths), device=device)[:, None] * heads + torch.arange(heads, device=device)
            newest = torch.tensor(self.lengths, device=device)[:, None] - 1
            self._slots[heads, width] = (rows * width + newest).reshape(-1)
        return self._slots[heads, width]

    @classmethod
    def from_mask(cls, mask: Tensor, queries: int) -> KeyLayout:
        """From the 0/1 (rows, width) mask over the cache's columns; the last `queries` columns
        are this forward's inputs. Each row's queries are attended in runs of equal key width;
        padding queries are not attended at all (their outputs are zeros, never read)."""
        real = mask.bool()
        lengths = real.sum(-1).tolist()
        starts = (real.cumsum(-1) == 0).sum(-1).tolist()
        width = mask.shape[-1]
        columns: list[slice | Tensor] = []
        for row, (start, length) in enumerate(zip(starts, lengths, strict=True)):
            # Contiguous real keys (the usual layout) are a slice; a row with a gap is indexed.
            columns.append(slice(start, width) if width - start == length else real[row].nonzero()[:, 0])
        positions = (real.long().cumsum(-1) - 1)[:, -queries:].tolist()
        is_real = real[:, -queries:].tolist()
        groups = []
        for row in range(mask.shape[0]):
            first = is_real[row].index(True) if True in is_real[row] else queries
            runs: list[tuple[int, int, int]] = []  # (first query, stop, width)
            for column in range(first, queries):
                w = key_width(positions[row][column])
                if runs and runs[-1][2] == w:
                    runs[-1] = (runs[-1][0], column + 1, w)
                else:
                    runs.append((column, column + 1, w))
            for begin, stop, w in runs:
                group_positions = torch.tensor([positions[row][begin:stop]], device=mask.device)
                groups.append(QueryGroup(slice(row, row + 1), slice(begin, stop), w, group_positions))
        return cls(columns, lengths, groups)

    @classmethod
    def decoding(cls, starts: list[int], width: int, device: torch.device) -> KeyLayout:
        """A decoding step's layout when every row's keys are contiguous from `starts[b]` to the
        last column; consecutive rows of equal key width share a call."""
        lengths = [width - start for start in starts]
        groups = []
        begin = 0
        for row in range(1, len(lengths) + 1):
            if row == len(lengths) or key_width(lengths[row] - 1) != key_width(lengths[begin] - 1):
                w = key_width(lengths[begin] - 1)
                positions = torch.tensor(lengths[begin:row], device=device)[:, None] - 1
                groups.append(QueryGroup(slice(begin, row), slice(0, 1), w, positions))
                begin = row
        return cls([slice(start, width) for start in starts], lengths, groups)

    def aligned_width(self) -> int:
        return max(group.width for group in self.groups)


class AlignedKV:
    """Each layer's keys and values with position p of every row at column p (zeros after
    the row's last key), as wide as the layout's widest query group."""

    def __init__(self) -> None:
        self._layers: dict[int, tuple[Tensor, Tensor, list[int]]] = {}

    def update(self, layer: int, key: Tensor, value: Tensor, layout: KeyLayout) -> tuple[Tensor, Tensor]:
        """The aligned keys and values of `layer` once the cache holds `key`, `value` (rows, heads, width, dim)."""
        held = self._layers.get(layer)
        width = layout.aligned_width()
        grew_by_one = (held is not None and key.shape[2] > 0
                       and all(n == old + 1 for n, old in zip(layout.lengths, held[2], strict=True)))
        if grew_by_one:
            keys, values, _ = held
            if width > keys.shape[2]:
                keys, values = _widen(keys, width), _widen(values, width)
            if len(layout.lengths) == 1:
                keys[:, :, layout.lengths[0] - 1] = key[:, :, -1]
                values[:, :, layout.lengths[0] - 1] = value[:, :, -1]
            else:
                # Row b's new key goes to column lengths[b] - 1: one row copy per (row, head).
                slots = layout.newest_slots(keys.shape[1], keys.shape[2], key.device)
                dim = keys.shape[3]
                keys.view(-1, dim).index_copy_(0, slots, key[:, :, -1].reshape(-1, dim))
                values.view(-1, dim).index_copy_(0, slots, value[:, :, -1].reshape(-1, dim))
        else:
            keys, values = _aligned(key, layout, width), _aligned(value, layout, width)
        self._layers[layer] = (keys, values, list(layout.lengths))
        return keys, values


def _aligned(states: Tensor, layout: KeyLayout, width: int) -> Tensor:
    rows, heads, _, dim = states.shape
    out = states.new_zeros(rows, heads, width, dim)
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
    `aligned_kv`, the call shapes above, otherwise transformers' SDPA."""
    if (key_layout is None or aligned_kv is None or kwargs.get("softcap") is not None
            or kwargs.get("position_bias") is not None or kwargs.get("sliding_window") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    keys, values = aligned_kv.update(module.layer_idx, key, value, key_layout)
    queries = query.shape[2]
    groups = key_layout.groups
    if len(groups) == 1 and groups[0].rows == slice(0, query.shape[0]) and groups[0].queries == slice(0, queries):
        # One call for every row and query (a decoding step of rows of one key width): no scatter.
        out = _attend(query, keys, values, groups[0], scaling)
    else:
        out = query.new_zeros(query.shape)
        for group in groups:
            out[group.rows, :, group.queries] = _attend(query[group.rows, :, group.queries], keys[group.rows],
                                                        values[group.rows], group, scaling)
    return out.transpose(1, 2).contiguous(), None


def _attend(query: Tensor, keys: Tensor, values: Tensor, group: QueryGroup, scaling: float | None) -> Tensor:
    """SDPA of `query` (rows, heads, count, dim) over the group's key columns.

    The query heads that share a key head are packed as that head's query rows (grouped-query
    attention without copying keys: a decoding step of 3 heads per key head pads 3 rows to 4,
    not 1 to 4), then padded to the mask's row count with copies of the last row.
    """
    rows, heads, count, dim = query.shape
    kv_heads = keys.shape[1]
    mask = group.mask(heads // kv_heads)
    packed = query.reshape(rows, kv_heads, heads // kv_heads * count, dim)
    real = packed.shape[2]
    if mask.shape[2] > real:
        # Materialised: a stride-0 view of one query takes another kernel path in SDPA.
        packed = torch.cat([packed, packed[:, :, -1:].expand(-1, -1, mask.shape[2] - real, -1)], 2)
    if keys.shape[2] != group.width:
        keys, values = keys[:, :, : group.width], values[:, :, : group.width]
    out = torch.nn.functional.scaled_dot_product_attention(packed, keys, values, attn_mask=mask, scale=scaling)
    return out[:, :, :real].reshape(rows, heads, count, dim)


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
