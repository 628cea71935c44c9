"""A batch of streams that share one model: left padding, attention mask, position
ids and a KV cache, advanced one token (or one soft input) at a time."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel

from harness.engine import invariant_attention, ragged_attention
from harness.engine.growing_cache import FULL_LAYERS, GrowingLayer, full_layers_only, growing_cache
from harness.engine.invariant_attention import AlignedKV, KeyLayout
from harness.engine.prefix_cache import CachedPrefix, PrefixCache


class StreamBatch:
    """Rows decoded together in one forward per step.

    Each row is a token sequence; rows are left-padded to a common length so the
    newest token of every row sits in the last column. Positions come from the
    attention mask, so padding never shifts a row's positions.
    """

    def __init__(self, model: PreTrainedModel, pad_token_id: int, prefix_cache: PrefixCache | None = None) -> None:
        self.model = model
        self.pad_token_id = pad_token_id
        # Only caches of full-attention layers can be cut out per row and spliced back.
        full_layers = full_layers_only(model.config)
        self.prefix_cache = prefix_cache if prefix_cache is not None and full_layers else None
        # A batch-invariant model (see harness.engine.batch_invariance) attends over keys laid
        # out by position; otherwise decoding steps attend per group of similar-length rows
        # (see ragged_attention). Either reads key columns from the mask, which holds only
        # where every layer keeps every position.
        self.invariant = full_layers and invariant_attention.installed(model)
        self.ragged = full_layers and not self.invariant and ragged_attention.install(model)
        self._aligned: AlignedKV | None = None  # the invariant attention's keys by position
        self._layout: tuple[list[int], list[bool]] | None = None  # rows' first real column and holes
        self.device = model.device
        self.cache: DynamicCache | None = None
        self.mask: Tensor | None = None  # (rows, seen) 1 for real tokens
        self.last_position: Tensor | None = None  # (rows, 1)
        # Newer transformers name the cache argument `cache`; older ones `past_key_values`.
        params = inspect.signature(model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @torch.inference_mode()
    def prefill(self, rows: Sequence[Sequence[int]]) -> Tensor:
        """Run the prompts; return (rows, V) logits for the next token of each row.

        Identical prompts (one problem decoded under several mixing weights, say) are
        run once and their cache rows copied, so repeats cost no prefill compute.
        """
        if not rows or any(len(r) == 0 for r in rows):
            raise ValueError("every stream needs a non-empty prompt (got an empty one)")
        first_seen: dict[tuple[int, ...], int] = {}
        index = [first_seen.setdefault(tuple(row), len(first_seen)) for row in rows]
        if len(first_seen) == len(rows):
            return self._prefill_unique(rows)
        logits = self._prefill_unique([list(row) for row in first_seen])
        expand = torch.tensor(index, device=self.device)
        self.keep(expand)
        return logits[expand]

    def _prefill_unique(self, rows: Sequence[Sequence[int]]) -> Tensor:
        # A row whose start is in the prefix cache runs only the rest (at least its last
        # token, whose logits are needed).
        prefixes = [self._cached_prefix(row) for row in rows]
        # Prompts of very different lengths (x and x2 of a ReDuMix row, say) are prefilled
        # in separate forwards, each padded only to its own longest prompt, then merged:
        # padding one to the other's length would cost compute for nothing.
        buckets = length_buckets([len(row) - n for row, (n, _) in zip(rows, prefixes, strict=True)])
        if len(buckets) == 1:
            return self._prefill_padded(rows, prefixes)
        parts = []
        for bucket in buckets:
            logits = self._prefill_padded([rows[i] for i in bucket], [prefixes[i] for i in bucket])
            if not all(type(layer) in FULL_LAYERS for layer in self.cache.layers):
                return self._prefill_padded(rows, prefixes)  # windowed or recurrent layers: no merging
            parts.append((logits, self.cache, self.mask, self.last_position))
        order = torch.tensor([i for bucket in buckets for i in bucket], device=self.device)
        restore = torch.argsort(order)
        width = max(mask.shape[1] for _, _, mask, _ in parts)
        self.cache = growing_cache(self.model.config)
        for layer_idx in range(len(parts[0][1].layers)):
            keys = torch.cat([_pad_left(cache.layers[layer_idx].keys, width, -2) for _, cache, _, _ in parts])
            values = torch.cat([_pad_left(cache.layers[layer_idx].values, width, -2) for _, cache, _, _ in parts])
            self.cache.update(keys[restore], values[restore], layer_idx)
        self.mask = torch.cat([_pad_left(mask, width, -1) for _, _, mask, _ in parts])[restore]
        self._layout = None
        self._aligned = None
        self.last_position = torch.cat([last for _, _, _, last in parts])[restore]
        return torch.cat([logits for logits, _, _, _ in parts])[restore]

    def _cached_prefix(self, row: Sequence[int]) -> tuple[int, CachedPrefix | None]:
        if self.prefix_cache is None:
            return 0, None
        return self.prefix_cache.longest_prefix(self.model, row, limit=len(row) - 1)

    def _prefill_padded(self, rows: Sequence[Sequence[int]],
                        prefixes: Sequence[tuple[int, CachedPrefix | None]]) -> Tensor:
        """One forward over `rows` left-padded to the longest; sets the cache, mask and positions.

        Where `prefixes` give a row's first n tokens from the prefix cache, those are placed
        in the cache right-aligned before the forward, which runs the rest of each row; the
        padding this leaves between a short prefix and a short rest is then moved before the
        prefix, so every row's real positions are its last ones (see ragged_attention).
        """
        rests = [row[n:] for row, (n, _) in zip(rows, prefixes, strict=True)]
        width = max(len(r) for r in rests)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, rest in enumerate(rests):
            ids[i, width - len(rest) :] = torch.as_tensor(rest, dtype=torch.long)
            mask[i, width - len(rest) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        reused = torch.tensor([n for n, _ in prefixes], device=self.device)[:, None]
        positions = (reused + mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        self.cache = growing_cache(self.model.config)
        if int(reused.max()) > 0:
            mask = torch.cat([self._splice_prefixes(prefixes), mask], dim=1)
        kwargs = {}
        if self.invariant:
            # Keys by position do not move when _close_gaps moves columns: the copy stays valid.
            self._aligned = AlignedKV()
            kwargs = {"key_layout": KeyLayout.from_mask(mask, width), "aligned_kv": self._aligned}
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            **{self.cache_kwarg: self.cache},
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
        if int(reused.max()) > 0:
            mask = self._close_gaps([n for n, _ in prefixes], [width - len(rest) for rest in rests],
                                    mask.shape[1] - width, mask)
        self.mask = mask
        self._layout = None
        self.last_position = positions[:, -1:]
        return out.logits[:, -1]

    def _close_gaps(self, reused: Sequence[int], gaps: Sequence[int], prefix_width: int, mask: Tensor) -> Tensor:
        """Move each row's reused prefix (its `reused[i]` columns ending at `prefix_width`)
        right over the `gaps[i]` padding columns that follow it; return the mask to match.

        Keys carry their positions (rotary embeddings are applied before caching), so a
        cached position may move to another column.
        """
        for i, (n, gap) in enumerate(zip(reused, gaps, strict=True)):
            if n == 0 or gap == 0:
                continue
            source = slice(prefix_width - n, prefix_width)
            target = slice(prefix_width - n + gap, prefix_width + gap)
            for layer in self.cache.layers:
                layer.keys[i, :, target] = layer.keys[i, :, source].clone()
                layer.values[i, :, target] = layer.values[i, :, source].clone()
            mask[i, : target.start] = 0
            mask[i, target.start :] = 1
        return mask

    def _splice_prefixes(self, prefixes: Sequence[tuple[int, CachedPrefix | None]]) -> Tensor:
        """Fill the fresh cache with each row's reused prefix, right-aligned; return their (rows, P) mask."""
        longest = max(n for n, _ in prefixes)
        mask = torch.zeros((len(prefixes), longest), dtype=torch.long, device=self.device)
        for i, (n, _) in enumerate(prefixes):
            mask[i, longest - n :] = 1
        sample = next(entry for n, entry in prefixes if n)
        for layer_idx in range(len(sample.keys)):
            like = sample.keys[layer_idx]
            shape = (len(prefixes), like.shape[0], longest, like.shape[-1])
            keys, values = like.new_zeros(shape), like.new_zeros(shape)
            for i, (n, entry) in enumerate(prefixes):
                if n:
                    keys[i, :, longest - n :] = entry.keys[layer_idx][:, :n]
                    values[i, :, longest - n :] = entry.values[layer_idx][:, :n]
            self.cache.update(keys.to(self.device), values.to(self.device), layer_idx)
        return mask

    def remember(self, positions: Sequence[int], sequences: Sequence[Sequence[int]]) -> None:
        """Hand the prefix cache the cache of each listed row (its index in the current
        rows) as the cache of its token ids; a sequence may be shorter than what the row
        holds (its cache is cut to fit), never longer."""
        if self.prefix_cache is None:
            return
        for position, ids in zip(positions, sequences, strict=True):
            columns = self.mask[position].nonzero()[:, 0]
            if len(ids) > len(columns):
                raise RuntimeError(f"row {position} holds {len(columns)} positions, fewer than its {len(ids)} ids")
            columns = columns[: len(ids)]
            keys = [layer.keys[position].index_select(-2, columns) for layer in self.cache.layers]
            values = [layer.values[position].index_select(-2, columns) for layer in self.cache.layers]
            self.prefix_cache.remember(self.model, ids, keys, values)

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
        if self.ragged or self.invariant:
            if self._layout is None:
                # Appending a column keeps each row's start and holes: read them once per batch change.
                self._layout = ragged_attention.row_layout(self.mask)
        if self.ragged:
            kwargs["ragged_rows"] = ragged_attention.ragged_rows(*self._layout, self.mask.shape[1])
        elif self.invariant:
            starts, holes = self._layout
            width = self.mask.shape[1]
            layout = (KeyLayout.from_mask(self.mask, 1) if any(holes)
                      else KeyLayout.decoding(starts, width, self.device))
            if self._aligned is None:
                self._aligned = AlignedKV()
            kwargs |= {"key_layout": layout, "aligned_kv": self._aligned}
        out = self.model(
            attention_mask=self.mask,
            position_ids=self.last_position,
            **{self.cache_kwarg: self.cache},
            use_cache=True,
            **kwargs,
        )
        return out.logits[:, -1]

    @torch.inference_mode()
    def join(self, other: StreamBatch, rows: int, new_rows: int, streams: int) -> None:
        """Take `other`'s rows (just prefilled) into this batch between steps.

        Both hold `streams` streams stream-major (this one `rows` rows each, `other`
        `new_rows`); after the join stream j holds this batch's rows, then `other`'s. The
        caches are left-padded to one width (padding is masked, and positions travel with
        the keys), so every row attends over what it attended over before.
        """
        if not all(type(layer) in FULL_LAYERS for cache in (self.cache, other.cache) for layer in cache.layers):
            raise ValueError("rows can join only a cache whose every layer keeps every position")
        width = max(self.mask.shape[1], other.mask.shape[1])
        merged = growing_cache(self.model.config)
        for layer_idx, (mine, theirs) in enumerate(zip(self.cache.layers, other.cache.layers, strict=True)):
            keys = torch.cat([_pad_left(mine.keys, width, -2), _pad_left(theirs.keys, width, -2)])
            values = torch.cat([_pad_left(mine.values, width, -2), _pad_left(theirs.values, width, -2)])
            merged.update(keys, values, layer_idx)
        self.cache = merged
        self.mask = torch.cat([_pad_left(self.mask, width, -1), _pad_left(other.mask, width, -1)])
        self.last_position = torch.cat([self.last_position, other.last_position])
        order = []
        for j in range(streams):
            order += [j * rows + i for i in range(rows)] + [streams * rows + j * new_rows + i for i in range(new_rows)]
        self.keep(torch.tensor(order, device=self.device))

    def keep(self, rows: Tensor) -> None:
        """Keep the rows listed in `rows` (indices into the current rows; a repeated
        index copies that row), dropping the others."""
        rows = rows.to(self.device)
        self.cache.batch_select_indices(rows)
        self._aligned = None
        self.mask = self.mask[rows]
        self.last_position = self.last_position[rows]
        starts, holes = ragged_attention.row_layout(self.mask)
        # Columns that are padding in every remaining row cost compute and hold nothing.
        first_real = min(starts)
        if first_real > 0 and _crop_left(self.cache, first_real):
            self.mask = self.mask[:, first_real:]
            starts = [start - first_real for start in starts]
        self._layout = (starts, holes)

    def token_embeddings(self, token_ids: Tensor) -> Tensor:
        """(rows,) ids -> (rows, H): the model's own input for those tokens."""
        return self.model.get_input_embeddings()(token_ids.to(self.device))

    def soft_embeddings(self, weights: Tensor, ids: Tensor | None = None) -> Tensor:
        """(rows, V) weights over the vocabulary -> (rows, H) = weights @ E; with `ids`,
        (rows, k) weights over those ids -> the same sum over k gathered rows of E.

        Embedding layers that scale their output (Gemma's) scale soft inputs alike, so a
        one-hot weight vector gives the token's own input.
        """
        layer = self.model.get_input_embeddings()
        table = layer.weight
        if ids is not None:
            # k rows of E per row instead of a (V, H) product: most of a soft step's cost otherwise.
            rows = table[ids.to(table.device)]  # (rows, k, H)
            embeds = (weights.to(table.device, table.dtype)[:, :, None] * rows).sum(dim=1)
        else:
            vocab = min(weights.shape[-1], table.shape[0])
            embeds = weights[:, :vocab].to(table.device, table.dtype) @ table[:vocab]
        scale = getattr(layer, "embed_scale", None)
        return embeds if scale is None else embeds * torch.as_tensor(scale, dtype=embeds.dtype, device=embeds.device)


