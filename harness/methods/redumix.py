"""ReDuMix as a method: stages 1-3 (first attempt, feedback, reflection) once per problem,
then stage 4 (the dual-context mixture) for every lambda of the grid in shared batches.

The config and the stage-4 mixing rule are `decoders.redumix.ReDuMix`; the stages that
run the model are `harness.redumix_pipeline`. Variants are the lambda values.
"""

from __future__ import annotations

from dataclasses import dataclass

from envs import check_feedback_policy
from harness import redumix_pipeline
from harness.methods.base import Attempt, DecoderMethod, Generation, MethodCache


def stage_cache(cache: MethodCache) -> redumix_pipeline.Stage13Cache:
    """The stage 1-3 cache inside a method cache; its greedy first attempts are the cache's
    deterministic answers (a greedy single pass of the same prompt decodes exactly those)."""
    if cache.stages is None:
        cache.stages = redumix_pipeline.Stage13Cache(greedy_attempts=cache.answers)
    return cache.stages


@dataclass(frozen=True)
class ReDuMixMethod(DecoderMethod):
    """`decoder`: a decoders.redumix.ReDuMix config, its lam possibly a grid."""

    def variants(self) -> list[dict]:
        return [{"lambda": lam} for lam in self.decoder.lambdas]

    def grids(self) -> dict[str, str]:
        # Sweep configs list lambdas (shared as variants within a unit) and feedback policies (one unit each).
        return {"lambdas": "lam", "feedback": "feedback"}

    def check_env(self, env) -> None:
        check_feedback_policy(env, self.decoder.feedback)

    def solve(self, env, models, problems, gen: Generation, *, skip=frozenset(),
              cache: MethodCache | None = None, given=None) -> list[Attempt]:
        # `given` prompts are not used: x and x2 are built from the env's user turn.
        results = redumix_pipeline.solve_batch(
            env, models["policy"], self.decoder, problems, max_new_tokens=gen.max_new_tokens, stop=list(gen.stop),
            seed=gen.seed, skip=skip, cache=stage_cache(cache if cache is not None else MethodCache()),
            save_steps=gen.save_steps,
        )
        return [self._attempt(res) for res in results]

    def _attempt(self, res: dict) -> Attempt:
        stage, row = res["stage"], res["row"]
        stage_s = stage.stage1_s + stage.feedback_s + stage.reflection_s + stage.compress_s
        one = self.decoder.for_lambda(res["lambda"])
        extras = {
            "lambda": res["lambda"],
            "feedback_policy": self.decoder.feedback,
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
            **res["stats"],
            "stage1_s": round(stage.stage1_s, 4),
            "stage1_reused": stage.stage1_reused,
            "feedback_s": round(stage.feedback_s, 4),
            "reflection_s": round(stage.reflection_s, 4),
            "compress_s": round(stage.compress_s, 4),
            "mix_s": round(res["mix_s"], 4),
        }
        return Attempt(problem=res["problem"], variant={"lambda": res["lambda"]}, method=one.name,
                       method_config=one.config(), prompt=stage.x, row=row, verdict=res["verdict"],
                       answer_s=res["mix_s"], cost_s=stage_s + res["mix_s"], extras=extras, steps=res.get("steps"))
