"""Batch-invariant decoding: a row's tokens and log-probs do not depend on what shares its batch.

On (the default), a model computes every row as it would alone: its linear layers with a
canonical row count (`canonical_linear`) and its attention with one call shape per query
position (`invariant_attention`), so batch size, the other rows and streams, the prefix
cache, the thread count and the executor leave a row's numbers bit-identical. Off, the
engine keeps its fastest kernels (padded batches, per-group attention), whose sums can
round differently from one batch to another.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from transformers import PreTrainedModel

from harness.engine import canonical_linear, invariant_attention
from harness.engine.growing_cache import full_layers_only

MODES = {"on": True, "off": False}


def parse_mode(value: str | bool, flag: str = "--batch-invariant") -> bool:
    """'on'/'off' (or a bool) -> bool; anything else is refused naming `flag`."""
    if isinstance(value, bool):
        return value
    mode = str(value).strip().lower()
    if mode not in MODES:
        raise ValueError(f"{flag} (={value!r}) must be 'on' or 'off'")
    return MODES[mode]


def set_batch_invariant(model: PreTrainedModel, on: bool) -> bool:
    """Switch `model` to batch-invariant computation (or back); True if it now computes so.

    Models whose attention cannot be replaced (eager-only architectures, sliding-window or
    recurrent layers) stay as they are and report False.
    """
    if on and full_layers_only(model.config) and invariant_attention.install(model):
        canonical_linear.make_canonical(model)
        return True
    canonical_linear.make_plain(model)
    if invariant_attention.installed(model):
        model.set_attn_implementation("sdpa")
    return False



@contextmanager
def batch_invariance(loaded, on: bool) -> Iterator[None]:
    """A LoadedModel computing batch-invariantly (on) or not inside the block (benchmarks
    compare the two on one model); its mode is restored after."""
    before = loaded.batch_invariant
    loaded.batch_invariant = set_batch_invariant(loaded.model, on)
    try:
        yield
    finally:
        loaded.batch_invariant = set_batch_invariant(loaded.model, before)
