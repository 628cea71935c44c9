"""The environment contract: problems in, verdicts and feedback out.

Every environment (a reasoning-gym task, see `envs.reasoning_gym_env`, or one of another
family, see `envs.registry`) hands out `Problem`s, turns one into a plain-text user prompt,
grades a completion into a `Verdict` and renders feedback under a named policy (see
`envs.feedback`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


def problem_id(env: str, seed: int, index: int) -> str:
    """The deterministic id of problem `index` of `env` under `seed`, e.g. "basic_arithmetic-s0-3"."""
    return f"{env}-s{seed}-{index}"


@dataclass(frozen=True)
class Problem:
    """One task instance, fully determined by (env, config, seed, index).

    Attributes:
        env: Environment name, e.g. "basic_arithmetic".
        problem_id: Deterministic id, e.g. "basic_arithmetic-s0-3" ("<env>-s<seed>-<index>"); a problem
            that has an id of its own keeps it whatever its position (a problem file's rows:
            "file:data.jsonl#p7", see `envs.file_dataset`).
        index: Position of the problem in the seeded stream.
        seed: Seed of the stream.
        question: The task's own question text.
        gold: The reference answer as a string ("" when the task has none, see
            `envs.reasoning_gym_env`).
        metadata: The task's metadata converted to JSON types.
        columns: The columns a user's problem file has beside question, answer and id (JSON
            types); empty for generated tasks. Records carry them as `columns`.
    """

    env: str
    problem_id: str
    index: int
    seed: int
    question: str
    gold: str
    # A dict cannot be hashed; leaving it out of the hash keeps Problem usable as a dict key.
    metadata: dict = field(hash=False)
    # A problem file's other columns (topic, source, ...), which every record of the problem carries.
    columns: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Verdict:
    """The grade of one completion.

    Attributes:
        answer: Text of the last <answer>...</answer> tag, stripped (under "flexible"
            extraction, the fallback answer when there is no tag); None when there is none.
        score: The task's own score in [0, 1]; 0.0 when the scorer raised.
        correct: Strict correctness, `score == 1.0` (partial credit is not correct).
        format_ok: Whether an <answer> tag was found.
        error: "ExcType: message" when the scorer raised, else None.
    """

    answer: str | None
    score: float
    correct: bool
    format_ok: bool
    error: str | None


@runtime_checkable
class Env(Protocol):
    """What decoders and the harness may rely on."""

    name: str
    has_verifier: bool

    def problems(self, n: int, seed: int, start: int = 0) -> list[Problem]:
        """Problems with indices start..start+n-1; each depends only on (seed, index)."""
        ...

    def user_prompt(self, problem: Problem) -> str:
        """Question plus the instruction to answer inside <answer>...</answer> tags."""
        ...

    def verify(self, problem: Problem, completion: str) -> Verdict:
        """Grade a completion; never raises because of what the completion contains."""
        ...

    def feedback(
        self,
        problem: Problem,
        verdict: Verdict,
        policy: str,
        templates: dict[str, str] | None = None,
    ) -> str:
        """Feedback text for `verdict` under `policy` (see `envs.feedback`)."""
        ...

    def config(self) -> dict:
        """The resolved task config, JSON-serialisable."""
        ...