def _crop_left(cache: DynamicCache, columns: int) -> bool:
    """Drop the first `columns` cached positions of every layer; False (and no change)
    when the cache has layers of another kind (sliding windows, recurrent state)."""
    if not all(type(layer) in FULL_LAYERS for layer in cache.layers):
        return False
    for layer in cache.layers:
        if isinstance(layer, GrowingLayer):
            layer.drop_left(columns)
        else:
            layer.keys = layer.keys[:, :, columns:]
            layer.values = layer.values[:, :, columns:]
    return True


# Padding a prompt by this many tokens or fewer costs less than another forward's fixed cost
# (reading every weight once): the short rests of prompts whose starts came from the
# prefix cache are prefilled together.
PAD_SLACK = 32


def length_buckets(lengths: Sequence[int], spread: float = 1.5, slack: int = PAD_SLACK) -> list[list[int]]:
    """Indices grouped so that within a group the longest is at most `spread` x the shortest,
    or at most `slack` longer.

    Sorted by length, so each group is padded only to its own longest member.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        shortest = lengths[buckets[-1][0]] if buckets else None
        if shortest is not None and (lengths[i] <= spread * shortest or lengths[i] - shortest <= slack):
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


def _pad_left(tensor: Tensor, width: int, dim: int) -> Tensor:
    """`tensor` with zeros prepended along `dim` up to `width` (masked positions: never attended)."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
