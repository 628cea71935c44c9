"""Reasoning environments: problems, answer checking and feedback.

>>> from envs import get_env
>>> env = get_env("basic_arithmetic", min_terms="2", max_terms="2")
>>> problem = env.problems(1, seed=0)[0]
>>> verdict = env.verify(problem, "... <answer>7</answer>")
>>> text = env.feedback(problem, verdict, "binary")

Environments come from families (reasoning-gym and `file:PATH` problem sets built in, others
through the `redumix.envs` entry points); see `envs.registry` and docs/extending.md.
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
from .checkers import BUILT_IN_CHECKERS, Check, make_checker
from .feedback import (
    DEFAULT_TEMPLATES,
    FEEDBACK_POLICIES,
    MISSING_PHRASE,
    TEMPLATE_FIELDS,
    check_feedback_policy,
    render_feedback,
    resolve_templates,
)
from .file_dataset import FileEnv
from .reasoning_gym_env import ReasoningGymEnv
from .registry import (
    EnvFamily,
    EnvPluginError,
    available_envs,
    env_families,
    get_env,
    is_env_name,
    register_env_family,
    registered_env_family,
    unregister_env_family,
)

__all__ = [
    "ANSWER_INSTRUCTION",
    "BUILT_IN_CHECKERS",
    "DEFAULT_TEMPLATES",
    "Check",
    "EXTRACTION_MODES",
    "FEEDBACK_POLICIES",
    "MISSING_PHRASE",
    "TEMPLATE_FIELDS",
    "Env",
    "EnvFamily",
    "EnvPluginError",
    "FileEnv",
    "Problem",
    "ReasoningGymEnv",
    "Verdict",
    "available_envs",
    "check_feedback_policy",
    "close_stopped_answer",
    "env_families",
    "extract_answer",
    "extract_answer_flexible",
    "get_env",
    "is_env_name",
    "make_checker",
    "register_env_family",
    "registered_env_family",
    "render_feedback",
    "resolve_templates",
    "unregister_env_family",
    "wrap_answer",
]
