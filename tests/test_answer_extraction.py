"""Answer extraction modes: strict tags only, or flexible fallbacks for untagged answers."""

from __future__ import annotations

import pytest

from envs import get_env
from envs.answer import extract_answer, extract_answer_flexible

EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer>3</answer> and then the answer is 5", "3"),  # tags always win
        ("Some work.\nThe answer is **7**.", "7"),
        ("Answer: Paris", "Paris"),
        ("4 + 0 = 4\nThe answer is inside <answer> tags.", "4"),  # talk about tags is no answer
        ("1 / 6 = 0.625", "0.625"),
        ("2 + 2 = 4. The answer is inside <answer></answer>", "4"),  # an empty tag states nothing
        ("-3 + 1 = -2", "-2"),
        ("no digits here", None),
    ],
)
def test_flexible_extraction(completion, expected):
    assert extract_answer_flexible(completion) == expected


def test_strict_extraction_ignores_untagged_answers():
    assert extract_answer("The answer is 7.") is None


def test_flexible_env_scores_untagged_answers_but_reports_the_format():
    strict = get_env("basic_arithmetic", **EASY)
    flexible = get_env("basic_arithmetic", extraction="flexible", **EASY)
    problem = strict.problems(1, seed=0)[0]
    completion = f"The answer is {problem.gold}."
    assert not strict.verify(problem, completion).correct
    verdict = flexible.verify(problem, completion)
    assert verdict.correct and verdict.answer == problem.gold and not verdict.format_ok
    tagged = flexible.verify(problem, f"<answer>{problem.gold}</answer>")
    assert tagged.correct and tagged.format_ok


def test_unknown_extraction_mode_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean: flexible"):
        get_env("basic_arithmetic", extraction="flexibel")
