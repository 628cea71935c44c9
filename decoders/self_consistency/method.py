"""Self-consistency as a method: N sampled answers per problem in one batched engine call,
then a majority vote over the extracted answers.

Sample k of a problem draws from its own seeded stream; sample 0 uses the stream the
`sample` decoder uses for that problem, so N = 1 gives exactly `sample`'s answer. The
vote counts answers as extracted by the environment (samples without an answer do not
vote); a tie goes to the answer whose samples have the higher summed log-probability
(each sample's log-probability: the sum over its tokens under the model, before
temperature and truncation). The record shows the sample whose answer won (the most
likely of them) and keeps every sample's answer, log-probability and the vote counts.

With several sample counts (n=1,4,8, its variants), each problem is sampled max(n)
times once and N votes over the first N samples: the same samples an n=N run draws,
since sample k's stream does not depend on N. Each variant's cost is its N samples'
share of that decoding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from decoders.registry import register_method
from decoders.sampling import row_generator
from decoders.self_consistency.config import SelfConsistency
from decoders.self_consistency.report import SELF_CONSISTENCY
from envs.answer import with_open_thinking
from harness.engine import lockstep
from harness.methods.axes import Axes, Axis
from harness.methods.base import (
    Attempt,
    DecoderMethod,
    Generation,
    MethodCache,
    pending,
    row_steps,
    start_prompts,
    variant_key,
)


def majority_vote(answers: Sequence[str | None], logprobs: Sequence[float]) -> int:
    """Index of the sample that carries the vote's answer.

    The answer given by most samples wins (None never votes); a tie goes to the answer whose
    samples' log-probabilities sum higher; within the answer, the most likely sample. With no
    answer at all, the most likely sample.
    """
    if len(answers) != len(logprobs) or not answers:
        raise ValueError(f"need one log-probability per answer, got {len(answers)} answers, {len(logprobs)} values")
    counts = vote_counts(answers)
    if not counts:
        return max(range(len(answers)), key=lambda i: logprobs[i])
    mass = {a: sum(lp for b, lp in zip(answers, logprobs, strict=True) if b == a) for a in counts}
    winner = max(counts, key=lambda a: (counts[a], mass[a]))
    return max((i for i, a in enumerate(answers) if a == winner), key=lambda i: logprobs[i])


def vote_counts(answers: Sequence[str | None]) -> dict[str, int]:
    """How many samples gave each answer (samples without an answer do not vote)."""
    counts: dict[str, int] = {}
    for answer in answers:
        if answer is not None:
            counts[answer] = counts.get(answer, 0) + 1
    return counts


def sample_key(problem_id: str, k: int) -> str:
    """The random stream of sample k of a problem (sample 0: the `sample` decoder's)."""
    return problem_id if k == 0 else f"{problem_id}#sc{k}"


@dataclass
class Samples:
    """N sampled answers of each of some problems, drawn in one engine call (see `draw_samples`).

    Attributes:
        problems: the problems, in order.
        prompts: the prompt text each problem's samples started from.
        rows: the engine's rows, problem-major: rows i*n .. i*n+n-1 are problem i's samples.
        verdicts: the env's grade of each row.
        n: samples per problem.
        per_sample_s: seconds of the decoding per sample, batching amortised.
    """

    problems: list
    prompts: list[str]
    rows: list
    verdicts: list
    n: int
    per_sample_s: float

    def of(self, i: int, count: int) -> tuple[list, list]:
        """(rows, verdicts) of problem i's first `count` samples."""
        return self.rows[i * self.n : i * self.n + count], self.verdicts[i * self.n : i * self.n + count]


def draw_samples(sampler, env, loaded, problems, n: int, gen: Generation, given=None, on_step=None) -> Samples:
    """`n` samples of each problem with the per-step rule `sampler`, all in one engine call; sample
    k of a problem draws from its own stream (`sample_key`), so sample k is the same whatever n is.
    `on_step`: an engine observer (per-step statistics of the rows)."""
    _, prompts, ids = start_prompts(loaded, env, problems, given)
    began = time.perf_counter()
    rows = lockstep.decode(
        loaded, [[ids[i] for i in range(len(problems)) for _ in range(n)]], sampler,
        max_new_tokens=gen.max_new_tokens, stop_strings=list(gen.stop), return_logprobs=True,
        rngs=[row_generator(gen.seed, sample_key(p.problem_id, k), loaded.device) for p in problems
              for k in range(n)],
        on_step=on_step,
    )
    per_sample = (time.perf_counter() - began) / (len(problems) * n)
    # Graded as a single pass grades: a thinking the template opened counts as thinking.
    verdicts = [env.verify(problems[r // n], with_open_thinking(prompts[r // n], row.text))
                for r, row in enumerate(rows)]
    return Samples(list(problems), prompts, rows, verdicts, n, per_sample)


def sample_logprob(row) -> float:
    """A sample's log-probability: the sum over its tokens under the model (before temperature and truncation)."""
    return sum(step[0] for step in row.token_logprobs)


# Sample counts are variants that share their samples: N=4 votes over the first 4 of N=8's.
SAMPLE_COUNT = Axis("n", "n", kind=int, example="[1, 4, 8]")


@register_method("self_consistency", config=SelfConsistency, contributes=SELF_CONSISTENCY)
@dataclass(frozen=True)
class SelfConsistencyMethod(DecoderMethod):
    """`decoder`: a `SelfConsistency` config."""

    @classmethod
    def axes(cls, config: type) -> Axes:
        return Axes(variants=(SAMPLE_COUNT,))

    def variants(self) -> list[dict]:
        counts = self.decoder.n
        return [{"n": n} for n in counts] if isinstance(counts, tuple) else [{}]

    def solve(self, env, models, problems, gen: Generation, *, skip=frozenset(),
              cache: MethodCache | None = None, given=None) -> list[Attempt]:
        loaded = models["policy"]
        variants = self.variants()
        problems = pending(problems, skip, variants)
        if not problems:
            return []
        todo = [(i, v) for i, p in enumerate(problems) for v in variants if (p.problem_id, variant_key(v)) not in skip]
        n = max(v.get("n", self.decoder.n) for _, v in todo)
        observer = self.sample_observer(len(problems) * n)
        drawn = draw_samples(self.decoder.sampler(), env, loaded, problems, n, gen, given, on_step=observer)
        return [self.choose(drawn, i, variant, observer, gen, loaded.tokenizer) for i, variant in todo]

    def sample_observer(self, num_rows: int):
        """An engine observer the choice needs per-step statistics from (None: the vote needs none)."""
        return None

    def choose(self, drawn: Samples, i: int, variant: dict, observer, gen: Generation, tokenizer) -> Attempt:
        """Problem i's answer under `variant` from its first N samples: the majority vote's."""
        n = variant.get("n", self.decoder.n)
        samples, verdicts = drawn.of(i, n)
        share = drawn.per_sample_s * n
        logprobs = [sample_logprob(row) for row in samples]
        answers = [v.answer for v in verdicts]
        best = majority_vote(answers, logprobs)
        votes = vote_counts(answers)
        extras = {
            "n_samples": n,
            "sample_answers": answers,
            "sample_correct": [v.correct for v in verdicts],
            "sample_logprobs": [round(lp, 4) for lp in logprobs],
            "sample_completions": [row.text for row in samples],
            "sample_new_tokens": [row.new_tokens for row in samples],
            "votes": votes,
            "agreement": votes.get(answers[best], 0) / n if answers[best] is not None else 0.0,
        }
        config = self.config() | ({"n": n} if variant else {})
        return Attempt(
            problem=drawn.problems[i], variant=variant, method=self.name, method_config=config,
            prompt=drawn.prompts[i],
            row=samples[best], verdict=verdicts[best], answer_s=share, cost_s=share, extras=extras,
            decoded_tokens=sum(row.new_tokens for row in samples),
            steps=row_steps(samples[best], tokenizer) if gen.save_steps else None)
