"""Best-of-N selection by self-certainty (Kang et al., 2025): pure functions of the samples.

A sample's self-certainty is the mean over its tokens of KL(U || p_t), U uniform over the
vocabulary and p_t the model's next-token distribution at step t: how far the model was,
on average, from knowing nothing. The most self-certain sample is kept; or, with Borda
voting, samples vote for their answers with weights that fall with their certainty rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Log-probabilities are clamped here before averaging: a token a model rules out exactly
# (log p = -inf) would otherwise make every distribution infinitely certain.
LOGPROB_FLOOR = math.log(1e-45)


def kl_uniform(mean_logprob: float, vocab_size: int) -> float:
    """KL(U || p) = -log V - (1/V) sum_v log p(v), from the mean of log p over the V entries."""
    return -math.log(vocab_size) - mean_logprob


def most_certain(certainty: Sequence[float]) -> int:
    """Index of the most self-certain sample (the first of equals)."""
    if not certainty:
        raise ValueError("no samples to choose from")
    return max(range(len(certainty)), key=lambda i: (certainty[i], -i))


def borda_weights(certainty: Sequence[float], power: float) -> list[float]:
    """Each sample's vote: (N - r + 1) ** power for its certainty rank r (1 = most certain, ties
    ranked by position). power 0 is a plain majority vote; larger powers favour certain samples."""
    order = sorted(range(len(certainty)), key=lambda i: (-certainty[i], i))
    n = len(certainty)
    weights = [0.0] * n
    for rank, i in enumerate(order, start=1):
        weights[i] = float(n - rank + 1) ** power
    return weights


def borda_choice(answers: Sequence[str | None], certainty: Sequence[float], power: float) -> int:
    """Index of the sample carrying the Borda vote's answer.

    Samples vote for their extracted answers with `borda_weights` (a sample without an answer
    does not vote); the answer with the largest total wins, a tie going to the answer whose
    most certain sample is the more certain. The chosen sample is that answer's most certain
    one; with no answer at all, the most certain sample.
    """
    if len(answers) != len(certainty):
        raise ValueError(f"need one certainty per answer, got {len(answers)} answers, {len(certainty)} values")
    weights = borda_weights(certainty, power)
    totals: dict[str, float] = {}
    for answer, weight in zip(answers, weights, strict=True):
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + weight
    if not totals:
        return most_certain(certainty)
    best = {a: max(certainty[i] for i, b in enumerate(answers) if b == a) for a in totals}
    winner = max(totals, key=lambda a: (totals[a], best[a]))
    return max((i for i, a in enumerate(answers) if a == winner), key=lambda i: (certainty[i], -i))
