"""Soft thinking, then a discrete answer: the per-row phases shared by the soft decoders.

While a row is thinking it feeds a soft input (`weights @ E`, the weights from the
subclass's `mix`) and records a readable token; it may not stop. It leaves thinking when
it emits the end-of-thinking marker, when its thinking budget runs out, by Cold Stop
(entropy below a threshold for a run of steps), or when the token it would record is
EOS; in the budget and Cold Stop cases the marker is forced into the row in place of that
token, token by token. At EOS, a model with a thinking marker (`</think>`) is done
thinking, not done answering, so the marker is forced in too; a model without one (whose
marker is the answer's opening tag) ends the row there, as greedy decoding would. From
then on it decodes discretely with the `after_thinking_*` settings (greedy by default).

All phase bookkeeping is per-row state held by the engine, and every draw comes from the
row's own generator, so a row decodes the same whatever shares its batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from decoders.base import NOT_FORCED, RowState, Step
from decoders.sampling_settings import SamplingSettings, greedy_at_zero
from decoders.soft_weights import entropy, kept_from_tempered, weight_statistics

THINK_MARKER = "</think>"  # reasoning models' end of thinking
ANSWER_MARKER = "<answer>"  # for models without one: the answer's opening tag ends the thinking
COLD_STOP_ENTROPY = 0.01  # Soft Thinking's threshold, used where the model has a thinking marker
# Why a row left thinking, as codes in the per-step statistics and names in records.
END_REASONS = {1: "marker", 2: "budget", 3: "cold_stop", 4: "eos"}


@dataclass(frozen=True)
class ThinkingDecoder:
    """Fields shared by soft decoders (see the module docstring).

    Attributes:
        temperature, top_k, top_p, min_p: the thinking distribution (min_p relative to
            the top probability), before at most `max_topk` tokens are kept.
        think_end: the end-of-thinking marker; "auto": `</think>` where the tokenizer has
            it as one token, else `<answer>`.
        max_think_tokens: thinking budget in tokens (0: none but max_new_tokens).
        cold_stop_entropy, cold_stop_steps: Cold Stop after `cold_stop_steps` consecutive
            thinking steps with entropy below `cold_stop_entropy` nats (0 turns it off;
            None: 0.01 on a model with `</think>`, off otherwise).
        after_thinking_temperature, after_thinking_top_k, after_thinking_top_p,
            after_thinking_min_p: the answer phase (temperature 0: greedy).
    """

    temperature: float = 0.6
    top_k: int = 30
    top_p: float = 0.95
    min_p: float = 0.001
    max_topk: int = 10
    think_end: str = "auto"
    max_think_tokens: int = 0
    cold_stop_entropy: float | None = None
    cold_stop_steps: int = 256
    after_thinking_temperature: float = 0.0
    after_thinking_top_k: int = 0
    after_thinking_top_p: float = 1.0
    after_thinking_min_p: float = 0.0
    # Set by `bind`: the marker's token ids as the model may write it (first: as forced).
    _markers: tuple[tuple[int, ...], ...] = field(default=(), init=False, compare=False, repr=False)
    _cold_stop: float = field(default=0.0, init=False, compare=False, repr=False)
    _eos: tuple[int, ...] = field(default=(), init=False, compare=False, repr=False)
    # Set by `bind`: an EOS while thinking ends the row (a tokenizer without `</think>`).
    _eos_ends: bool = field(default=False, init=False, compare=False, repr=False)

    num_streams = 1

    def __post_init__(self) -> None:
        _ = self.sampling  # checked here, when the config is made
        if isinstance(self.max_topk, bool) or not isinstance(self.max_topk, int) or self.max_topk < 1:
            raise ValueError(f"max_topk (={self.max_topk!r}) must be a whole number >= 1 (tokens mixed); "
                             "e.g. max_topk=10, or 1 for one-hot inputs")
        if not isinstance(self.think_end, str) or not self.think_end:
            raise ValueError(f"think_end (={self.think_end!r}) must be a marker string, e.g. think_end=</think>, "
                             "or auto")
        if self.max_think_tokens < 0:
            raise ValueError(f"max_think_tokens (={self.max_think_tokens}) must be >= 0; 0 means no budget")
        if self.cold_stop_entropy is not None and self.cold_stop_entropy < 0:
            raise ValueError(f"cold_stop_entropy (={self.cold_stop_entropy}) must be >= 0; 0 turns Cold Stop off")
        if self.cold_stop_steps < 1:
            raise ValueError(f"cold_stop_steps (={self.cold_stop_steps}) must be >= 1; e.g. cold_stop_steps=256")
        _ = self.after_thinking_sampling  # likewise

    @property
    def sampling(self) -> SamplingSettings:
        """The thinking distribution's temperature / top_k / top_p / min_p as one `SamplingSettings`."""
        return SamplingSettings.of(self, temperature_fix="e.g. temperature=0.6")

    @property
    def after_thinking_sampling(self) -> SamplingSettings | None:
        """The answer phase's `after_thinking_*` settings; None: greedy (temperature 0)."""
        return greedy_at_zero(self, "after_thinking_", "0 answers greedily")

    # -- set-up --------------------------------------------------------------------------

    def check_settings(self, max_new_tokens: int) -> None:
        """Refuse a thinking budget the generation length can never reach."""
        if self.max_think_tokens > max_new_tokens:
            raise ValueError(f"max_think_tokens (={self.max_think_tokens}) is larger than max_new_tokens "
                             f"(={max_new_tokens}); lower it or raise max_new_tokens")

    def bind(self, tokenizer) -> ThinkingDecoder:
        """This decoder with its marker resolved and tokenised for `tokenizer`.

        Raises:
            ValueError: a marker the tokenizer cannot write back exactly.
        """
        marker = self.marker_for(tokenizer)
        bound = dataclasses.replace(self)
        object.__setattr__(bound, "_markers", marker_variants(tokenizer, marker))
        auto = COLD_STOP_ENTROPY if marker == THINK_MARKER else 0.0
        object.__setattr__(bound, "_cold_stop", auto if self.cold_stop_entropy is None else self.cold_stop_entropy)
        object.__setattr__(bound, "_eos", () if tokenizer.eos_token_id is None else (tokenizer.eos_token_id,))
        object.__setattr__(bound, "_eos_ends", not has_think_marker(tokenizer))
        return bound

    def with_think_budget(self, tokens: int) -> ThinkingDecoder:
        """This (bound) decoder under a run's thinking budget (`--think-budget`): its own
        `max_think_tokens` lowered to `tokens` where that is smaller or unset."""
        budget = tokens if not self.max_think_tokens else min(tokens, self.max_think_tokens)
        limited = dataclasses.replace(self, max_think_tokens=budget)
        for name in ("_markers", "_cold_stop", "_eos", "_eos_ends"):
            object.__setattr__(limited, name, getattr(self, name))
        return limited

    def marker_for(self, tokenizer) -> str:
        if self.think_end != "auto":
            return self.think_end
        return THINK_MARKER if has_think_marker(tokenizer) else ANSWER_MARKER

    def config(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("_")}

    def init_state(self, num_rows: int) -> RowState:
        if not self._markers:
            raise ValueError(f"decoder {self.name!r} is not bound to a tokenizer; call bind(tokenizer) first")
        width = max(len(m) for m in self._markers)
        return {
            "thinking": torch.ones(num_rows, dtype=torch.bool),
            "steps": torch.zeros(num_rows, dtype=torch.long),  # steps decoded so far
            "think_steps": torch.zeros(num_rows, dtype=torch.long),  # soft inputs fed so far
            "cold": torch.zeros(num_rows, dtype=torch.long),  # consecutive low-entropy thinking steps
            "forcing": torch.full((num_rows,), -1, dtype=torch.long),  # next marker position to force, -1 none
            "tail": torch.full((num_rows, width), -1, dtype=torch.long),  # the last tokens, for the marker
        }

    # -- one step ------------------------------------------------------------------------

    def mix(self, probs: Tensor, rngs: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
        """(B, k) kept probabilities (sorted, 0 past the kept set) -> ((B, k) soft weights,
        (B,) position of the token to record). Subclasses define it."""
        raise NotImplementedError

    def step(self, logprobs: Tensor, rngs: Sequence[torch.Generator], state: RowState) -> Step:
        lp = logprobs[0]
        device = lp.device
        state = {k: v.to(device) for k, v in state.items()}
        kept = self.sampling
        tempered = torch.log_softmax(lp / kept.temperature, dim=-1)
        probs, ids = kept_from_tempered(tempered, kept.top_k, kept.top_p, kept.min_p, self.max_topk)
        thinking, forcing, steps = state["thinking"], state["forcing"], state["steps"]
        # Each row draws only for its own phase: no mixing noise once it answers, no answer draw while
        # it thinks. That saves the work, and a row's draws still depend on nothing but the row.
        weights, position = probs.clone(), torch.zeros(len(lp), dtype=torch.long, device=device)
        rows = thinking.nonzero().squeeze(-1)
        if len(rows):
            weights[rows], position[rows] = self.mix(probs[rows], [rngs[i] for i in rows.tolist()])
        think_token = ids.gather(1, position[:, None])[:, 0]
        answer_token = lp.argmax(dim=-1)
        rows = (~thinking).nonzero().squeeze(-1)
        answering = self.after_thinking_sampling  # None: greedy
        if len(rows) and answering is not None:
            answer_token[rows] = answering.draw(lp[rows], [rngs[i] for i in rows.tolist()])
        full_entropy = entropy(tempered)

        cold = torch.where(thinking & (full_entropy < self._cold_stop), state["cold"] + 1, 0)
        free = thinking & (forcing < 0)
        budget = free & (self.max_think_tokens > 0) & (state["think_steps"] >= self.max_think_tokens)
        cold_stop = free & ~budget & (self._cold_stop > 0) & (cold >= self.cold_stop_steps)
        at_eos = free & ~budget & ~cold_stop & torch.isin(think_token, torch.tensor(self._eos, device=device))
        # Without a thinking marker the EOS ends the row; with one, the marker takes its place.
        ends_row = at_eos & self._eos_ends
        forced_at = torch.where(budget | cold_stop | (at_eos & ~ends_row), 0, forcing)
        marker = torch.tensor(self._markers[0], device=device)
        is_forced = forced_at >= 0
        forced_ids = torch.where(is_forced, marker[forced_at.clamp(0, len(marker) - 1)], NOT_FORCED)
        tokens = torch.where(is_forced, forced_ids, torch.where(thinking, think_token, answer_token))

        tail = torch.cat([state["tail"][:, 1:], tokens[:, None]], dim=1)
        emitted, emitted_len = self._marker_end(tail)
        emitted = free & ~is_forced & emitted
        forcing_done = is_forced & (forced_at + 1 >= len(marker))
        soft = thinking & ~is_forced & ~emitted & ~ends_row
        still_thinking = thinking & ~emitted & ~forcing_done & ~ends_row

        reason = torch.zeros_like(steps)
        reason = torch.where(emitted, 1, torch.where(budget, 2, torch.where(cold_stop, 3, reason)))
        reason = torch.where(at_eos, 4, reason)
        start = torch.where(emitted, steps - emitted_len + 1, steps)
        stats = {"entropy": full_entropy, "soft": soft.float(),
                 "think_end": reason.float(), "think_end_step": torch.where(reason > 0, start, -1).float()}
        for name, value in weight_statistics(weights).items():
            stats[name] = torch.where(soft, value, math.nan)
        new_state = {
            "thinking": still_thinking,
            "steps": steps + 1,
            "think_steps": state["think_steps"] + soft.long(),
            "cold": cold,
            "forcing": torch.where(is_forced & ~forcing_done, forced_at + 1, -1),
            "tail": tail,
        }
        return Step(token_ids=tokens, soft_weights=weights, soft_ids=ids, soft_mask=soft,
                    no_stop_mask=thinking & ~ends_row,
                    forced_ids=forced_ids if bool(is_forced.any()) else None, state=new_state, stats=stats)

    def _marker_end(self, tail: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) whether the row's last tokens spell a marker, (B,) that marker's length."""
        found = torch.zeros(tail.shape[0], dtype=torch.bool, device=tail.device)
        length = torch.zeros(tail.shape[0], dtype=torch.long, device=tail.device)
        for variant in self._markers:
            ids = torch.tensor(variant, device=tail.device)
            hit = (tail[:, -len(variant):] == ids).all(dim=1) & ~found
            found |= hit
            length = torch.where(hit, len(variant), length)
        return found, length

    # -- records -------------------------------------------------------------------------

    def summarize_steps(self, steps: dict[str, list[float]]) -> dict:
        """A row's per-step statistics -> its record fields (see `summarize_thinking`)."""
        return summarize_thinking(steps)


def summarize_thinking(steps: dict[str, list[float]]) -> dict:
    """Record fields of one row: means of the statistics (weight statistics over the soft
    steps only), steps spent thinking, and when and why thinking ended (None: it never did)."""
    ends = [(int(code), int(at)) for code, at in zip(steps["think_end"], steps["think_end_step"], strict=True)
            if code > 0]
    reason, at = (END_REASONS[ends[0][0]], ends[0][1]) if ends else (None, None)
    return {
        "think_steps": int(sum(steps["soft"])),
        "think_end": reason,
        "think_end_step": at,
        "entropy_mean": _mean(steps["entropy"]),
        "weights_entropy_mean": _mean(steps["weights_entropy"]),
        "effective_tokens_mean": _mean(steps["effective_tokens"]),
        "top1_weight_mean": _mean(steps["top1_weight"]),
    }


def has_think_marker(tokenizer) -> bool:
    """Whether the tokenizer writes `</think>` as one token, as reasoning models' tokenizers do."""
    return len(tokenizer.encode(THINK_MARKER, add_special_tokens=False)) == 1


def marker_variants(tokenizer, marker: str) -> tuple[tuple[int, ...], ...]:
    """The token ids `marker` is written with: as encoded alone (what is forced), and as the
    model writes it after a space or a newline (BPE merges the space into the first token).

    Raises:
        ValueError: the tokenizer cannot encode the marker and decode it back unchanged.
    """
    ids = tokenizer.encode(marker, add_special_tokens=False)
    if not ids or tokenizer.decode(ids) != marker:
        raise ValueError(f"think_end (={marker!r}) cannot be written by this tokenizer (it encodes to {ids}, "
                         f"which decodes to {tokenizer.decode(ids)!r}); choose a marker it can write, "
                         "e.g. think_end=<answer>")
    variants = [tuple(ids)]
    for prefix in (" ", "\n"):
        more = tokenizer.encode(prefix + marker, add_special_tokens=False)
        while more and not tokenizer.decode(more[:1]).strip():
            more = more[1:]
        if more and tokenizer.decode(more).strip() == marker and tuple(more) not in variants:
            variants.append(tuple(more))
    return tuple(variants)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return round(sum(finite) / len(finite), 6) if finite else None
