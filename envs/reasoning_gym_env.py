"""Adapter: one reasoning-gym task as an `Env`.

Determinism: problem `index` under `seed` is item `index` of the task's dataset built with
`dataset_seed(seed)`. reasoning-gym seeds item i of a dataset with seed s from s + i, so
datasets of neighbouring seeds would share all but one item (seed 1's items are seed 0's
from the second on); spreading the seeds keeps each seed's problems its own, which paired
statistics that pool seeds as separate problems rely on. Seed 0 is reasoning-gym's own
seed 0. For almost every task an item does not depend on the dataset size and the dataset
is grown as far as asked. Two
tasks draw their whole pool at construction from the size ("acre", "list_functions"): for
those the pool size is the `size` config key (default 500) and asking past it is an error.

Across processes the same holds except for `HASH_SEED_DEPENDENT_TASKS`, whose generators
iterate over sets of strings: they repeat only under a fixed PYTHONHASHSEED.

Gold answers: a few tasks accept many answers and set no single `answer`. Where the
metadata carries one valid example it becomes `gold` (graph_color, propositional_logic,
rubiks_cube); otherwise `gold` is "" (boxnet, rush_hour) and only the verifier can grade.

Scoring always uses the task's own `score_answer` on the original (unconverted) item, which
is kept per (seed, index) and regenerated when a Problem comes from elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import math
import random
import sys
from collections.abc import Iterator
from typing import Any

from .answer import ANSWER_INSTRUCTION, check_extraction_mode, extract_answer, extract_answer_flexible
from .base import Problem, Verdict, problem_id
from .feedback import render_feedback
from .hints import verifier_hints
from .jsonable import to_jsonable
from .registry import register_env_family
from .task_config import build_config, config_to_dict

# `composite` mixes other tasks through DatasetSpec objects; its sources can be used
# directly, so it is left out rather than half-supported.
EXCLUDED_TASKS = {
    "composite": "it mixes tasks through DatasetSpec objects; use the source tasks directly"
}

# Tasks whose items depend on the dataset size (checked in tests/test_envs.py).
SIZE_DEPENDENT_TASKS = frozenset({"acre", "list_functions"})

# Tasks whose items change with PYTHONHASHSEED (they iterate over sets of strings), so they
# repeat across processes only when PYTHONHASHSEED is fixed (checked in tests/test_envs.py).
HASH_SEED_DEPENDENT_TASKS = frozenset(
    {"isomorphic_strings", "knight_swap", "polynomial_multiplication", "ransom_note", "word_ladder"}
)

# Tasks with no single `answer`: the metadata key holding one valid answer, if any.
EXAMPLE_ANSWER_KEYS = {
    "graph_color": "possible_answer",
    "propositional_logic": "example_answer",
    "rubiks_cube": "example_correct_answer",
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow stdout: the bf generator prints progress dots while compiling programs."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# Seeds this far apart give disjoint item streams for any n below it.
STREAM_STRIDE = 1_000_003


def dataset_seed(seed: int) -> int:
    """The reasoning-gym dataset seed of our `seed` (see the module docstring); below 2**31,
    as tasks that seed numpy's global RNG from it need."""
    return (seed * STREAM_STRIDE) % 2**31


@contextlib.contextmanager
def _pinned_global_random(seed: int, index: int) -> Iterator[None]:
    """Seed the global RNGs from (seed, index) while an item is generated, then restore them.

    list_functions draws from the unseeded global `random` module and pool_matrix reseeds
    numpy's global RNG; pinning makes the first deterministic and hides both from callers.
    """
    py_state = random.getstate()
    np_module = sys.modules.get("numpy")
    np_state = np_module.random.get_state() if np_module is not None else None
    random.seed(f"{seed}-{index}")  # str seeds hash the same in every process
    try:
        yield
    finally:
        random.setstate(py_state)
        if np_module is not None:
            np_module.random.set_state(np_state)


