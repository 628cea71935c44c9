"""Feedback policies: what a model is told about its previous attempt.

Policies (`FEEDBACK_POLICIES`):

* ``none``: the empty string.
* ``binary``: "Your answer is correct." / "Your answer is incorrect." (never the gold).
* ``verifier``: the verdict, the extracted answer, the score and task-specific hints from
  `envs.hints` (never the gold). Needs an env with ``has_verifier``.
* ``ground_truth``: the verdict plus the expected answer (the gold, verbatim).

Under every policy but ``none``, a completion without an answer tag gets the ``missing``
text, which says "no answer in <answer> tags found".

Templates. Each text is a `str.format` template that callers may override by key
(``templates={"incorrect": "Wrong, try again."}``). Keys and their fields:

==================  ===================================================  ==================
key                 used for                                             fields
==================  ===================================================  ==================
``correct``         binary; the {verdict} of the others, when correct    answer, score, env
``incorrect``       binary; {verdict} when wrong                         answer, score, env
``missing``         binary; {verdict} when no <answer> tag was found     answer, score, env
``verifier``        the whole verifier text                              answer, score, env,
                                                                         verdict, format,
                                                                         hints
``ground_truth``    the whole ground_truth text                          answer, score, env,
                                                                         verdict, gold
``no_gold``         ground_truth for tasks without a reference answer    answer, score, env,
                                                                         verdict
==================  ===================================================  ==================

Field values: ``answer`` the extracted answer or "(none)"; ``score`` the float score (so
``{score:.2f}`` works); ``env`` the environment name; ``verdict`` the rendered
correct/incorrect/missing text; ``format`` "followed" or "not followed"; ``hints`` the hint
sentences joined by spaces ("" when none); ``gold`` the reference answer. ``gold`` exists
only for ``ground_truth``, so no override of another key can leak the answer.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

from harness.naming import did_you_mean, unknown_name_message

from .base import Problem, Verdict

FEEDBACK_POLICIES: tuple[str, ...] = ("none", "binary", "verifier", "ground_truth")

MISSING_PHRASE = "no answer in <answer> tags found"

DEFAULT_TEMPLATES: dict[str, str] = {
    "correct": "Your answer is correct.",
    "incorrect": "Your answer is incorrect.",
    "missing": (
        f"Format error: {MISSING_PHRASE}. Put your final answer inside <answer></answer> tags."
    ),
    "verifier": "{verdict} Extracted answer: {answer}. Score: {score:.2f}. {hints}",
    "ground_truth": "{verdict} The expected answer is: {gold}",
    "no_gold": "{verdict} This task has no single reference answer; a verifier checks answers.",
}

_BASE_FIELDS = ("answer", "score", "env")
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "correct": _BASE_FIELDS,
    "incorrect": _BASE_FIELDS,
    "missing": _BASE_FIELDS,
    "verifier": (*_BASE_FIELDS, "verdict", "format", "hints"),
    "ground_truth": (*_BASE_FIELDS, "verdict", "gold"),
    "no_gold": (*_BASE_FIELDS, "verdict"),
}


def check_policy_name(policy: str) -> None:
    """Raise ValueError (with did-you-mean) unless `policy` is a known policy."""
    if policy not in FEEDBACK_POLICIES:
        raise ValueError(unknown_name_message("feedback policy", policy, FEEDBACK_POLICIES))


def check_feedback_policy(
    env: Any, policy: str, templates: Mapping[str, str] | None = None
) -> None:
    """Validate a policy (and template overrides) for `env` before any decoding starts.

    Args:
        env: The environment (anything with `name` and `has_verifier`).
        policy: A name from `FEEDBACK_POLICIES`.
        templates: Optional template overrides, checked as in `resolve_templates`.

    Raises:
        ValueError: Unknown policy, `verifier` on an env without a verifier, or a bad
            template override.
    """
    check_policy_name(policy)
    if policy == "verifier" and not getattr(env, "has_verifier", False):
        name = getattr(env, "name", repr(env))
        raise ValueError(
            f"Feedback policy 'verifier' needs an environment with a verifier, but "
            f"{name!r} has none. Fix: use one of "
            f"{', '.join(p for p in FEEDBACK_POLICIES if p != 'verifier')}."
        )
    resolve_templates(templates)


def resolve_templates(templates: Mapping[str, str] | None = None) -> dict[str, str]:
    """The default templates with `templates` laid over them, after checking the overrides.

    Raises:
        ValueError: Unknown template key (with did-you-mean), a template that is not valid
            `str.format` syntax, or a placeholder the key does not offer.
    """
    merged = dict(DEFAULT_TEMPLATES)
    for key, template in (templates or {}).items():
        if key not in TEMPLATE_FIELDS:
            raise ValueError(unknown_name_message("feedback template", key, TEMPLATE_FIELDS))
        if not isinstance(template, str):
            raise ValueError(
                f"Feedback template {key!r} must be a string, got {type(template).__name__}."
            )
        _check_placeholders(key, template)
        merged[key] = template
    return merged


def render_feedback(
    problem: Problem,
    verdict: Verdict,
    policy: str,
    templates: Mapping[str, str] | None = None,
    hints: Sequence[str] = (),
    has_verifier: bool = True,
) -> str:
    """Feedback text for one graded completion.

    Args:
        problem: The problem that was attempted.
        verdict: Its grade.
        policy: A name from `FEEDBACK_POLICIES`.
        templates: Optional overrides of `DEFAULT_TEMPLATES` (see the module docstring).
        hints: Task-specific hint sentences for the `verifier` policy.
        has_verifier: Whether the environment can give verifier feedback.

    Raises:
        ValueError: Unknown policy, `verifier` without a verifier, or a bad template.
    """
    check_policy_name(policy)
    if policy == "none":
        return ""
    if policy == "verifier" and not has_verifier:
        raise ValueError(
            f"Feedback policy 'verifier' needs an environment with a verifier, but "
            f"{problem.env!r} has none."
        )
    tpl = resolve_templates(templates)
    base = {
        "answer": verdict.answer if verdict.answer is not None else "(none)",
        "score": float(verdict.score),
        "env": problem.env,
    }
    # "missing" means no answer was found; under flexible extraction an untagged answer
    # was found and is judged on its merits (the verifier text still reports the format).
    if verdict.answer is None:
        verdict_key = "missing"
    else:
        verdict_key = "correct" if verdict.correct else "incorrect"
    verdict_text = _fill(tpl, verdict_key, base)
    if policy == "binary":
        return verdict_text
    if policy == "verifier":
        return _fill(
            tpl,
            "verifier",
            {
                **base,
                "verdict": verdict_text,
                "format": "followed" if verdict.format_ok else "not followed",
                "hints": " ".join(hints),
            },
        )
    # ground_truth
    if problem.gold == "":
        return _fill(tpl, "no_gold", {**base, "verdict": verdict_text})
    return _fill(tpl, "ground_truth", {**base, "verdict": verdict_text, "gold": problem.gold})


def _fill(templates: Mapping[str, str], key: str, fields: dict[str, Any]) -> str:
    # Only the key's own fields are passed, so a template cannot reach e.g. the gold.
    allowed = {name: fields[name] for name in TEMPLATE_FIELDS[key]}
    try:
        return templates[key].format(**allowed).strip()
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        # e.g. "{score:d}" (a spec the value rejects) or "{answer.nope}" (no such attribute)
        raise ValueError(f"Feedback template {key!r} could not be filled: {e}.") from None


def _check_placeholders(key: str, template: str) -> None:
    allowed = TEMPLATE_FIELDS[key]
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(
            f"Feedback template {key!r} is not a valid str.format template ({e}): "
            f"{template!r}. Fix: write literal braces as '{{{{' and '}}}}'."
        ) from None
    for _, field_name, format_spec, _ in parsed:
        if format_spec and "{" in format_spec:
            _check_placeholders(key, format_spec)  # nested fields such as "{score:.{digits}f}"
        if field_name is None:
            continue
        # "{answer.upper}" or "{answer[0]}" name the field "answer".
        base = field_name.split(".", 1)[0].split("[", 1)[0]
        if base not in allowed:
            hint = did_you_mean(base, allowed)
            shown = "{" + field_name + "}" if field_name else "{} (positional)"
            raise ValueError(
                f"Feedback template {key!r} uses unknown placeholder {shown}.{hint} "
                f"Allowed fields for {key!r}: {', '.join(allowed)}."
            )
