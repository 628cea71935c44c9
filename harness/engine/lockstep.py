"""The batched multi-context decoding engine: the one place that runs forward passes.

It decodes B rows x K streams in lockstep. Stream k of row b is a context on some
model; all streams that share a model are advanced in one batched forward per step.
Each step the decoder sees the (K, B, V) log-probs and returns the token that is
appended to every stream of the row (or, per row, a soft weight vector whose embedding
is fed instead). Rows stop independently on EOS, a stop string, or max_new_tokens, and
finished rows are dropped from the batch, with the decoder's per-row state, so they
stop costing compute. The loop itself is `live_batch.LiveBatch`; inside
`shared_decoding.sharing(...)` concurrent `decode` calls share its batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from decoders.base import Decoder
from decoders.thinking import ANSWER_MARKER, THINK_MARKER, marker_variants
from harness.engine import shared_decoding, token_stream
from harness.engine.live_batch import DecodeCall, ForceTokens, LiveBatch, RowResult, StepView
from harness.engine.models import LoadedModel

__all__ = ["BudgetForcer", "ForceTokens", "RowResult", "StepView", "check_vocabularies", "decode", "eos_ids",
           "should_split_streams", "think_budget"]

THINK_OPEN = "<think>"
# The thinking budget of the `decode` calls made inside `think_budget(n)` (None: none).
_THINK_BUDGET: ContextVar[int | None] = ContextVar("think_budget", default=None)


@contextmanager
def think_budget(tokens: int | None) -> Iterator[None]:
    """Budget forcing (s1) for every `decode` inside the block, whatever its decoder: a row that
    has thought `tokens` new tokens without ending its thinking gets the end-of-thinking marker
    forced in, token by token, and answers after it. The marker is `</think>` where the tokenizer
    has it as one token (a row thinks from the start where its prompt leaves `<think>` open,
    otherwise from a `<think>` it writes itself), else `<answer>` (the whole completion before it
    is thinking). A decoder with a thinking phase of its own (`with_think_budget(n)`: the soft
    decoders) is handed the budget instead. Rows report how thinking ended in
    `RowResult.thinking`. None or 0: no budget."""
    token = _THINK_BUDGET.set(tokens or None)
    try:
        yield
    finally:
        _THINK_BUDGET.reset(token)


def decode(
    models: LoadedModel | Sequence[LoadedModel],
    contexts: Sequence[Sequence[Sequence[int]]],
    decoder: Decoder,
    *,
    max_new_tokens: int,
    stream_models: Sequence[int] | None = None,
    stop_strings: Sequence[str] = (),
    rngs: Sequence[torch.Generator] | None = None,
    eos_token_ids: Sequence[int] | None = None,
    return_logprobs: bool = False,
    on_step: Callable[[StepView], None] | None = None,
    force_tokens: ForceTokens | None = None,
    split_streams: bool | None = None,
) -> list[RowResult]:
    """Decode every row of `contexts` with `decoder`.

    Args:
        models: one model, or several for decoders whose streams use different models;
            they must share one vocabulary (checked before any forward pass).
        contexts: contexts[k][b] is the prompt token ids of stream k of row b.
        decoder: chooses each row's next token from the streams' log-probs.
        max_new_tokens: upper bound on new tokens per row.
        stream_models: index into `models` for each stream (default: all use models[0]).
        stop_strings: a row ends once its new text contains one of these.
        rngs: one generator per row (required by sampling decoders).
        eos_token_ids: tokens that end a row (default: every model's EOS ids).
        return_logprobs: keep per-step log-probs of the recorded tokens (see RowResult).
        on_step: observer called after each step (e.g. to collect statistics).
        force_tokens: hook called after the decoder each step; the tokens it returns are
            forced into their rows like `Step.forced_ids` (and win over the decoder's).
            The decoder is not told: one whose state depends on a forced token (a soft
            decoder leaving its thinking phase at `</think>`) forces it itself.
        split_streams: advance each stream as a batch of its own, so that rows of short
            contexts do not attend over the padding of long ones (x beside x2), or (False)
            advance the streams of one model in one forward per step; None decides by
            `should_split_streams`.

    Inside `shared_decoding.sharing(...)` the rows are decoded in batches shared with the
    other calls made there meanwhile (from other threads); the results are the same.
    """
    models = [models] if isinstance(models, LoadedModel) else list(models)
    num_streams, num_rows = len(contexts), len(contexts[0]) if contexts else 0
    _check_inputs(models, contexts, decoder, stream_models, max_new_tokens, rngs)
    check_vocabularies(models)
    vocab_size = _shared_vocab_size(models)
    stream_models = list(stream_models) if stream_models is not None else [0] * num_streams
    if num_rows == 0:
        return []
    tokenizer = models[0].tokenizer
    eos = set(eos_token_ids) if eos_token_ids is not None else set().union(*(eos_ids(m) for m in models))
    rngs = list(rngs) if rngs is not None else [torch.Generator(models[0].device).manual_seed(0)] * num_rows
    budget, forcer = _THINK_BUDGET.get(), None
    if budget:
        own = getattr(decoder, "with_think_budget", None)
        if own is not None:  # it ends its own thinking phase (its state changes there)
            decoder = own(budget)
        else:
            forcer = BudgetForcer(tokenizer, [contexts[0][b] for b in range(num_rows)], budget)
            force_tokens = forcer.combined(force_tokens)
    if split_streams is None:
        split_streams = should_split_streams(num_rows, [sum(map(len, c)) / num_rows for c in contexts])
    call = DecodeCall(contexts=contexts, decoder=decoder,
                      max_new_tokens=max_new_tokens, rngs=rngs, eos=frozenset(eos), stop_strings=tuple(stop_strings),
                      return_logprobs=return_logprobs, on_step=on_step, force_tokens=force_tokens,
                      thinking=forcer.outcome if forcer is not None else None,
                      on_token=token_stream.row_sink(num_rows))
    sharing = shared_decoding.current()
    if sharing is not None:
        sharing.run(call, models, stream_models, split_streams=split_streams, vocab_size=vocab_size)
    else:
        batch = LiveBatch(models, stream_models, split_streams=split_streams, vocab_size=vocab_size)
        batch.admit(call)
        while not call.done:
            batch.step()
        if call.error is not None:
            raise call.error
    return call.results(tokenizer)


class BudgetForcer:
    """The `force_tokens` hook of a thinking budget (see `think_budget`), for one `decode` call.

    Args:
        tokenizer: the rows' tokenizer (it decides the marker).
        prompts: each row's prompt ids (its first stream's), to see whether it opens the thinking.
        budget: new tokens a row may think before the marker is forced.
    """

    def __init__(self, tokenizer, prompts: Sequence[Sequence[int]], budget: int) -> None:
        self.budget = budget
        opener = tokenizer.encode(THINK_OPEN, add_special_tokens=False)
        closer = tokenizer.encode(THINK_MARKER, add_special_tokens=False)
        thinking_model = len(opener) == 1 and len(closer) == 1
        self.markers = marker_variants(tokenizer, THINK_MARKER if thinking_model else ANSWER_MARKER)
        self.opener = opener[0] if thinking_model else None
        # Where each row's thinking starts among its new tokens (None: not yet).
        self.start: list[int | None] = [
            0 if not thinking_model or _last(p, opener[0]) > _last(p, closer[0]) else None for p in prompts]
        self.forced_at: list[int | None] = [None] * len(prompts)
        self.closed = [False] * len(prompts)

    def combined(self, hook: ForceTokens | None) -> ForceTokens:
        """This budget's hook, then `hook` (the caller's tokens win)."""
        def force(step_index: int, rows: list[int], new_ids: list[list[int]]) -> Mapping[int, int]:
            wanted = dict(self(step_index, rows, new_ids))
            if hook is not None:
                wanted.update(hook(step_index, rows, new_ids))
            return wanted
        return force

    def __call__(self, step_index: int, rows: list[int], new_ids: list[list[int]]) -> Mapping[int, int]:
        forced = {}
        marker = self.markers[0]
        for row, ids in zip(rows, new_ids, strict=True):
            if self.closed[row]:
                continue
            at = self.forced_at[row]
            if at is not None:  # the marker is being forced, token by token
                if len(ids) - at < len(marker):
                    forced[row] = marker[len(ids) - at]
                else:
                    self.closed[row] = True
                continue
            if self.start[row] is None:
                if ids and ids[-1] == self.opener:
                    self.start[row] = len(ids) - 1
                continue
            if any(len(ids) - self.start[row] >= len(m) and tuple(ids[-len(m):]) == m for m in self.markers):
                self.closed[row] = True  # the row ended its thinking itself
            elif len(ids) >= self.budget:
                self.forced_at[row] = len(ids)
                forced[row] = marker[0]
        return forced

    def outcome(self, row: int, ids: Sequence[int]) -> dict:
        """How row `row`'s thinking ended, once it is done (see `RowResult.thinking`)."""
        if self.forced_at[row] is not None:
            return {"think_end": "budget", "think_end_step": self.forced_at[row]}
        start = self.start[row]
        if start is None and self.opener is not None and self.opener in ids:
            start = list(ids).index(self.opener)
        if start is not None:
            for end in range(start + 1, len(ids) + 1):
                for m in self.markers:
                    if end - start >= len(m) and tuple(ids[end - len(m):end]) == m:
                        return {"think_end": "marker", "think_end_step": end - len(m)}
        return {"think_end": None, "think_end_step": None}


