"""The batched multi-context decoding engine: the one place that runs forward passes.

It decodes B rows x K streams in lockstep. Stream k of row b is a context on some
model; all streams that share a model are advanced in one batched forward per step.
Each step the decoder sees the (K, B, V) log-probs and returns the token that is
appended to every stream of the row (or, per row, a soft weight vector whose embedding
is fed instead). Rows stop independently on EOS, a stop string, or max_new_tokens, and
finished rows are dropped from the batch, with the decoder's per-row state, so they
stop costing compute.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor

from decoders.base import NOT_FORCED, Decoder, Step, check_state, initial_state, run_step, select_state
from decoders.thinking import ANSWER_MARKER, THINK_MARKER, marker_variants
from harness.engine.models import LoadedModel
from harness.engine.stream_batch import StreamBatch

# Caller hook: (step index, active rows' original indices, each active row's new tokens so
# far, read-only) -> {original row index: token id to force into that row at this step}.
ForceTokens = Callable[[int, list[int], list[list[int]]], Mapping[int, int]]

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


@dataclass
class RowResult:
    """What one row produced.

    Attributes:
        token_ids: the new tokens (an EOS that ended the row is included).
        text: the decoded new text without special tokens, cut just after the stop
            string when one ended the row.
        finish_reason: "eos", "stop" or "length".
        stop: the stop string that ended the row, if any.
        prompt_tokens: prompt length of each stream.
        prefill_s: wall time of the batch's prefill (shared by its rows).
        decode_s: wall time from the end of prefill until this row finished.
        token_logprobs: on request, per step [lp_0, ..., lp_{K-1}(, lp_dec)]: the recorded
            token's log-prob under each stream's full next-token distribution (log-softmax
            of the logits, before any decoder filtering such as temperature or top-p),
            then, for decoders that return `Step.logprobs`, under that distribution (also
            before filtering). Column 0 is what run records save as `steps.logprob`.
    """

    token_ids: list[int]
    text: str
    finish_reason: str
    stop: str | None
    prompt_tokens: list[int]
    prefill_s: float
    decode_s: float
    token_logprobs: list[list[float]] | None = None
    # Under a thinking budget (`think_budget`): {"think_end": "marker" (the row ended its thinking
    # itself), "budget" (forced) or None (it never did, or never thought), "think_end_step": the step
    # of the marker's first token or None}; None without a budget.
    thinking: dict | None = None

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class StepView:
    """Handed to an `on_step` observer after every decoding step."""

    step_index: int
    rows: list[int]  # original row index of each active row
    logprobs: Tensor  # (K, B_active, V)
    step: Step  # as the decoder returned it, with forced tokens in token_ids and forced_ids


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
    state = initial_state(decoder, num_rows)
    # Log-probs of every stream meet on the first model's device, where decoders mix them.
    device = models[0].model.device

    # One batch per model holding all of that model's streams, stream-major (or, split, one per stream).
    if split_streams is None:
        split_streams = should_split_streams(num_rows, [sum(map(len, c)) / num_rows for c in contexts])
    groups: list[tuple[StreamBatch, list[int]]] = []
    for m, loaded in enumerate(models):
        streams = [k for k in range(num_streams) if stream_models[k] == m]
        for part in ([[k] for k in streams] if split_streams else [streams] if streams else []):
            groups.append((StreamBatch(loaded.model, tokenizer.pad_token_id, loaded.prefix_cache), part))

    start = time.perf_counter()
    stream_logits: list[Tensor] = [None] * num_streams  # type: ignore[list-item]
    for batch, streams in groups:
        logits = batch.prefill([row for k in streams for row in contexts[k]])
        for j, k in enumerate(streams):
            stream_logits[k] = logits[j * num_rows : (j + 1) * num_rows]
    prefill_s = time.perf_counter() - start
    decode_start = time.perf_counter()

    active = list(range(num_rows))
    new_ids: list[list[int]] = [[] for _ in range(num_rows)]
    # How many of a row's first tokens came at steps where it could not stop.
    held = [0] * num_rows
    # How many of a row's first new tokens were fed as token ids (all, until a soft input):
    # the prefix cache may remember the row's cache that far.
    fed_as_ids: list[int | None] = [None] * num_rows
    logprob_trace: list[list[list[float]]] = [[] for _ in range(num_rows)]
    finished: dict[int, tuple[str, str | None, str | None, float]] = {}

    for step_index in range(max_new_tokens):
        logprobs = torch.stack([_log_softmax(z, vocab_size).to(device) for z in stream_logits])
        step = run_step(decoder, logprobs, [rngs[r] for r in active], state)
        _check_step(decoder, step, len(active))
        step = _with_forced_tokens(step, force_tokens, step_index, active, new_ids, logprobs.shape[-1])
        if step.state is not None:
            state = step.state
        if return_logprobs:
            _trace_logprobs(logprob_trace, active, logprobs, step)
        if on_step is not None:
            on_step(StepView(step_index, list(active), logprobs, step))

        tokens = step.token_ids.tolist()
        no_stop = step.no_stop_mask.tolist() if step.no_stop_mask is not None else [False] * len(active)
        still: list[int] = []
        for i, row in enumerate(active):
            new_ids[row].append(tokens[i])
            if no_stop[i]:
                held[row] = len(new_ids[row])
            ended = _end_of_row(new_ids[row], eos, stop_strings, tokenizer, max_new_tokens, held[row])
            if ended is None:
                still.append(i)
            else:
                finished[row] = (*ended, time.perf_counter() - decode_start)
        if len(still) < len(active):
            _remember_finished(groups, contexts, active, still, new_ids, fed_as_ids)
        if not still:
            break

        inputs = _next_inputs(step)
        _note_soft_inputs(inputs, active, new_ids, fed_as_ids)
        if len(still) < len(active):
            keep = torch.tensor(still)
            inputs = inputs.select(keep)
            state = select_state(state, keep)
            for batch, streams in groups:
                batch.keep(torch.cat([keep + j * len(active) for j in range(len(streams))]))
            active = [active[i] for i in still]
        width = len(active)
        for batch, streams in groups:
            logits = _advance(batch, inputs, len(streams))
            for j, k in enumerate(streams):
                stream_logits[k] = logits[j * width : (j + 1) * width]

    results = []
    for row in range(num_rows):
        reason, stop, text, decode_s = finished[row]
        results.append(
            RowResult(
                token_ids=new_ids[row],
                text=text if text is not None else tokenizer.decode(new_ids[row], skip_special_tokens=True),
                finish_reason=reason,
                stop=stop,
                prompt_tokens=[len(contexts[k][row]) for k in range(num_streams)],
                prefill_s=prefill_s,
                decode_s=decode_s,
                token_logprobs=logprob_trace[row] if return_logprobs else None,
                thinking=forcer.outcome(row, new_ids[row]) if forcer is not None else None,
            )
        )
    return results


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


def _remember_finished(groups, contexts, active, still, new_ids, fed_as_ids) -> None:
    """Hand the prefix cache (where the model has one) the caches of rows about to leave
    the batch: each stream's prompt and the new tokens whose inputs it holds (all but the
    newest, which was never fed)."""
    kept = set(still)
    done = [(i, row) for i, row in enumerate(active) if i not in kept]
    for batch, streams in groups:
        if batch.prefix_cache is None:
            continue
        positions, sequences = [], []
        for j, k in enumerate(streams):
            for i, row in done:
                fed = len(new_ids[row]) - 1 if fed_as_ids[row] is None else fed_as_ids[row]
                positions.append(j * len(active) + i)
                sequences.append([*contexts[k][row], *new_ids[row][:fed]])
        batch.remember(positions, sequences)


def _note_soft_inputs(inputs: _Inputs, active: list[int], new_ids: list[list[int]],
                      fed_as_ids: list[int | None]) -> None:
    """Mark where each row first feeds a soft input instead of its token's embedding."""
    if inputs.soft_weights is None:
        return
    soft = inputs.soft_mask.tolist() if inputs.soft_mask is not None else [True] * len(active)
    for i, row in enumerate(active):
        if soft[i] and fed_as_ids[row] is None:
            fed_as_ids[row] = len(new_ids[row]) - 1


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


