"""The problems a GRPO run trains on and the ones it holds out, and the dataset rows TRL reads.

Training problems are each environment's first `n` problems under every training seed,
as a sweep draws them; evaluation problems likewise under the evaluation seeds (`eval.n`
of them, or the environment's own `n`). Two problems are the same when the model would
read the same question, whatever their seeds or ids, so the held-out check compares
prompts, not seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

from envs.base import Env, Problem
from harness.runs.sweep_config import ConfigError


@dataclass(frozen=True)
class TrainProblem:
    """One problem with the environment that grades it; `key` is unique within a run."""

    label: str  # the environment entry's label
    env: Env
    problem: Problem

    @property
    def key(self) -> str:
        return f"{self.label}|{self.problem.problem_id}"

    @property
    def user_prompt(self) -> str:
        return self.env.user_prompt(self.problem)


def training_problems(config) -> list[TrainProblem]:
    """Every training problem: environments in order, then seeds, then indices."""
    return _problems(config, config.train_seeds, None)


def evaluation_problems(config) -> list[TrainProblem]:
    """Every held-out problem (none when the config names no evaluation seeds)."""
    return _problems(config, config.eval_seeds, config.eval_n)


def check_disjoint(config) -> None:
    """Refuse evaluation problems that are also training problems, naming the first one found.

    Raises:
        ConfigError: naming the evaluation problem, the training problem it repeats and the fix.
    """
    if not config.eval_seeds:
        return
    seen = {p.user_prompt: p for p in training_problems(config)}
    for held in evaluation_problems(config):
        twin = seen.get(held.user_prompt)
        if twin is not None:
            question = " ".join(held.problem.question.split())
            question = question if len(question) <= 80 else question[:77] + "..."
            raise ConfigError(
                f"eval.seeds (={list(config.eval_seeds)}): evaluation problem {held.problem.problem_id} of "
                f"{held.label!r} is training problem {twin.problem.problem_id} of {twin.label!r} (the same question: "
                f"{question!r}); choose evaluation seeds apart from train.seeds (={list(config.train_seeds)}), or "
                f"lower n where a small task repeats its problems")


def dataset_rows(problems: list[TrainProblem], tokenizer) -> list[dict]:
    """TRL's dataset rows: the prompt as the engine renders it (chat template, generation prompt)
    and the key the reward functions look the problem up by."""
    from harness.engine.prompts import render_chat

    return [{"prompt": render_chat(tokenizer, [{"role": "user", "content": p.user_prompt}]), "problem_key": p.key}
            for p in problems]


def in_training_order(rows: list[dict], count: int, seed: int) -> list[dict]:
    """At least `count` rows: passes over `rows`, each in its own seeded random order.

    The order is laid out before training (and TRL's sampler told not to shuffle), so a run
    resumed from a checkpoint sees the same prompts in the same order as one never stopped:
    TRL's sampler draws each pass's order from one generator that a resumed run would restart.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    out: list[dict] = []
    while len(out) < count:
        out.extend(rows[i] for i in torch.randperm(len(rows), generator=generator).tolist())
    return out


def _problems(config, seeds, n: int | None) -> list[TrainProblem]:
    from envs import get_env

    out = []
    for i, entry in enumerate(config.envs):
        env = get_env(entry.name, extraction=config.extraction, **entry.config)
        count = n if n is not None else entry.n
        for seed in seeds:
            try:
                drawn = env.problems(count, seed)
            except ValueError as err:
                raise ConfigError(f"train.envs[{i}] with seed {seed} and n {count}: {err}") from None
            out.extend(TrainProblem(entry.label, env, p) for p in drawn)
    return out