def _last(ids: Sequence[int], token: int) -> int:
    """Position of the last `token` in `ids`, -1 where there is none."""
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] == token:
            return i
    return -1


# Rows from which streams of very different lengths are advanced apart. Measured with
# bench/redumix.py (x ~100 and x2 ~600 tokens, CPU): one joint forward is 1.8x faster at 1 row
# and ~10% faster at 16. At 64 rows (bf16) a joint step is still faster (per-group attention
# reads no padding: 3.4 against 3.9 ms per token), but x's rows padded to x2's length hold
# ~0.7 GB of empty cache that prefill and row drops copy: 10.6 against 8.6 ms per token overall.
SPLIT_MIN_ROWS = 32
SPLIT_MIN_LENGTH_RATIO = 2.0


def should_split_streams(num_rows: int, mean_lengths: Sequence[float]) -> bool:
    """Whether to advance each stream as its own batch: many rows, and contexts whose
    lengths differ enough that a joint batch would mostly attend over padding."""
    if len(mean_lengths) < 2 or num_rows < SPLIT_MIN_ROWS:
        return False
    return max(mean_lengths) >= SPLIT_MIN_LENGTH_RATIO * max(1.0, min(mean_lengths))


def eos_ids(loaded: LoadedModel) -> set[int]:
    """Token ids that end generation: the generation config's and the tokenizer's."""
    ids: set[int] = set()
    configured = getattr(loaded.model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids


def check_vocabularies(models: Sequence[LoadedModel], labels: Sequence[str] | None = None) -> None:
    """Refuse models whose tokenizers map tokens to ids differently: their streams
    would record and mix different tokens under one id. `labels` name the models in
    the message (default: their names).

    Raises:
        ValueError: naming the first ids on which two models differ.
    """
    first = models[0].tokenizer
    if all(m.tokenizer is first for m in models[1:]):
        return  # one tokenizer (the usual single model): nothing to compare, and get_vocab is not free
    reference = first.get_vocab()
    for i, other in enumerate(models[1:], start=1):
        if other.tokenizer is first:
            continue
        vocab = other.tokenizer.get_vocab()
        if vocab != reference:
            a, b = (labels[0], labels[i]) if labels else (_model_label(models, 0), _model_label(models, i))
            raise ValueError(
                f"models disagree on the vocabulary ({len(reference)} tokens in {a}, {len(vocab)} in {b}): "
                f"{_vocabulary_differences(reference, vocab, a, b)}; mixing needs one tokenizer for all models"
            )


def _vocabulary_differences(vocab_a: Mapping[str, int], vocab_b: Mapping[str, int], a: str, b: str,
                            limit: int = 3) -> str:
    """'id 17 is 'x' in a and 'y' in b; ...' for the first `limit` ids that differ."""
    by_id_a = {i: token for token, i in vocab_a.items()}
    by_id_b = {i: token for token, i in vocab_b.items()}
    differing = [i for i in sorted(by_id_a.keys() | by_id_b.keys()) if by_id_a.get(i) != by_id_b.get(i)]
    parts = []
    for i in differing[:limit]:
        in_a = repr(by_id_a[i]) if i in by_id_a else "absent"
        in_b = repr(by_id_b[i]) if i in by_id_b else "absent"
        parts.append(f"id {i} is {in_a} in {a} and {in_b} in {b}")
    more = len(differing) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _model_label(models: Sequence[LoadedModel], i: int) -> str:
    name = models[i].name
    return name if sum(m.name == name for m in models) == 1 else f"{name} (models[{i}])"


def _shared_vocab_size(models: Sequence[LoadedModel]) -> int | None:
    """Where the models' output layers differ in size (padded differently), the width the
    log-probs are cut to, the shared tokenizer's vocabulary size; None where they agree."""
    sizes = [_output_size(m) for m in models]
    if len(set(sizes)) == 1:
        return None
    shared = len(models[0].tokenizer)
    names = ", ".join(f"{_model_label(models, i)}: {size}" for i, size in enumerate(sizes))
    if shared > min(sizes):
        raise ValueError(
            f"the tokenizer has {shared} tokens, but a model's output layer scores fewer ({names}); "
            "every model must score every token"
        )
    warnings.warn(
        f"the models' output layers differ in size ({names}); their log-probs are cut to the "
        f"tokenizer's {shared} tokens so they can be mixed",
        stacklevel=3,
    )
    return shared


def _output_size(loaded: LoadedModel) -> int:
    head = loaded.model.get_output_embeddings()
    return head.weight.shape[0] if head is not None else loaded.model.config.vocab_size


def _check_inputs(models, contexts, decoder, stream_models, max_new_tokens, rngs) -> None:
    if not models:
        raise ValueError("models is empty; pass at least one loaded model")
    if len(contexts) != decoder.num_streams:
        raise ValueError(
            f"decoder {decoder.name!r} reads {decoder.num_streams} stream(s) per row, "
            f"but {len(contexts)} context list(s) were given"
        )
    if len({len(c) for c in contexts}) > 1:
        raise ValueError(f"every stream needs one context per row; got row counts {[len(c) for c in contexts]}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens (={max_new_tokens}) must be >= 1")
    if stream_models is not None:
        if len(stream_models) != len(contexts):
            raise ValueError(f"stream_models has {len(stream_models)} entries for {len(contexts)} streams")
        if any(not 0 <= m < len(models) for m in stream_models):
            raise ValueError(f"stream_models (={list(stream_models)}) must index into {len(models)} model(s)")
    if rngs is not None and len(rngs) != len(contexts[0]):
        raise ValueError(f"rngs has {len(rngs)} generators for {len(contexts[0])} rows; pass one per row")
    if hasattr(decoder, "select_rows") and not hasattr(decoder, "init_state"):
        # The engine no longer calls select_rows; such a decoder would mix up rows' settings.
        raise TypeError(
            f"decoder {decoder.name!r} defines select_rows(), which the engine no longer calls; "
            "declare per-row state with init_state(num_rows) and take it in step(logprobs, rngs, state)"
        )
