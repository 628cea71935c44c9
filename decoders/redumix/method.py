"""ReDuMix as a method: stages 1-3 (first attempt, feedback, reflection) once per problem,
then stage 4 (the dual-context mixture) for every lambda of the grid in shared batches.

The config (with the stage-4 mixing rule) is `decoders.redumix.ReDuMix`, a registered decoder
so that `--decoder redumix` and sweep configs parse and check it like any other; everything
that runs the model lives in this package: the stages (`stages`), the summarising of long
first attempts (`compress`) and this method. Variants are the lambda values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from decoders.lambda_mixtures import LAMBDA
from decoders.mixture import mix_logprobs
from decoders.redumix import stages as redumix_pipeline
from decoders.redumix.config import ReDuMix
from decoders.redumix.report import REDUMIX
from decoders.registry import register_method
from envs import check_feedback_policy
from harness.engine.loglikelihood import continuation_logprobs
from harness.engine.prompts import encode
from harness.methods.axes import Axes, Axis
from harness.methods.base import Attempt, DecoderMethod, Generation, MethodCache, TeacherRows
from harness.methods.request_env import HUMAN, human_feedback


def stage_cache(cache: MethodCache) -> redumix_pipeline.Stage13Cache:
    """The stage 1-3 cache inside a method cache; its greedy first attempts are the cache's
    deterministic answers (a greedy single pass of the same prompt decodes exactly those)."""
    if cache.stages is None:
        cache.stages = redumix_pipeline.Stage13Cache(greedy_attempts=cache.answers)
    return cache.stages


# Each feedback policy writes other stages 2-3, so each is a unit of its own.
FEEDBACK = Axis("feedback", "feedback_policy", sweep_key="feedback", kind=str, column=True,
                example="[binary, ground_truth]")


@register_method("redumix", config=ReDuMix, contributes=REDUMIX)
@dataclass(frozen=True)
class ReDuMixMethod(DecoderMethod):
    """`decoder`: a decoders.redumix.ReDuMix config, its lam possibly a grid."""

    @classmethod
    def axes(cls, config: type) -> Axes:
        # Lambdas share stages 1-3 within a unit (variants); each feedback policy is a unit.
        return Axes(variants=(LAMBDA,), units=(FEEDBACK,))

    def variants(self) -> list[dict]:
        return [{"lambda": lam} for lam in self.decoder.lambdas]

    def without_env(self) -> ReDuMixMethod:
        return ReDuMixMethod(dataclasses.replace(self.decoder, feedback="none"))

    def check_env(self, env) -> None:
        check_feedback_policy(env, self.decoder.feedback)

    def solve(self, env, models, problems, gen: Generation, *, skip=frozenset(),
              cache: MethodCache | None = None, given=None) -> list[Attempt]:
        # `given` prompts are not used: x and x2 are built from the env's user turn, and from the
        # first attempt and feedback a conversation holds (stages 1-2 then do not run).
        humans = {p.problem_id: h for p in problems if (h := human_feedback(env, p)) is not None}
        results = redumix_pipeline.solve_batch(
            env, models["policy"], self.decoder, problems, max_new_tokens=gen.max_new_tokens, stop=list(gen.stop),
            seed=gen.seed, skip=skip, cache=stage_cache(cache if cache is not None else MethodCache()),
            save_steps=gen.save_steps, given=humans,
        )
        return [self._attempt(res) for res in results]

    def teacher_logprobs(self, env, models, requests, *, first_attempt_tokens: int, max_length: int,
                         batch_size: int, seed: int, cache: MethodCache | None = None) -> list[TeacherRows]:
        """The distribution each (problem, continuation) is scored under: per continuation token,
        log P_mix = lam * log P(.|x, ...) + (1 - lam) * log P(.|x2, ...), x2 built by stages 1-3
        from the problem's user turn (a first attempt of at most `first_attempt_tokens`).

        x2 is never cut: stages 1-3 summarise the first attempt where x2 and `first_attempt_tokens`
        would not fit `max_length`.

        Raises:
            ValueError: a continuation that still does not fit beside x2, naming the sizes.
        """
        loaded = models["policy"]
        budget = min(self.decoder.context_budget or max_length, max_length)
        decoder = dataclasses.replace(self.decoder, context_budget=budget)
        cache = cache if cache is not None else MethodCache()
        problems = list({p.problem_id: p for p, _ in requests}.values())
        stages = {}
        for start in range(0, len(problems), batch_size):
            chunk = problems[start : start + batch_size]
            done = redumix_pipeline.first_stages(env, loaded, decoder, chunk, max_new_tokens=first_attempt_tokens,
                                                 stop=[], cache=stage_cache(cache), seed=seed)
            stages.update((p.problem_id, stage) for p, stage in zip(chunk, done, strict=True))
        tok = loaded.tokenizer
        originals, reflectives = [], []
        for problem, continuation in requests:
            stage = stages[problem.problem_id]
            x_ids = encode(tok, stage.x)
            # One tokenization of the continuation, read after both contexts.
            target = encode(tok, stage.x + continuation)[len(x_ids) :]
            x2_ids = encode(tok, stage.x2)
            if len(x2_ids) + len(target) > max_length:
                raise ValueError(
                    f"ReDuMix log-likelihood: the reflective context x2 ({len(x2_ids)} tokens) and the continuation "
                    f"({len(target)} tokens) exceed max_length={max_length}, and x2 is never cut; raise max_length, "
                    f"or raise the first attempt's length (={first_attempt_tokens}, the room stages 1-3 keep for "
                    "the continuation) to at least the continuation's length"
                )
            originals.append((x_ids, target))
            reflectives.append((x2_ids, target))
        lam = decoder.lambdas[0]
        kwargs = {"batch_size": batch_size, "max_length": max_length}
        return [
            TeacherRows(target=target, logprobs=mix_logprobs(torch.stack([rows_x, rows_x2]), (lam, 1.0 - lam)),
                        extras={"lambda": lam, "stage1_completion": stages[p.problem_id].stage1_completion,
                                "reflection": stages[p.problem_id].reflection})
            for (p, _), (_, target), rows_x, rows_x2 in zip(
                requests, originals, continuation_logprobs(loaded, originals, **kwargs),
                continuation_logprobs(loaded, reflectives, **kwargs), strict=True)
        ]

    def _attempt(self, res: redumix_pipeline.MixedAnswer) -> Attempt:
        stage, row = res.stage, res.row
        stage_s = stage.stage1_s + stage.feedback_s + stage.reflection_s + stage.compress_s
        one = self.decoder.for_lambda(res.lam)
        extras = {
            "lambda": res.lam,
            "feedback_policy": HUMAN if stage.human else self.decoder.feedback,
            "stage1_completion": stage.stage1_completion,
            "stage1_answer": stage.stage1_answer,
            "stage1_correct": stage.stage1_correct,
            "feedback": stage.feedback,
            "reflection": stage.reflection,
            "contexts": [stage.x, stage.x2],
            "context_tokens": row.prompt_tokens,
            "compressed": stage.compressed,
            "tokens_cut": stage.tokens_cut,
            "stage1_summary": stage.summary,
            # Only where stage1_thinking=summary summarised a first attempt's thinking.
            **({"stage1_thinking_summary": stage.thinking_summary} if stage.thinking_summary is not None else {}),
            **res.stats,
            "stage1_s": round(stage.stage1_s, 4),
            "stage1_reused": stage.stage1_reused,
            "feedback_s": round(stage.feedback_s, 4),
            "reflection_s": round(stage.reflection_s, 4),
            "compress_s": round(stage.compress_s, 4),
            "mix_s": round(res.mix_s, 4),
        }
        return Attempt(problem=res.problem, variant={"lambda": res.lam}, method=one.name,
                       method_config=one.config(), prompt=stage.x, row=row, verdict=res.verdict,
                       answer_s=res.mix_s, cost_s=stage_s + res.mix_s, extras=extras, steps=res.steps,
                       # A first attempt taken from a greedy unit was decoding time there.
                       reused_s=stage.stage1_s if stage.stage1_reused else 0.0)
