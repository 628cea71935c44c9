"""Rows decoded in lockstep, which more rows may join between steps: the engine's loop.

A `DecodeCall` is one `decode` request: its rows' contexts, its decoder and per-row decoder
state, its limits and hooks, and what its rows have produced. A `LiveBatch` advances the
active rows of one or more calls on the same models, one forward per model per step. Each
call's decoder reads only its own rows' log-probs, so calls with different decoders (greedy
beside soft beside sampling) share the forward passes. Between steps another call's rows may
join: they are prefilled on their own and merged into the running caches (continuous
batching). Rows leave as they finish, with their decoder state.

`lockstep.decode` runs one call in a batch of its own; `shared_decoding.SharedDecoding`
lets concurrent calls share batches. A row computes as it would alone (batch invariance), so
what else shares its batch never changes its tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from decoders.base import Decoder, RowState, Step, initial_state, run_step, select_state
from harness.engine.growing_cache import full_layers_only
from harness.engine.models import LoadedModel
from harness.engine.row_end import end_of_row
from harness.engine.step_inputs import (
    Inputs,
    advance,
    check_step,
    log_softmax,
    next_inputs,
    recorded_logprobs,
    with_forced_tokens,
)
from harness.engine.stream_batch import StreamBatch

# Caller hook: (step index, active rows' original indices, each active row's new tokens so
# far, read-only) -> {original row index: token id to force into that row at this step}.
ForceTokens = Callable[[int, list[int], list[list[int]]], Mapping[int, int]]


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
        prefill_s: wall time of the prefill of the row's call (shared by its rows).
        decode_s: wall time from the end of that prefill until this row finished.
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
    """Handed to an `on_step` observer after every decoding step of its call."""

    step_index: int
    rows: list[int]  # original row index of each active row
    logprobs: Tensor  # (K, B_active, V)
    step: Step  # as the decoder returned it, with forced tokens in token_ids and forced_ids


@dataclass(eq=False)
class DecodeCall:
    """One `decode` request (see `lockstep.decode` for the arguments) and its rows' progress.

    `thinking(row, new ids)` says, once a row is done, how its thinking ended (the thinking
    budget's report), or is None.
    """

    contexts: Sequence[Sequence[Sequence[int]]]
    decoder: Decoder
    max_new_tokens: int
    rngs: Sequence[torch.Generator]
    eos: frozenset[int]
    stop_strings: tuple[str, ...] = ()
    return_logprobs: bool = False
    on_step: Callable[[StepView], None] | None = None
    force_tokens: ForceTokens | None = None
    thinking: Callable[[int, list[int]], dict] | None = None
    on_token: Callable[[int, int], None] | None = None  # (row, token) as each is recorded
    state: RowState = field(default_factory=dict)  # the active rows' decoder state
    active: list[int] = field(default_factory=list)  # its rows in the batch, in batch order
    steps: int = 0
    prefill_s: float = 0.0
    decode_start: float = 0.0
    error: Exception | None = None  # what its decoder or hooks raised; its rows then left the batch

    def __post_init__(self) -> None:
        n = self.num_rows
        self.new_ids: list[list[int]] = [[] for _ in range(n)]
        # How many of a row's first tokens came at steps where it could not stop.
        self.held = [0] * n
        # How many of a row's first new tokens were fed as token ids (all, until a soft input):
        # the prefix cache may remember the row's cache that far.
        self.fed_as_ids: list[int | None] = [None] * n
        self.trace: list[list[list[float]]] = [[] for _ in range(n)]
        self.finished: dict[int, tuple[str, str | None, str | None, float]] = {}

    @property
    def num_rows(self) -> int:
        return len(self.contexts[0]) if self.contexts else 0

    @property
    def done(self) -> bool:
        """Every row finished, or the call failed (`error`)."""
        return self.error is not None or len(self.finished) == self.num_rows

    def results(self, tokenizer) -> list[RowResult]:
        """Every row's result, in row order (once `done`)."""
        out = []
        for row in range(self.num_rows):
            reason, stop, text, decode_s = self.finished[row]
            ids = self.new_ids[row]
            out.append(RowResult(
                token_ids=ids,
                text=text if text is not None else tokenizer.decode(ids, skip_special_tokens=True),
                finish_reason=reason,
                stop=stop,
                prompt_tokens=[len(c[row]) for c in self.contexts],
                prefill_s=self.prefill_s,
                decode_s=decode_s,
                token_logprobs=self.trace[row] if self.return_logprobs else None,
                thinking=self.thinking(row, ids) if self.thinking is not None else None,
            ))
        return out

    def step(self, logprobs: Tensor, vocab_size: int) -> Step:
        """Its decoder's step over its active rows' (K, b, V) log-probs, with forced tokens in;
        traced and shown to its observer."""
        step = run_step(self.decoder, logprobs, [self.rngs[r] for r in self.active], self.state)
        check_step(self.decoder, step, len(self.active))
        wanted = None
        if self.force_tokens is not None:
            wanted = self.force_tokens(self.steps, list(self.active), [self.new_ids[r] for r in self.active])
        step = with_forced_tokens(step, wanted, self.active, vocab_size)
        if step.state is not None:
            self.state = step.state
        if self.return_logprobs:
            for row, values in zip(self.active, recorded_logprobs(logprobs, step), strict=True):
                self.trace[row].append(values)
        if self.on_step is not None:
            self.on_step(StepView(self.steps, list(self.active), logprobs, step))
        self.steps += 1
        return step

    def record(self, step: Step, tokenizer, now: float) -> list[bool]:
        """Append the step's tokens to its rows; per active row, whether it goes on."""
        tokens = step.token_ids.tolist()
        no_stop = step.no_stop_mask.tolist() if step.no_stop_mask is not None else [False] * len(tokens)
        going_on = []
        for i, row in enumerate(self.active):
            ids = self.new_ids[row]
            ids.append(tokens[i])
            if self.on_token is not None:
                self.on_token(row, tokens[i])
            if no_stop[i]:
                self.held[row] = len(ids)
            ended = end_of_row(ids, self.eos, self.stop_strings, tokenizer, self.max_new_tokens, self.held[row])
            if ended is not None:
                self.finished[row] = (*ended, now - self.decode_start)
            going_on.append(ended is None)
        return going_on

    def note_soft_inputs(self, inputs: Inputs) -> None:
        """Mark where each row first feeds a soft input instead of its token's embedding."""
        for row, soft in zip(self.active, inputs.soft_rows, strict=True):
            if soft and self.fed_as_ids[row] is None:
                self.fed_as_ids[row] = len(self.new_ids[row]) - 1

    def fed_sequence(self, stream: int, row: int) -> list[int]:
        """The token ids whose inputs the row's cache of `stream` holds: its prompt and the new
        tokens fed as ids (all but the newest, which was never fed)."""
        ids = self.new_ids[row]
        fed = len(ids) - 1 if self.fed_as_ids[row] is None else self.fed_as_ids[row]
        return [*self.contexts[stream][row], *ids[:fed]]


class LiveBatch:
    """The active rows of the calls admitted so far, advanced one step at a time.

    Args:
        models: the models the streams run on (one vocabulary).
        stream_models: index into `models` for each stream.
        split_streams: advance each stream as a batch of its own (see `lockstep.decode`).
        vocab_size: the width log-probs are cut to (None: the models agree).
    """

    def __init__(self, models: Sequence[LoadedModel], stream_models: Sequence[int], *, split_streams: bool,
                 vocab_size: int | None) -> None:
        self.models = list(models)
        self.stream_models = list(stream_models)
        self.split_streams = split_streams
        self.vocab_size = vocab_size
        self.tokenizer = self.models[0].tokenizer
        # Log-probs of every stream meet on the first model's device, where decoders mix them.
        self.device = self.models[0].model.device
        self.calls: list[DecodeCall] = []  # calls with active rows, in batch order
        self.groups: list[tuple[StreamBatch, list[int]]] = []
        self.stream_logits: list[Tensor] = []
        # Rows can join a running batch only where every cache layer holds every position.
        self.can_join = all(full_layers_only(m.model.config) for m in self.models)

    @property
    def num_streams(self) -> int:
        return len(self.stream_models)

    @property
    def rows(self) -> int:
        return sum(len(c.active) for c in self.calls)

    @property
    def empty(self) -> bool:
        return not self.calls

    def _new_groups(self) -> list[tuple[StreamBatch, list[int]]]:
        """One batch per model holding all of that model's streams, stream-major (or, split, one per stream)."""
        groups = []
        for m, loaded in enumerate(self.models):
            streams = [k for k in range(self.num_streams) if self.stream_models[k] == m]
            for part in ([[k] for k in streams] if self.split_streams else [streams] if streams else []):
                groups.append((StreamBatch(loaded.model, self.tokenizer.pad_token_id, loaded.prefix_cache), part))
        return groups

    def admit(self, call: DecodeCall) -> None:
        """Prefill `call`'s rows and add them after the active rows (between steps only).

        Raises:
            ValueError: the call reads another number of streams, or (running) the batch
                cannot take rows (`can_join` is False).
        """
        if len(call.contexts) != self.num_streams:
            raise ValueError(f"a call of {len(call.contexts)} streams cannot join a batch of {self.num_streams}")
        if self.calls and not self.can_join:
            raise ValueError("this model's cache keeps only some positions; rows cannot join a running batch")
        n = call.num_rows
        call.state = initial_state(call.decoder, n)
        start = time.perf_counter()
        groups = self._new_groups()
        logits: list[Tensor] = [None] * self.num_streams  # type: ignore[list-item]
        for batch, streams in groups:
            out = batch.prefill([row for k in streams for row in call.contexts[k]])
            for j, k in enumerate(streams):
                logits[k] = out[j * n : (j + 1) * n]
        call.prefill_s = time.perf_counter() - start
        call.decode_start = time.perf_counter()
        if self.calls:
            held = self.rows
            for (batch, streams), (new, _) in zip(self.groups, groups, strict=True):
                batch.join(new, held, n, len(streams))
            self.stream_logits = [torch.cat([old, new.to(old.device)]) for old, new in
                                  zip(self.stream_logits, logits, strict=True)]
        else:
            self.groups, self.stream_logits = groups, logits
        call.active = list(range(n))
        self.calls.append(call)

    def step(self) -> list[DecodeCall]:
        """One decoding step of every active row; the calls whose last rows finished in it."""
        logprobs = torch.stack([log_softmax(z, self.vocab_size).to(self.device) for z in self.stream_logits])
        width = logprobs.shape[-1]
        steps, going_on, start = [], [], 0
        for call in self.calls:
            span = logprobs if len(self.calls) == 1 else logprobs[:, start : start + len(call.active)]
            start += len(call.active)
            try:
                step = call.step(span, width)
                rows = call.record(step, self.tokenizer, time.perf_counter())
            except Exception as err:  # noqa: BLE001 (one call's decoder or hooks failing end that call only)
                call.error = err
                steps.append(None)
                going_on.append([False] * len(call.active))
                continue
            steps.append(step)
            going_on.append(rows)
        flat = [g for rows in going_on for g in rows]
        if not all(flat):
            self._remember_finished(going_on)
        finished = [call for call in self.calls if call.done]
        if not any(flat):
            self.calls, self.groups, self.stream_logits = [], [], []
            return finished
        parts = []
        for call, step, rows in zip(self.calls, steps, going_on, strict=True):
            if step is None:
                call.active = []
                continue
            inputs = next_inputs(step)
            call.note_soft_inputs(inputs)
            if not all(rows):
                keep = torch.tensor([i for i, g in enumerate(rows) if g], dtype=torch.long)
                inputs = inputs.select(keep)
                call.state = select_state(call.state, keep)
                call.active = [call.active[i] for i in keep.tolist()]
            if call.active:
                parts.append(inputs)
        if not all(flat):
            keep = torch.tensor([i for i, g in enumerate(flat) if g], dtype=torch.long)
            for batch, streams in self.groups:
                batch.keep(torch.cat([keep + j * len(flat) for j in range(len(streams))]))
            self.calls = [call for call in self.calls if call.active]
        rows = self.rows
        for batch, streams in self.groups:
            out = advance(batch, parts, len(streams))
            for j, k in enumerate(streams):
                self.stream_logits[k] = out[j * rows : (j + 1) * rows]
        return finished

    def _remember_finished(self, going_on: list[list[bool]]) -> None:
        """Hand the prefix cache (where the model has one) the caches of rows about to leave
        the batch: each stream's prompt and the new tokens whose inputs it holds."""
        width = sum(len(rows) for rows in going_on)
        leaving, position = [], 0
        for call, rows in zip(self.calls, going_on, strict=True):
            for row, goes_on in zip(call.active, rows, strict=True):
                if not goes_on and call.error is None:
                    leaving.append((position, call, row))
                position += 1
        for batch, streams in self.groups:
            if batch.prefix_cache is None:
                continue
            positions, sequences = [], []
            for j, k in enumerate(streams):
                for i, call, row in leaving:
                    positions.append(j * width + i)
                    sequences.append(call.fed_sequence(k, row))
            batch.remember(positions, sequences)
