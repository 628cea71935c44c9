"""Best-of-N by self-certainty (Kang et al., 2025) as a method: N samples per problem in one
batched engine call, exactly self-consistency's (the same seed draws the same samples, so
the two compare at equal compute), each scored by its self-certainty while it decodes; the
most self-certain sample is kept, or the samples vote with Borda weights by certainty rank.

Sample counts are variants that share samples: n=1,4,8 draws 8 per problem once and N
chooses among the first N. N=1 keeps the only sample: exactly `sample`'s answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from decoders.best_of_n.certainty import SelfCertainty
from decoders.best_of_n.config import BestOfN
from decoders.best_of_n.report import BEST_OF_N
from decoders.best_of_n.selection import borda_choice, most_certain
from decoders.registry import register_method
from decoders.self_consistency.method import Samples, SelfConsistencyMethod, sample_logprob
from harness.methods.base import Attempt, Generation, row_steps


@register_method("best_of_n", config=BestOfN, contributes=BEST_OF_N)
@dataclass(frozen=True)
class BestOfNMethod(SelfConsistencyMethod):
    """`decoder`: a `BestOfN` config. Draws as self-consistency does; chooses by certainty."""

    def sample_observer(self, num_rows: int) -> SelfCertainty:
        return SelfCertainty(num_rows)

    def choose(self, drawn: Samples, i: int, variant: dict, observer: SelfCertainty, gen: Generation,
               tokenizer) -> Attempt:
        n = variant.get("n", self.decoder.n)
        samples, verdicts = drawn.of(i, n)
        # A sample that decoded nothing has no certainty: it ranks below every other.
        certainty = [observer.mean(i * drawn.n + k) for k in range(n)]
        ranked = [-math.inf if math.isnan(c) else c for c in certainty]
        answers = [v.answer for v in verdicts]
        if self.decoder.selection == "borda":
            chosen = borda_choice(answers, ranked, self.decoder.borda_power)
        else:
            chosen = most_certain(ranked)
        extras = {
            "n_samples": n,
            "selection": self.decoder.selection,
            "chosen_index": chosen,
            "sample_answers": answers,
            "sample_correct": [v.correct for v in verdicts],
            "sample_self_certainty": [None if math.isnan(c) else round(c, 6) for c in certainty],
            # As self-consistency records them, so maj@k breaks ties alike over the same samples.
            "sample_logprobs": [round(sample_logprob(row), 4) for row in samples],
            "sample_completions": [row.text for row in samples],
            "sample_new_tokens": [row.new_tokens for row in samples],
            "pass_at_n": any(v.correct for v in verdicts),
        }
        share = drawn.per_sample_s * n
        return Attempt(
            problem=drawn.problems[i], variant=variant, method=self.name,
            method_config=self.config() | ({"n": n} if variant else {}), prompt=drawn.prompts[i],
            row=samples[chosen], verdict=verdicts[chosen], answer_s=share, cost_s=share, extras=extras,
            decoded_tokens=sum(row.new_tokens for row in samples),
            steps=row_steps(samples[chosen], tokenizer) if gen.save_steps else None)