class ReasoningGymEnv:
    """A reasoning-gym task with a validated config.

    Build it with `envs.get_env(name, **overrides)`, which checks the name first.
    """

    has_verifier = True

    def __init__(
        self,
        name: str,
        dataset_cls: type,
        config_cls: type,
        overrides: dict[str, Any] | None = None,
        instruction: str = ANSWER_INSTRUCTION,
        extraction: str = "strict",
    ) -> None:
        """Validate the config now so that mistakes surface before any decoding.

        Args:
            name: The registered task name.
            dataset_cls: The task's ProceduralDataset subclass.
            config_cls: The task's Config dataclass.
            overrides: Config field -> value; strings are coerced to the field type.
            instruction: Appended to every question to ask for <answer> tags.
            extraction: "strict" (only <answer> tags count) or "flexible" (see `envs.answer`).

        Raises:
            ValueError: Unknown config key, bad value, or a config the task rejects.
        """
        self.name = name
        self.instruction = instruction
        check_extraction_mode(extraction)
        self.extraction = extraction
        self._dataset_cls = dataset_cls
        self._config = build_config(name, config_cls, dict(overrides or {}))
        _check_known_hangs(name, self._config)
        _check_known_wrong_answers(name, self._config)
        self._datasets: dict[int, Any] = {}  # seed -> dataset, the largest built so far
        self._entries: dict[tuple[int, int], dict[str, Any]] = {}  # (seed, index) -> item

    def __repr__(self) -> str:
        return f"ReasoningGymEnv({self.name!r})"

    def config(self) -> dict:
        """The resolved task config (defaults plus overrides) as JSON, without the seed."""
        return config_to_dict(self._config)

    def problems(self, n: int, seed: int, start: int = 0) -> list[Problem]:
        """Problems `start .. start+n-1` of the stream for `seed`.

        Raises:
            ValueError: Negative n/start, a non-integer seed, or (size-dependent tasks)
                indices past the configured pool size.
        """
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if n < 0 or start < 0:
            raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
        self._dataset(seed, start + n)
        return [self._problem(seed, i, self._entry(seed, i)) for i in range(start, start + n)]

    def user_prompt(self, problem: Problem) -> str:
        """The question followed by the <answer>-tag instruction."""
        return f"{problem.question.rstrip()}\n\n{self.instruction}"

    def verify(self, problem: Problem, completion: str) -> Verdict:
        """Extract the answer and score it with the task's own scorer.

        A scorer exception is caught: score 0.0 and the exception text in `error`.
        """
        self._check_problem(problem)
        tagged = extract_answer(completion)
        answer = extract_answer_flexible(completion) if self.extraction == "flexible" else tagged
        entry = self._entry(problem.seed, problem.index)
        dataset = self._dataset(problem.seed, problem.index + 1)
        score, error = _safe_score(dataset, answer, entry)
        return Verdict(
            answer=answer,
            score=score,
            correct=score == 1.0,
            format_ok=tagged is not None,
            error=error,
        )

    def feedback(
        self,
        problem: Problem,
        verdict: Verdict,
        policy: str,
        templates: dict[str, str] | None = None,
    ) -> str:
        """Feedback text under `policy`; see `envs.feedback` for policies and templates."""
        wants_hints = policy == "verifier" and not verdict.correct
        hints = verifier_hints(problem, verdict.answer) if wants_hints else []
        return render_feedback(
            problem, verdict, policy, templates, hints=hints, has_verifier=self.has_verifier
        )

    # -- internals -----------------------------------------------------------------

    def _dataset(self, seed: int, min_size: int) -> Any:
        """The dataset for `seed` holding at least `min_size` items (cached)."""
        cached = self._datasets.get(seed)
        if cached is not None and len(cached) >= min_size:
            return cached
        pool = getattr(self._config, "size", 500)
        if self.name in SIZE_DEPENDENT_TASKS:
            if min_size > pool:
                raise ValueError(
                    f"Environment {self.name!r} draws its problems from a pool of size={pool} "
                    f"that depends on the size, so index {min_size - 1} does not exist. "
                    f"Fix: pass size={min_size} (or more) when creating the environment."
                )
            size = pool
        else:
            # Items do not depend on the size here, so growing keeps earlier items the same.
            size = max(pool, min_size)
        config = dataclasses.replace(self._config, seed=dataset_seed(seed), size=size)
        with _quiet():
            dataset = self._dataset_cls(config=config)
        self._datasets[seed] = dataset
        return dataset

    def _entry(self, seed: int, index: int) -> dict[str, Any]:
        key = (seed, index)
        if key not in self._entries:
            dataset = self._dataset(seed, index + 1)
            with _quiet(), _pinned_global_random(seed, index):
                self._entries[key] = dataset[index]
        return self._entries[key]

    def _problem(self, seed: int, index: int, entry: dict[str, Any]) -> Problem:
        return Problem(
            env=self.name,
            problem_id=problem_id(self.name, seed, index),
            index=index,
            seed=seed,
            question=str(entry["question"]),
            gold=self._gold(entry),
            metadata=to_jsonable(entry.get("metadata") or {}),
        )

    def _gold(self, entry: dict[str, Any]) -> str:
        answer = entry.get("answer")
        if answer is None:
            key = EXAMPLE_ANSWER_KEYS.get(self.name)
            example = (entry.get("metadata") or {}).get(key) if key else None
            if example is None:
                return ""
            answer = example
        if isinstance(answer, str):
            return answer
        return json.dumps(to_jsonable(answer))

    def _check_problem(self, problem: Problem) -> None:
        if problem.env != self.name:
            raise ValueError(
                f"Problem {problem.problem_id!r} belongs to environment {problem.env!r}, "
                f"not {self.name!r}. Fix: verify it with get_env({problem.env!r})."
            )


