"""Gold answers of an environment's problems as training pairs (soft SFT's `--env` source).

Each problem of the given seeds becomes a pair of its user prompt (rendered with the
model's chat template once the model is loaded) and its gold answer written as the
environments ask for it, `<answer>GOLD</answer>`. Problems without a gold answer are
left out. Problems are fixed by (env, config, seed, index), so the same flags give the
same pairs, and problems of other seeds stay held out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envs.answer import CLOSE_TAG, OPEN_TAG
from harness.distill.examples import PairSet, pairs_digest


@dataclass(frozen=True)
class EnvSource:
    """Attributes:
        env: the environment's name (see `redumix list envs`).
        config: its task config overrides, as `--env-config` gives them.
        seeds: the problem seeds to train on.
        n: problems per seed.
    """

    env: str
    config: dict[str, str] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    n: int = 64

    def describe(self) -> dict:
        return {"env": self.env, "env_config": dict(self.config), "seeds": list(self.seeds), "n": self.n}


def check_env_source(source: EnvSource) -> None:
    """The counts and seeds on their own, before the environment is built.

    Raises:
        ValueError: naming the flag, its value and the fix.
    """
    if source.n < 1:
        raise ValueError(f"--n (={source.n}) must be 1 or more (problems per --env-seed)")
    if not source.seeds:
        raise ValueError("--env-seed: give at least one problem seed, e.g. --env-seed 0")
    repeated = sorted({s for s in source.seeds if source.seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"--env-seed (={repeated[0]}) is given more than once; give each seed once")


def load_env_answers(source: EnvSource) -> PairSet:
    """The pairs (user prompt, gold answer) of `source`'s problems.

    Raises:
        ValueError: a bad count or seed, an environment or config the registry refuses, or
            problems none of which has a gold answer.
    """
    from envs.registry import get_env

    check_env_source(source)
    try:
        env = get_env(source.env, **source.config)
    except ValueError as err:
        raise ValueError(f"--env (={source.env!r}): {err}") from None
    pairs, without_gold = [], 0
    for seed in source.seeds:
        for problem in env.problems(source.n, seed):
            if problem.gold == "":
                without_gold += 1
                continue
            pairs.append({"user_prompt": env.user_prompt(problem), "chosen": f"{OPEN_TAG}{problem.gold}{CLOSE_TAG}",
                          "problem_id": problem.problem_id})
    if not pairs:
        raise ValueError(f"--env (={source.env!r}): none of its {without_gold} problems has a gold answer to train "
                         "on; choose an environment with reference answers")
    return PairSet(pairs=pairs, source=None, kind="env", records=None, rule=None, digest=pairs_digest(pairs),
                   env={**source.describe(), "config_resolved": env.config(), "without_gold": without_gold})