def _log_softmax(logits: Tensor, vocab_size: int | None = None) -> Tensor:
    if vocab_size is not None:
        logits = logits[..., :vocab_size]
    # Half-precision logits are widened so mixtures and statistics stay accurate.
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return torch.log_softmax(logits, dim=-1)


def _check_step(decoder: Decoder, step: Step, num_rows: int) -> None:
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


def _with_forced_tokens(step: Step, force_tokens: ForceTokens | None, step_index: int, active: list[int],
                        new_ids: list[list[int]], vocab_size: int) -> Step:
    """`step` with forced tokens in `token_ids`: the decoder's `forced_ids`, overridden by
    what the caller's hook forces. Unchanged where nothing is forced."""
    forced = step.forced_ids
    wanted = force_tokens(step_index, list(active), [new_ids[r] for r in active]) if force_tokens else None
    if wanted:
        forced = forced.clone() if forced is not None else torch.full_like(step.token_ids, NOT_FORCED)
        position = {row: i for i, row in enumerate(active)}
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


@dataclass(frozen=True)
class _Inputs:
    """What the active rows feed next: each row its token, or a soft input where asked."""

    token_ids: Tensor  # (B,)
    soft_weights: Tensor | None = None  # (B, V), or (B, k) over soft_ids; None: every row feeds its token
    soft_mask: Tensor | None = None  # (B,) bool; None with soft_weights: every row is soft
    soft_ids: Tensor | None = None  # (B, k) ids of sparse weights

    def select(self, rows: Tensor) -> _Inputs:
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.index_select(0, rows.to(t.device))

        return _Inputs(pick(self.token_ids), pick(self.soft_weights), pick(self.soft_mask), pick(self.soft_ids))