def _safe_score(
    dataset: Any, answer: str | None, entry: dict[str, Any]
) -> tuple[float, str | None]:
    """The task's score in [0, 1] and None, or 0.0 and the error text if the scorer failed."""
    try:
        with _quiet():
            raw = dataset.score_answer(answer, entry)
        score = float(raw)
    except Exception as e:  # scorers raise on malformed answers (prime_factorization)
        return 0.0, f"{type(e).__name__}: {e}"
    if math.isfinite(score) and 0.0 <= score <= 1.0:
        return score, None
    error = f"ValueError: score_answer returned {raw!r}, outside [0, 1]"
    if not math.isfinite(score) or score < 0.0:
        return 0.0, error
    # Above 1 only comes from float round-off in partial-credit sums (spell_backward gives
    # 1.0000000000000002 to the word plus extra letters, whose intended score is 0.8). An
    # exact 1.0 means correct, so keep the score just below it.
    return math.nextafter(1.0, 0.0), error


def _check_known_wrong_answers(name: str, config: Any) -> None:
    """Reject configs on which reasoning-gym writes questions whose gold answer is wrong."""
    if name == "basic_arithmetic" and "/" in config.operators and not config.allow_parentheses:
        # Its simple generator picks a new divisor after writing the old one into the question
        # ("Calculate 4 / 1." with answer 2).
        raise ValueError(
            "Invalid config for environment 'basic_arithmetic': operators include '/' with "
            "allow_parentheses=false, where reasoning-gym's generator writes one divisor into the question "
            "and divides by another, so gold answers of division problems are wrong. "
            "Fix: drop '/' (e.g. operators=+,-,*) or set allow_parentheses=true."
        )


def _check_known_hangs(name: str, config: Any) -> None:
    """Reject configs on which reasoning-gym loops forever instead of failing."""
    if name == "base_conversion" and config.min_base == config.max_base:
        raise ValueError(
            f"Invalid config for environment 'base_conversion': min_base == max_base "
            f"({config.min_base}) makes the generator loop forever looking for a target base "
            f"different from the source base. Fix: set max_base > min_base."
        )


def _datasets() -> dict[str, tuple[type, type]]:
    """Task name -> (dataset class, config class); imports reasoning-gym on first use."""
    # Importing reasoning_gym registers every task; the factory holds the registry.
    importlib.import_module("reasoning_gym")
    from reasoning_gym.factory import DATASETS

    return DATASETS


class ReasoningGymFamily:
    """The environment family of reasoning-gym: one environment per task, named as the task."""

    description = "reasoning-gym's procedurally generated tasks, each graded by its own scorer (all but composite)"

    def names(self) -> list[str]:
        return sorted(name for name in _datasets() if name not in EXCLUDED_TASKS)

    def unsupported(self) -> dict[str, str]:
        return dict(EXCLUDED_TASKS)

    def make(self, name: str, /, *, extraction: str = "strict", **config: Any) -> ReasoningGymEnv:
        dataset_cls, config_cls = _datasets()[name]
        return ReasoningGymEnv(name, dataset_cls, config_cls, config, extraction=extraction)


REASONING_GYM = register_env_family("reasoning-gym", ReasoningGymFamily())
