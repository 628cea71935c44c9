"""SinglePass: a per-step decoder (greedy, sample, soft, gumbel, ...) as a method.

One engine call per batch and variant over the chat-rendered prompts, one stream per
row, each row with its own seeded generator. A decoder may add to that, each hook
optional: `bind(tokenizer)` (resolve what depends on the tokenizer, e.g. a marker's
token ids), `variants()` and `for_variant(v)` (a list-valued parameter decoded value by
value), `Step.stats` with `summarize_steps(per-step lists)` (per-row statistics turned
into record fields). Answers of deterministic decoders go into the method cache, so a
later method needing the same decode (ReDuMix's greedy first attempt) takes them.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass

from decoders.sampling import row_generator
from envs.answer import with_open_thinking
from harness.engine import lockstep
from harness.engine.token_stream import answer_rows
from harness.methods.base import (
    Attempt,
    DecoderMethod,
    Generation,
    MethodCache,
    answer_key,
    is_deterministic,
    pending,
    row_steps,
    start_prompts,
    variant_key,
)


@dataclass(frozen=True)
class SinglePass(DecoderMethod):
    """Any per-step decoder with one stream, run once per problem (and variant)."""

    def variants(self) -> list[dict]:
        own = getattr(self.decoder, "variants", None)
        return own() if own is not None else [{}]

    def solve(self, env, models, problems, gen: Generation, *, skip=frozenset(),
              cache: MethodCache | None = None, given=None) -> list[Attempt]:
        loaded = models["policy"]
        variants = self.variants()
        problems = pending(problems, skip, variants)
        if not problems:
            return []
        users, prompts, ids = start_prompts(loaded, env, problems, given)
        attempts = []
        for variant in variants:
            todo = [i for i, p in enumerate(problems) if (p.problem_id, variant_key(variant)) not in skip]
            if todo:
                attempts += self._decode(env, loaded, variant, [problems[i] for i in todo],
                                         [None if users is None else users[i] for i in todo],
                                         [prompts[i] for i in todo], [ids[i] for i in todo], gen, cache)
        return attempts

    def _decode(self, env, loaded, variant, problems, users, prompts, ids, gen, cache) -> list[Attempt]:
        decoder = self.decoder.for_variant(variant) if variant else self.decoder
        bind = getattr(decoder, "bind", None)
        if bind is not None:
            decoder = bind(loaded.tokenizer)
        collected = _StepCollector(len(problems))
        began = time.perf_counter()
        with answer_rows([p.problem_id for p in problems]):
            rows = lockstep.decode(
                loaded, [ids], decoder,
                max_new_tokens=gen.max_new_tokens, stop_strings=list(gen.stop),
                rngs=[row_generator(gen.seed, p.problem_id, loaded.device) for p in problems],
                return_logprobs=gen.save_steps, on_step=collected,
            )
        share = (time.perf_counter() - began) / len(problems)
        if cache is not None and None not in users and is_deterministic(decoder):
            for user, row in zip(users, rows, strict=True):
                cache.answers[answer_key(loaded.name, user, gen.max_new_tokens, gen.stop, decoder)] = (row.text, share)
        summarize = getattr(decoder, "summarize_steps", None)
        config = self.config() | variant  # the value this variant decoded with (tau=0.5, not the list)
        attempts = []
        for i, (p, prompt, row) in enumerate(zip(problems, prompts, rows, strict=True)):
            steps = collected.rows[i]
            extras = summarize(steps) if summarize is not None and steps else {}
            saved = None
            if gen.save_steps:
                saved = row_steps(row, loaded.tokenizer) | {
                    k: [None if math.isnan(v) else round(v, 6) for v in vs] for k, vs in steps.items()}
            # Graded on what follows the thinking, a `<think>` the prompt opened included.
            verdict = env.verify(p, with_open_thinking(prompt, row.text))
            attempts.append(Attempt(problem=p, variant=dict(variant), method=self.name, method_config=config,
                                    prompt=prompt, row=row, verdict=verdict, answer_s=share,
                                    cost_s=share, extras=extras, steps=saved))
        return attempts


class _StepCollector:
    """An engine observer keeping each row's `Step.stats`, step by step, as lists."""

    def __init__(self, num_rows: int) -> None:
        self.rows: list[dict[str, list[float]]] = [defaultdict(list) for _ in range(num_rows)]

    def __call__(self, view: lockstep.StepView) -> None:
        if view.step.stats is None:
            return
        columns = {name: value.tolist() for name, value in view.step.stats.items()}
        for i, row in enumerate(view.rows):
            for name, values in columns.items():
                self.rows[row][name].append(values[i])
