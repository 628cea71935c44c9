"""Feedback policies, templates and verifier hints."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import (
    DEFAULT_TEMPLATES,
    FEEDBACK_POLICIES,
    MISSING_PHRASE,
    Env,
    Problem,
    check_feedback_policy,
    get_env,
    wrap_answer,
)
from envs.hints import HINTS

BINARY_TEXTS = {
    DEFAULT_TEMPLATES["correct"],
    DEFAULT_TEMPLATES["incorrect"],
    DEFAULT_TEMPLATES["missing"],
}
# Tasks whose golds are not trivially substrings of the fixed texts (words, lists, numbers).
LEAK_TASKS = ["basic_arithmetic", "spell_backward", "word_sorting", "number_sorting", "gcd"]


@functools.cache
def env_for(name: str) -> Env:
    return get_env(name)


@functools.cache
def problems_for(name: str, n: int = 3) -> tuple[Problem, ...]:
    return tuple(env_for(name).problems(n, seed=0))


def completions(p: Problem) -> list[str]:
    """Right, wrong, partial, empty and untagged attempts."""
    return [
        wrap_answer(p.gold),
        wrap_answer("12345"),
        wrap_answer(f"{p.gold} {p.gold}"),
        wrap_answer(""),
        f"I think it is {p.gold}",
        "",
    ]


def render(name: str, completion: str, policy: str, **kw: object) -> str:
    env, p = env_for(name), problems_for(name)[0]
    return env.feedback(p, env.verify(p, completion), policy, **kw)


# -- the four policies -----------------------------------------------------------------


def test_policy_names() -> None:
    assert FEEDBACK_POLICIES == ("none", "binary", "verifier", "ground_truth")


@pytest.mark.parametrize("name", LEAK_TASKS)
def test_none_is_empty(name: str) -> None:
    for c in completions(problems_for(name)[0]):
        assert render(name, c, "none") == ""


@pytest.mark.parametrize("name", LEAK_TASKS)
def test_binary_is_one_of_the_fixed_texts_and_never_the_gold(name: str) -> None:
    env = env_for(name)
    for p in problems_for(name, 30):
        for c in completions(p):
            verdict = env.verify(p, c)
            text = env.feedback(p, verdict, "binary")
            assert text in BINARY_TEXTS
            if verdict.correct:
                assert text == "Your answer is correct."
            elif verdict.format_ok:
                assert text == "Your answer is incorrect."


@pytest.mark.parametrize("name", LEAK_TASKS)
def test_ground_truth_states_the_gold(name: str) -> None:
    env = env_for(name)
    for p in problems_for(name):
        for c in completions(p):
            verdict = env.verify(p, c)
            text = env.feedback(p, verdict, "ground_truth")
            assert p.gold in text
            expected = "correct." if verdict.correct else "incorrect."
            assert expected in text or MISSING_PHRASE in text


@pytest.mark.parametrize("policy", ["binary", "verifier", "ground_truth"])
def test_missing_tag_is_reported(policy: str) -> None:
    text = render("basic_arithmetic", "The answer is 7.", policy)
    assert "no answer in <answer> tags found" in text


def test_missing_tag_under_none_is_silent() -> None:
    assert render("basic_arithmetic", "The answer is 7.", "none") == ""


def test_verifier_reports_answer_and_score_but_not_the_gold() -> None:
    env = get_env("basic_arithmetic", min_digits="3", max_digits="3")
    for p in env.problems(20, seed=0):
        wrong = str(int(p.gold) + 1000)
        if p.gold in wrong:
            continue  # partial credit, and the gold is inside the echoed answer
        text = env.feedback(p, env.verify(p, wrap_answer(wrong)), "verifier")
        assert f"Extracted answer: {wrong}." in text and "Score: 0.00" in text
        assert "The answer is too high." in text
        assert not re.search(rf"(?<![\d-]){re.escape(p.gold)}(?!\d)", text), text


@pytest.mark.parametrize("name", sorted(HINTS))
def test_hints_never_state_the_gold(name: str) -> None:
    env = env_for(name)
    for p in problems_for(name, 20):
        for c in [wrap_answer(a) for a in ("0", "99999", "x y z", "['1', '2']", p.gold[::-1])]:
            verdict = env.verify(p, c)
            if verdict.correct:
                continue
            hints = env.feedback(p, verdict, "verifier", templates={"verifier": "{hints}"})
            assert not re.search(rf"(?<!\w){re.escape(p.gold)}(?!\w)", hints), (p.gold, hints)


def test_ground_truth_without_a_reference_answer() -> None:
    text = render("boxnet", wrap_answer("[]"), "ground_truth")
    assert "no single reference answer" in text


# -- verifier hints ----------------------------------------------------------------------


def hints_for(name: str, answer: str, **config: str) -> str:
    env = get_env(name, **config)
    p = env.problems(1, seed=0)[0]
    verdict = env.verify(p, wrap_answer(answer))
    assert not verdict.correct
    return env.feedback(p, verdict, "verifier", templates={"verifier": "{hints}"})


def test_hint_number_sorting() -> None:
    env = env_for("number_sorting")
    p = problems_for("number_sorting")[0]
    numbers = p.metadata["sorted_numbers"]
    direction = p.metadata["direction"]
    unsorted = list(reversed(numbers))
    text = env.feedback(p, env.verify(p, wrap_answer(str(unsorted))), "verifier")
    assert f"not sorted in {direction} order" in text
    text = env.feedback(p, env.verify(p, wrap_answer(str(numbers[:-1]))), "verifier")
    assert f"has {len(numbers) - 1} numbers but the question gives {len(numbers)}" in text
    text = env.feedback(p, env.verify(p, wrap_answer("sorted!")), "verifier")
    assert "not a list" in text


@pytest.mark.parametrize("name", ["letter_counting", "count_bits", "count_primes"])
def test_hint_counts_too_high_or_low(name: str) -> None:
    env = env_for(name)
    p = problems_for(name)[0]
    gold = int(p.gold)
    high = env.feedback(p, env.verify(p, wrap_answer(str(gold + 3))), "verifier")
    assert "too high" in high
    if gold > 0:
        low = env.feedback(p, env.verify(p, wrap_answer(str(gold - 1))), "verifier")
        assert "too low" in low
    assert "not a whole number" in env.feedback(p, env.verify(p, wrap_answer("many")), "verifier")


def test_hint_spell_backward_length() -> None:
    p = problems_for("spell_backward")[0]
    text = hints_for("spell_backward", p.gold[:-1])
    assert f"has {len(p.gold) - 1} characters but the word has {len(p.gold)}" in text
    assert "different letters" in hints_for("spell_backward", "q" * len(p.gold))


def test_hint_word_sorting_length_and_order() -> None:
    p = problems_for("word_sorting")[0]
    words = p.metadata["sorted_words"]
    assert "words but the question gives" in hints_for("word_sorting", ", ".join(words[:-1]))
    reordered = ", ".join(reversed(words))
    assert f"not in {p.metadata['direction']}" in hints_for("word_sorting", reordered)


@pytest.mark.parametrize("name", ["basic_arithmetic", "chain_sum", "products"])
def test_hint_not_a_number(name: str) -> None:
    assert hints_for(name, "seven") == "The answer is not a number."


def test_no_hints_for_tasks_without_a_rule() -> None:
    assert hints_for("caesar_cipher", "QQQQ") == ""


# -- templates ---------------------------------------------------------------------------


def test_template_override() -> None:
    templates = {"incorrect": "Nope: {answer} scored {score:.1f}.", "correct": "Yes!"}
    assert render("basic_arithmetic", wrap_answer("12345"), "binary", templates=templates) == (
        "Nope: 12345 scored 0.0."
    )
    p = problems_for("basic_arithmetic")[0]
    assert render("basic_arithmetic", wrap_answer(p.gold), "binary", templates=templates) == "Yes!"
    gt = render(
        "basic_arithmetic",
        wrap_answer("12345"),
        "ground_truth",
        templates={"ground_truth": "Answer: {gold} ({verdict})", "incorrect": "wrong"},
    )
    assert gt == f"Answer: {p.gold} (wrong)"


def test_gold_is_not_a_field_outside_ground_truth() -> None:
    with pytest.raises(ValueError) as info:
        render("basic_arithmetic", wrap_answer("1"), "binary", templates={"incorrect": "{gold}"})
    message = str(info.value)
    assert "'incorrect'" in message and "{gold}" in message
    assert "Allowed fields for 'incorrect': answer, score, env" in message


def test_unknown_placeholder_suggests_a_field() -> None:
    with pytest.raises(ValueError, match=r"\{hint\}\. Did you mean: hints\?"):
        check_feedback_policy(env_for("basic_arithmetic"), "verifier", {"verifier": "{hint}"})


@pytest.mark.parametrize("template", ["{", "}", "{}", "{0}", "{score:.{digits}f}"])
def test_malformed_or_positional_templates_are_rejected(template: str) -> None:
    with pytest.raises(ValueError, match="'correct'"):
        check_feedback_policy(env_for("basic_arithmetic"), "binary", {"correct": template})


def test_unknown_template_key_suggests_one() -> None:
    with pytest.raises(
        ValueError, match=r"Unknown feedback template 'incorect'\. Did you mean: incorrect"
    ):
        check_feedback_policy(env_for("basic_arithmetic"), "binary", {"incorect": "x"})


def test_bad_format_spec_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="could not be filled"):
        render("basic_arithmetic", wrap_answer("1"), "binary", templates={"incorrect": "{score:d}"})


# -- policy validation -------------------------------------------------------------------


def test_unknown_policy_suggests_one() -> None:
    with pytest.raises(ValueError, match=r"Unknown feedback policy 'binar'\. Did you mean: binary"):
        check_feedback_policy(env_for("basic_arithmetic"), "binar")
    with pytest.raises(ValueError, match="Did you mean: ground_truth"):
        render("basic_arithmetic", "x", "ground-truth")


@dataclass
class NoVerifierEnv:
    name: str = "plain_qa"
    has_verifier: bool = False


def test_verifier_policy_needs_a_verifier() -> None:
    env = NoVerifierEnv()
    with pytest.raises(ValueError, match="'plain_qa' has none"):
        check_feedback_policy(env, "verifier")
    for policy in ("none", "binary", "ground_truth"):
        check_feedback_policy(env, policy)
    for policy in FEEDBACK_POLICIES:
        check_feedback_policy(env_for("basic_arithmetic"), policy)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_binary_is_fixed_text_for_any_completion(completion: str) -> None:
    assert render("spell_backward", completion, "binary") in BINARY_TEXTS


def test_flexible_extraction_judges_untagged_answers_instead_of_reporting_them_missing() -> None:
    env = get_env("basic_arithmetic", extraction="flexible", min_digits="1", max_digits="1")
    p = env.problems(1, seed=0)[0]
    right = env.verify(p, f"The answer is {p.gold}.")
    assert env.feedback(p, right, "binary") == "Your answer is correct."
    nothing = env.verify(p, "I cannot say.")
    assert "no answer in <answer> tags found" in env.feedback(p, nothing, "binary")
