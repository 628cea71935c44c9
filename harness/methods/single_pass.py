"""SinglePass: a per-step decoder (greedy, sample, ...) as a method.

One engine call per batch over the chat-rendered prompts, one stream per row, each
row with its own seeded generator. Answers of deterministic decoders go into the
method cache, so a later method needing the same decode (ReDuMix's greedy first
attempt) takes them instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from decoders.sampling import row_generator
from harness.engine import lockstep
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
)


@dataclass(frozen=True)
class SinglePass(DecoderMethod):
    """Any per-step decoder with one stream, run once per problem."""

    def solve(self, env, models, problems, gen: Generation, *, skip=frozenset(),
              cache: MethodCache | None = None, given=None) -> list[Attempt]:
        loaded = models["policy"]
        problems = pending(problems, skip)
        if not problems:
            return []
        users, prompts, ids = start_prompts(loaded, env, problems, given)
        began = time.perf_counter()
        rows = lockstep.decode(
            loaded, [ids], self.decoder,
            max_new_tokens=gen.max_new_tokens, stop_strings=list(gen.stop),
            rngs=[row_generator(gen.seed, p.problem_id, loaded.device) for p in problems],
            return_logprobs=gen.save_steps,
        )
        share = (time.perf_counter() - began) / len(problems)
        if cache is not None and users is not None and is_deterministic(self.decoder):
            for user, row in zip(users, rows, strict=True):
                cache.answers[answer_key(loaded.name, user, gen.max_new_tokens, gen.stop, self.decoder)] = (
                    row.text, share)
        return [
            Attempt(problem=p, variant={}, method=self.name, method_config=self.config(), prompt=prompt, row=row,
                    verdict=env.verify(p, row.text), answer_s=share, cost_s=share,
                    steps=row_steps(row) if gen.save_steps else None)
            for p, prompt, row in zip(problems, prompts, rows, strict=True)
        ]

