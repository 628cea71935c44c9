"""A KV cache layer that grows by doubling instead of copying itself every step.

transformers' DynamicLayer appends each new token with `torch.cat`, which copies the
whole cache of every layer at every step; with many rows and long contexts (the two
contexts of a ReDuMix batch) that copy is a fifth of a decoding step on a CPU. This
layer keeps spare room at the end of a buffer and writes new positions in place;
`keys` / `values` are views of the filled part, so attention code sees what it
would see with DynamicLayer.
"""

from __future__ import annotations

from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Room added beyond what is needed when a buffer grows (positions), at the least.
MIN_GROWTH = 64


class GrowingLayer(DynamicLayer):
    """DynamicLayer with amortised O(1) appends (buffers double when full)."""

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer: Tensor | None = None
        self._value_buffer: Tensor | None = None
        self._length = 0

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        needed = self._length + new
        if self._key_buffer is None or needed > self._key_buffer.shape[-2]:
            capacity = max(needed + MIN_GROWTH, 2 * self._length)
            self._key_buffer = _grown(self._key_buffer, key_states, self._length, capacity)
            self._value_buffer = _grown(self._value_buffer, value_states, self._length, capacity)
        self._key_buffer[..., self._length : needed, :] = key_states
        self._value_buffer[..., self._length : needed, :] = value_states
        self._length = needed
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: Tensor) -> None:
        if self.get_seq_length() > 0:
            self._key_buffer = self._key_buffer[indices]
            self._value_buffer = self._value_buffer[indices]
            self._expose()

    def drop_left(self, columns: int) -> None:
        """Forget the first `columns` positions of every row (columns that are all padding)."""
        self._key_buffer = self._key_buffer[..., columns:, :]
        self._value_buffer = self._value_buffer[..., columns:, :]
        self._length -= columns
        self._expose()

    def _expose(self) -> None:
        self.keys = self._key_buffer[..., : self._length, :]
        self.values = self._value_buffer[..., : self._length, :]


def full_layers_only(config) -> bool:
    """Whether every cache layer of `config`'s model holds every position of every row."""
    return all(type(layer) in FULL_LAYERS for layer in growing_cache(config).layers)


def growing_cache(config) -> DynamicCache:
    """A DynamicCache for `config` whose full-attention layers are GrowingLayers.

    Layers of other kinds (sliding windows, say) are kept as transformers builds them.
    """
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


# Cache layers holding every position of every row (what merging, cropping and aligning need).
FULL_LAYERS = (DynamicLayer, GrowingLayer)


def _grown(buffer: Tensor | None, like: Tensor, length: int, capacity: int) -> Tensor:
    shape = list(like.shape)
    shape[-2] = capacity
    bigger = like.new_empty(shape)
    if buffer is not None and length:
        bigger[..., :length, :] = buffer[..., :length, :]
    return bigger
