"""Reward functions of a GRPO run, in the form TRL's GRPOTrainer calls them.

TRL calls each with the prompts, the completions (text) and every dataset column as
lists, one entry per completion, and combines their outputs with `reward_weights`. Ours
read the `problem_key` column to find the problem and grade the completion with the
environment's own verifier (`Env.verify`), as a sweep would grade it:

- `score`: the verifier's score in [0, 1] (partial credit included);
- `format`: 1 when the answer is inside <answer></answer> tags (`Verdict.format_ok`), else 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envs.base import Verdict
from harness.train.problems import TrainProblem

REWARDS = {
    "score": "the environment's verifier score in [0, 1]",
    "format": "1 when the answer is inside <answer></answer> tags, else 0",
}


class VerifierReward:
    """One reward read off the verifier's verdict; `__name__` is what TRL logs it as (rewards/<name>/mean)."""

    def __init__(self, name: str, problems: Mapping[str, TrainProblem]) -> None:
        if name not in REWARDS:
            raise ValueError(f"reward {name!r} is not one of {', '.join(REWARDS)}")
        self.__name__ = name
        self.problems = problems

    def __call__(self, prompts: Sequence, completions: Sequence, problem_key: Sequence[str], **_columns) -> list[float]:
        rewards = []
        for completion, key in zip(completions, problem_key, strict=True):
            verdict = grade(self.problems[key], _text(completion))
            rewards.append(float(verdict.score) if self.__name__ == "score" else float(verdict.format_ok))
        return rewards


def reward_functions(weights: Mapping[str, float], problems: Sequence[TrainProblem]) -> tuple[list, list[float]]:
    """The reward functions with a weight above 0, and their weights, in `REWARDS` order."""
    by_key = {p.key: p for p in problems}
    names = [name for name in REWARDS if weights.get(name, 0.0) > 0]
    return [VerifierReward(name, by_key) for name in names], [float(weights[name]) for name in names]


def grade(problem: TrainProblem, completion: str) -> Verdict:
    return problem.env.verify(problem.problem, completion)


def _text(completion) -> str:
    # Conversational completions are [{"role": "assistant", "content": ...}]; ours are plain text.
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return completion
