"""Reasoning environments: problems, answer checking and feedback.

>>> from envs import get_env
>>> env = get_env("basic_arithmetic", min_terms="2", max_terms="2")
>>> problem = env.problems(1, seed=0)[0]
>>> verdict = env.verify(problem, "... <answer>7</answer>")
>>> text = env.feedback(problem, verdict, "binary")
"""

from .answer import (
    ANSWER_INSTRUCTION,
    EXTRACTION_MODES,
    close_stopped_answer,
    extract_answer,
    extract_answer_flexible,
    wrap_answer,
)
from .base import Env, Problem, Verdict, problem_id  # noqa: F401
from .feedback import (
    DEFAULT_TEMPLATES,
    FEEDBACK_POLICIES,
    MISSING_PHRASE,
    TEMPLATE_FIELDS,
    check_feedback_policy,
    render_feedback,
    resolve_templates,
)
from .reasoning_gym_env import ReasoningGymEnv
from .registry import available_envs, get_env

__all__ = [
    "ANSWER_INSTRUCTION",
    "DEFAULT_TEMPLATES",
    "EXTRACTION_MODES",
    "FEEDBACK_POLICIES",
    "MISSING_PHRASE",
    "TEMPLATE_FIELDS",
    "Env",
    "Problem",
    "ReasoningGymEnv",
    "Verdict",
    "available_envs",
    "check_feedback_policy",
    "close_stopped_answer",
    "extract_answer",
    "extract_answer_flexible",
    "get_env",
    "render_feedback",
    "resolve_templates",
    "wrap_answer",
]
