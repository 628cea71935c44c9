"""Sweep configs on the tiny model, the record keys they plan, and a sweep folder's records read back."""

from __future__ import annotations

import json
from pathlib import Path

from harness.runs.sweep import plan

EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+", "-"]}
# Short stage prompts keep x2 inside the tiny model's 512-position window (its tokens are characters).
SHORT = {"reflect_prompt": "Reflect.", "redo_prompt": "Redo.", "reflection_max_new_tokens": 8}
TIMING = ("_s", "stage1_reused")  # times, and where the first attempt's time came from


def sweep_data(model_dir, n=3, seeds=(0, 1), batch_size=2, max_new_tokens=10, lambdas=(0, 0.5, 1),
               policies=("binary", "ground_truth")) -> dict:
    """A sweep config (as parse_config takes it): greedy, sample and redumix on easy arithmetic."""
    return {
        "name": "t",
        "models": [str(model_dir)],
        "seeds": list(seeds),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "envs": [{"name": "basic_arithmetic", "n": n, "config": dict(EASY)}],
        "decoders": [
            {"name": "greedy"},
            {"name": "sample", "config": {"temperature": 1.5}},
            {"name": "redumix", "lambdas": list(lambdas), "feedback": list(policies), "config": dict(SHORT)},
        ],
    }


def small_sweep_data(model_dir, **kw) -> dict:
    """`sweep_data` cut down to 2 problems, seed 0, lambdas 0 and 1 and binary feedback (`kw` overrides)."""
    return sweep_data(model_dir, **({"n": 2, "seeds": (0,), "lambdas": (0, 1), "policies": ("binary",)} | kw))


def expected_keys(config) -> set[str]:
    """Every record key a parsed sweep config plans."""
    from envs import get_env

    keys = set()
    for unit in plan(config):
        env = get_env(unit.env.name, extraction=config.extraction, **unit.env.config)
        keys |= {k for p in env.problems(unit.env.n, unit.seed) for k in unit.keys(p.problem_id)}
    return keys


def sample_lines(folder: Path) -> list[bytes]:
    """The lines of a folder's samples.jsonl, as bytes."""
    return (folder / "samples.jsonl").read_bytes().splitlines()


def read_records(folder: Path) -> list[dict]:
    """The records of a folder's samples.jsonl, in file order."""
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def without_timings(records) -> list[dict]:
    """Records without their timing fields, sorted by key (what must equal between two runs)."""
    return sorted(({k: v for k, v in r.items() if not k.endswith(TIMING)} for r in records), key=lambda r: r["key"])