def _next_inputs(step: Step) -> _Inputs:
    """The rows' next inputs: soft where the step asks, except forced rows, which feed their token."""
    if step.soft_weights is None:
        return _Inputs(step.token_ids)
    soft = step.soft_mask if step.soft_mask is not None else torch.ones_like(step.token_ids, dtype=torch.bool)
    if step.forced_ids is not None:
        soft = soft & (step.forced_ids.to(soft.device) == NOT_FORCED)
    if bool(soft.all()):
        return _Inputs(step.token_ids, step.soft_weights, soft_ids=step.soft_ids)
    if not bool(soft.any()):
        return _Inputs(step.token_ids)
    return _Inputs(step.token_ids, step.soft_weights, soft, step.soft_ids)


def _advance(batch: StreamBatch, inputs: _Inputs, copies: int) -> Tensor:
    """One forward of `batch`, whose `copies` streams of each row all take the row's input."""
    if inputs.soft_weights is None:
        return batch.advance(token_ids=inputs.token_ids.repeat(copies))
    embeds = batch.soft_embeddings(inputs.soft_weights, inputs.soft_ids)
    if inputs.soft_mask is not None:
        # Token rows get the model's own embedding of their token, soft rows `weights @ E`.
        embeds = torch.where(inputs.soft_mask.to(embeds.device)[:, None], embeds,
                             batch.token_embeddings(inputs.token_ids))
    return batch.advance(embeds=embeds.repeat(copies, 1))


# Characters a stop-string window holds beyond the longest stop string and the newest
# token's own text. They cover what decoding a slice of tokens changes at its edges,
# a few characters each: a character split over byte tokens shows as U+FFFD at either
# end, SentencePiece-style decoders drop the slice's leading space, and a new token can
# rewrite the character before it (a completed UTF-8 sequence, " ." cleaned to ".").
_TAIL_MARGIN = 8


def _end_of_row(ids, eos, stop_strings, tokenizer, max_new_tokens, held=0):
    """(reason, stop string, cut text) if the row is done, else None.

    The row's first `held` tokens came at steps where it could not stop: an EOS among
    them, or a stop string that ends within their text, does not end it.
    """
    if len(ids) > held:
        if ids[-1] in eos:
            return "eos", None, None
        if stop_strings and _stop_in_tail(ids, stop_strings, tokenizer):
            hit = _first_stop(ids, held, stop_strings, tokenizer)
            if hit is not None:
                return "stop", *hit
    if len(ids) >= max_new_tokens:
        return "length", None, None
    return None


def _first_stop(ids, held, stop_strings, tokenizer) -> tuple[str, str] | None:
    """(stop string, text cut just after it) for the stop string that ends first after
    the held tokens' text, or None."""
    # The window's edges can show a stop string the full text lacks, and only the full
    # text gives the cut, so the full text settles a hit: one decode per row in practice.
    text = tokenizer.decode(ids, skip_special_tokens=True)
    held_chars = len(tokenizer.decode(ids[:held], skip_special_tokens=True)) if held else 0
    hits = []
    for stop in stop_strings:
        at = text.find(stop, max(0, held_chars - len(stop) + 1))
        if at >= 0:
            hits.append((at + len(stop), stop))
    if not hits:
        return None
    end, stop = min(hits)
    return stop, text[:end]


def _stop_in_tail(ids, stop_strings, tokenizer) -> bool:
    """Whether a stop string shows in the decoded text of the row's last tokens.

    Rows are checked every step, so a stop string new to the full text ends in what the
    newest token added or changed. The window covers that, the longest stop string and
    _TAIL_MARGIN characters, and doubles while its tokens are too short (byte pieces,
    skipped special tokens), so a step costs a bounded decode instead of one linear in
    the row's length. It never misses a stop string new to the full text (the row had
    none a step earlier, or it would have ended), but may report one the full text lacks.
    """
    longest = max(len(s) for s in stop_strings)
    need = longest + _TAIL_MARGIN + len(tokenizer.decode(ids[-1:], skip_special_tokens=True))
    size = longest + _TAIL_MARGIN + 1
    while True:
        window = tokenizer.decode(ids[-size:], skip_special_tokens=True)
        if size >= len(ids) or len(window) >= need:
            return any(s in window for s in stop_strings)
        size *= 2


def _trace_logprobs(trace, active, logprobs: Tensor, step: Step) -> None:
    chosen = step.token_ids.to(logprobs.device)
    per_stream = logprobs.gather(-1, chosen.view(1, -1, 1).expand(logprobs.shape[0], -1, 1))[..., 0]
    columns = [per_stream]
    if step.logprobs is not None:
        columns.append(step.logprobs.gather(-1, chosen.view(-1, 1)).T.to(per_stream.dtype))
    table = torch.cat(columns).T.tolist()  # (B_active, K [+1])
    for i, row in enumerate(active):
        trace[row].append(table[i])


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
