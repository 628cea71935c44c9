"""Key/value caches of decoded sequences, kept so that a later prompt starting with the
same tokens prefills only what is new.

ReDuMix's stages grow one conversation: stage 3's prompt [x, y1, feedback + reflect]
starts with stage 1's prompt and answer, x2 starts with stage 3's prompt and
reflection, and stage 4's x stream is stage 1's prompt again. Remembering each
finished row's cache, keyed by its token ids, lets every stage pay only for its new
turn. Entries belong to one model object in one dtype on one device and are never
served to another; the cache stays within a byte budget, evicting the least recently
used entries first.

Reusing a prefix computes nothing differently in exact arithmetic; in floating point
the reused keys and values come from a forward of another batch shape, so they can
differ from a fresh prefill in the last bits, as batching with other rows already does.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

DEFAULT_BUDGET_MB = 2048


@dataclass
class CachedPrefix:
    """One remembered sequence: its token ids and per layer (heads, length, dim) keys and values."""

    ids: Tensor  # (length,) int64 on the CPU
    keys: list[Tensor]
    values: list[Tensor]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class PrefixStats:
    """What the cache did: for logs, tests and benchmarks."""

    lookups: int = 0
    hits: int = 0
    reused_tokens: int = 0
    stored: int = 0
    evicted: int = 0


class PrefixCache:
    """Remembered sequences by model, within `budget_bytes` (least recently used evicted).

    Args:
        budget_bytes: the most the entries may hold together; 0 keeps nothing.
    """

    @classmethod
    def of_megabytes(cls, megabytes: int, flag: str = "prefix_cache_mb") -> PrefixCache | None:
        """A cache of `megabytes` MiB; None (off) for 0.

        Raises:
            ValueError: a negative budget, naming `flag`.
        """
        if megabytes < 0:
            raise ValueError(f"{flag} (={megabytes}) must be >= 0: MiB the prefix cache may hold "
                             f"(default {DEFAULT_BUDGET_MB}); 0 turns it off")
        return cls(megabytes * 2**20) if megabytes else None

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_MB * 2**20) -> None:
        if budget_bytes < 0:
            raise ValueError(f"prefix cache budget (={budget_bytes} bytes) must be >= 0; 0 turns the cache off")
        self.budget_bytes = budget_bytes
        self.stats = PrefixStats()
        self._entries: OrderedDict[tuple, CachedPrefix] = OrderedDict()  # (owner, serial) -> entry, LRU first
        self._serial = 0
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def longest_prefix(self, model: torch.nn.Module, ids: Sequence[int], limit: int | None = None
                       ) -> tuple[int, CachedPrefix | None]:
        """(n, entry): the entry of `model` sharing the longest prefix with `ids`, n <= `limit`
        of its tokens usable; (0, None) when none shares any."""
        self.stats.lookups += 1
        owner = _owner(model)
        query = torch.as_tensor(list(ids), dtype=torch.long)
        best, best_key = 0, None
        for key, entry in self._entries.items():
            if key[0] != owner:
                continue
            n = common_prefix_length(entry.ids, query)
            if n > best:
                best, best_key = n, key
        if limit is not None:
            best = min(best, limit)
        if best_key is None or best == 0:
            return 0, None
        self._entries.move_to_end(best_key)
        self.stats.hits += 1
        self.stats.reused_tokens += best
        return best, self._entries[best_key]

    def remember(self, model: torch.nn.Module, ids: Sequence[int], keys: list[Tensor], values: list[Tensor]) -> None:
        """Keep `keys`/`values` (per layer (heads, len(ids), dim), owned by the cache from now)
        as the cache of `ids` under `model`. A remembered sequence that `ids` extends is
        replaced; one that already extends `ids` makes this a no-op."""
        entry = CachedPrefix(torch.as_tensor(list(ids), dtype=torch.long), keys, values)
        if len(entry) == 0 or entry.nbytes > self.budget_bytes:
            return
        owner = _owner(model, track=self)
        for key, old in list(self._entries.items()):
            if key[0] != owner:
                continue
            shared = common_prefix_length(old.ids, entry.ids)
            if shared == len(entry):
                self._entries.move_to_end(key)
                return
            if shared == len(old):
                self._drop(key)
        while self._bytes + entry.nbytes > self.budget_bytes:
            self._drop(next(iter(self._entries)))
            self.stats.evicted += 1
        self._serial += 1
        self._entries[(owner, self._serial)] = entry
        self._bytes += entry.nbytes
        self.stats.stored += 1

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: tuple) -> None:
        self._bytes -= self._entries.pop(key).nbytes


def common_prefix_length(a: Tensor, b: Tensor) -> int:
    """How many leading ids two 1-D id tensors share."""
    n = min(a.shape[0], b.shape[0])
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if differ.numel() else n


def _owner(model: torch.nn.Module, track: PrefixCache | None = None) -> tuple:
    """Who may be served an entry: this model object, in its current dtype, on its device.

    With `track`, the model's entries are dropped from that cache once the model is
    garbage-collected, so a later model that reuses its memory address is never served them.
    """
    # The attention implementation too: keys computed batch-invariantly and keys computed
    # in padded batches differ in their last bits, and a run never mixes the two.
    owner = (id(model), str(model.dtype), str(model.device),
             getattr(getattr(model, "config", None), "_attn_implementation", None))
    if track is not None:
        finalizers = model.__dict__.setdefault("_prefix_cache_finalizers", {})
        if id(track) not in finalizers:
            finalizers[id(track)] = weakref.finalize(model, _forget, weakref.ref(track), owner[0])
    return owner


def _forget(cache_ref: weakref.ref, model_id: int) -> None:
    cache = cache_ref()
    if cache is not None:
        for key in [k for k in cache._entries if k[0][0] == model_id]:
            cache._drop(key)
