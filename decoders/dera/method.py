"""DeRa as a method: one context, two models (reference and aligned), mixed every step.

The engine runs both models each step, one batched forward per model over all rows, each
with its own KV cache; the rows of every lam value of a grid share those batches (each row
mixes with its own weight), so a lam grid costs one decoding, not one per value.
Variants are the lam values; per-step divergences between the two models and the mixture
are recorded as ReDuMix's are (`harness.methods.mixture_stats`: P1 = reference, P2 = aligned).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from decoders.dera.config import ROLES, DeRa
from decoders.lambda_mixtures import LAMBDA, MIXTURE
from decoders.registry import register_method
from decoders.sampling import row_generator
from envs.answer import with_open_thinking
from harness.engine import lockstep
from harness.engine.token_stream import answer_rows
from harness.methods.axes import Axes
from harness.methods.base import (
    Attempt,
    DecoderMethod,
    Generation,
    MethodCache,
    pending,
    start_prompts,
    step_tokens,
    variant_key,
)
from harness.methods.contributions import Contributions
from harness.methods.mixture_stats import MixtureStats


@register_method("dera", config=DeRa,
                 contributes=MIXTURE + Contributions(record_fields={"ref_model": str, "aligned_model": str}))
@dataclass(frozen=True)
class DeRaMethod(DecoderMethod):
    """`decoder`: a decoders.dera.DeRa config, its lam possibly a grid."""

    def roles(self) -> tuple[str, ...]:
        return ROLES

    def role_models(self) -> dict[str, str | None]:
        return self.decoder.models()

    def variants(self) -> list[dict]:
        return [{"lambda": lam} for lam in self.decoder.lambdas]

    @classmethod
    def axes(cls, config: type) -> Axes:
        return Axes(variants=(LAMBDA,))

    def solve(self, env, models, problems, gen: Generation, *, skip=frozenset(),
              cache: MethodCache | None = None, given=None) -> list[Attempt]:
        variants = self.variants()
        problems = pending(problems, skip, variants)
        if not problems:
            return []
        ref, aligned = models["ref"], models["aligned"]
        _, prompts, ids = start_prompts(ref, env, problems, given)
        lambdas = self.decoder.lambdas
        todo = [(i, lam) for lam in lambdas for i, p in enumerate(problems)
                if (p.problem_id, variant_key({"lambda": lam})) not in skip]
        group = self.decoder.lambdas_per_batch or len(lambdas)
        attempts = []
        for start in range(0, len(lambdas), group):
            chunk = set(lambdas[start : start + group])
            rows = [(i, lam) for i, lam in todo if lam in chunk]
            if rows:
                attempts += self._decode(env, ref, aligned, problems, prompts, ids, rows, gen)
        return attempts

    def _decode(self, env, ref, aligned, problems, prompts, ids, rows, gen: Generation) -> list[Attempt]:
        """One engine call over `rows`, (problem index, lam) pairs: both models' streams of every row."""
        context = [ids[i] for i, _ in rows]
        stats = MixtureStats(len(rows), keep_steps=gen.save_steps)
        began = time.perf_counter()
        with answer_rows([problems[i].problem_id for i, _ in rows]):
            outs = lockstep.decode(
                [ref, aligned], [context, context], self.decoder.mixture([lam for _, lam in rows]),
                stream_models=[0, 1], max_new_tokens=gen.max_new_tokens, stop_strings=list(gen.stop),
                rngs=[row_generator(gen.seed, problems[i].problem_id, ref.device) for i, _ in rows], on_step=stats,
            )
        share = (time.perf_counter() - began) / len(rows)
        attempts = []
        for j, ((i, lam), row) in enumerate(zip(rows, outs, strict=True)):
            extras = {"lambda": lam, "ref_model": ref.name, "aligned_model": aligned.name, **stats.means(j)}
            attempts.append(Attempt(
                problem=problems[i], variant={"lambda": lam}, method=self.name,
                method_config=self.config() | {"lam": lam}, prompt=prompts[i], row=row,
                verdict=env.verify(problems[i], with_open_thinking(prompts[i], row.text)),
                answer_s=share, cost_s=share, extras=extras,
                steps=step_tokens(row, ref.tokenizer) | stats.per_step(j) if gen.save_steps else None,
            ))
        return attempts
