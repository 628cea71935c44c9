"""Environments by name: every reasoning-gym task except `composite`."""

from __future__ import annotations

import importlib
from typing import Any

from harness.naming import unknown_name_message

from .base import Env
from .reasoning_gym_env import ReasoningGymEnv

# `composite` mixes other tasks through DatasetSpec objects; its sources can be used
# directly, so it is left out rather than half-supported.
EXCLUDED_TASKS = {
    "composite": "it mixes tasks through DatasetSpec objects; use the source tasks directly"
}


def _datasets() -> dict[str, tuple[type, type]]:
    # Importing reasoning_gym registers every task; the factory holds the registry.
    importlib.import_module("reasoning_gym")
    from reasoning_gym.factory import DATASETS

    return DATASETS


def available_envs() -> list[str]:
    """Sorted names accepted by `get_env`."""
    return sorted(name for name in _datasets() if name not in EXCLUDED_TASKS)


def get_env(name: str, /, *, extraction: str = "strict", **config: Any) -> Env:
    """The environment `name` with task config overrides.

    Args:
        name: A reasoning-gym task name, e.g. "basic_arithmetic" (see `available_envs`).
        **config: Task Config fields; strings are coerced to the field types
            (e.g. min_terms="2", operators="+,-"). `size` is the pool size for the two
            size-dependent tasks; `seed` is not accepted (pass it to `problems`).
        extraction: "strict" (only <answer> tags count, the default) or "flexible"
            (falls back to an "answer is" phrase, then the last number; see `envs.answer`).

    Raises:
        ValueError: Unknown or excluded name (with did-you-mean), unknown config key,
            a value of the wrong type, or a config the task rejects.
    """
    if name in EXCLUDED_TASKS:
        raise ValueError(
            f"Environment {name!r} is not supported: {EXCLUDED_TASKS[name]}. "
            f"Available: {', '.join(available_envs())}"
        )
    datasets = _datasets()
    if name not in datasets:
        raise ValueError(unknown_name_message("environment", name, available_envs()))
    dataset_cls, config_cls = datasets[name]
    return ReasoningGymEnv(name, dataset_cls, config_cls, config, extraction=extraction)
