"""The batched multi-context decoding engine: the one place that runs forward passes.

It decodes B rows x K streams in lockstep. Stream k of row b is a context on some
model; all streams that share a model are advanced in one batched forward per step.
Each step the decoder sees the (K, B, V) log-probs and returns the token that is
appended to every stream of the row (or a soft weight vector whose embedding is
fed instead). Rows stop independently on EOS, a stop string, or max_new_tokens, and
finished rows are dropped from the batch so they stop costing compute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from decoders.base import Decoder, Step, select_rows
from harness.models import LoadedModel
from harness.stream_batch import StreamBatch


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
        token_logprobs: on request, per step the chosen token's log-prob under each
            stream, then under the distribution it was chosen from.
    """

    token_ids: list[int]
    text: str
    finish_reason: str
    stop: str | None
    prompt_tokens: list[int]
    prefill_s: float
    decode_s: float
    token_logprobs: list[list[float]] | None = None

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class StepView:
    """Handed to an `on_step` observer after every decoding step."""

    step_index: int
    rows: list[int]  # original row index of each active row
    logprobs: Tensor  # (K, B_active, V)
    step: Step


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
) -> list[RowResult]:
    """Decode every row of `contexts` with `decoder`.

    Args:
        models: one model, or several for decoders whose streams use different models.
        contexts: contexts[k][b] is the prompt token ids of stream k of row b.
        decoder: chooses each row's next token from the streams' log-probs.
        max_new_tokens: upper bound on new tokens per row.
        stream_models: index into `models` for each stream (default: all use models[0]).
        stop_strings: a row ends once its new text contains one of these.
        rngs: one generator per row (required by sampling decoders).
        eos_token_ids: tokens that end a row (default: the first model's EOS ids).
        return_logprobs: keep per-step log-probs of the chosen tokens.
        on_step: observer called after each step (e.g. to collect statistics).
    """
    models = [models] if isinstance(models, LoadedModel) else list(models)
    num_streams, num_rows = len(contexts), len(contexts[0]) if contexts else 0
    _check_inputs(models, contexts, decoder, stream_models, max_new_tokens, rngs)
    stream_models = list(stream_models) if stream_models is not None else [0] * num_streams
    if num_rows == 0:
        return []
    tokenizer = models[0].tokenizer
    eos = set(eos_token_ids) if eos_token_ids is not None else eos_ids(models[0])
    rngs = list(rngs) if rngs is not None else [torch.Generator(models[0].device).manual_seed(0)] * num_rows

    # One batch per model holding all of that model's streams, stream-major.
    groups: list[tuple[StreamBatch, list[int]]] = []
    for m, loaded in enumerate(models):
        streams = [k for k in range(num_streams) if stream_models[k] == m]
        if streams:
            groups.append((StreamBatch(loaded.model, tokenizer.pad_token_id), streams))

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
    logprob_trace: list[list[list[float]]] = [[] for _ in range(num_rows)]
    finished: dict[int, tuple[str, str | None, str | None, float]] = {}

    for step_index in range(max_new_tokens):
        logprobs = torch.stack([_log_softmax(z) for z in stream_logits])
        step = decoder.step(logprobs, [rngs[r] for r in active])
        tokens = step.token_ids.tolist()
        if return_logprobs:
            _trace_logprobs(logprob_trace, active, logprobs, step)
        if on_step is not None:
            on_step(StepView(step_index, list(active), logprobs, step))

        still: list[int] = []
        for i, row in enumerate(active):
            new_ids[row].append(tokens[i])
            ended = _end_of_row(new_ids[row], eos, stop_strings, tokenizer, max_new_tokens)
            if ended is None:
                still.append(i)
            else:
                finished[row] = (*ended, time.perf_counter() - decode_start)
        if not still:
            break

        keep = torch.tensor(still) if len(still) < len(active) else None
        soft = step.soft_weights
        next_tokens = step.token_ids
        if keep is not None:
            next_tokens = next_tokens[keep.to(next_tokens.device)]
            soft = soft[keep.to(soft.device)] if soft is not None else None
        previous_width = len(active)
        active = [active[i] for i in still]
        if keep is not None:
            decoder = select_rows(decoder, keep)
        width = len(active)
        for batch, streams in groups:
            if keep is not None:
                batch.keep(torch.cat([keep + j * previous_width for j in range(len(streams))]))
            if soft is not None:
                embeds = _soft_embeddings(soft, batch.input_embeddings())
                logits = batch.advance(embeds=embeds.repeat(len(streams), 1))
            else:
                logits = batch.advance(token_ids=next_tokens.repeat(len(streams)))
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
            )
        )
    return results


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


def _log_softmax(logits: Tensor) -> Tensor:
    # Half-precision logits are widened so mixtures and statistics stay accurate.
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return torch.log_softmax(logits, dim=-1)


def _soft_embeddings(weights: Tensor, embedding: Tensor) -> Tensor:
    vocab = min(weights.shape[-1], embedding.shape[0])
    return weights[:, :vocab].to(embedding.dtype) @ embedding[:vocab]


# Characters a stop-string window holds beyond the longest stop string and the newest
# token's own text. They cover what decoding a slice of tokens changes at its edges,
# a few characters each: a character split over byte tokens shows as U+FFFD at either
# end, SentencePiece-style decoders drop the slice's leading space, and a new token can
# rewrite the character before it (a completed UTF-8 sequence, " ." cleaned to ".").
_TAIL_MARGIN = 8


def _end_of_row(ids, eos, stop_strings, tokenizer, max_new_tokens):
    """(reason, stop string, cut text) if the row is done, else None."""
    if ids[-1] in eos:
        return "eos", None, None
    if stop_strings and _stop_in_tail(ids, stop_strings, tokenizer):
        # The window's edges can show a stop string the full text lacks, and only the full
        # text gives the cut, so the full text settles a hit: one decode per row in practice.
        text = tokenizer.decode(ids, skip_special_tokens=True)
        hits = [(text.find(s) + len(s), s) for s in stop_strings if s in text]
        if hits:
            end, stop = min(hits)
            return "stop", stop, text[:end]
    if len(ids) >= max_new_tokens:
        return "length", None, None
    return None


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
