"""lm-eval through the `redumix` model: a local generate task and one call that evaluates it."""

from __future__ import annotations

import json
from pathlib import Path


def local_sums_task(folder: Path) -> dict:
    """A built-in-style generate task over a JSONL file written into `folder` (lm-eval's `json`
    loader, no hub): five one-digit sums."""
    rows = [{"question": f"Q: {a} + {b} =", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 1), (2, 2), (7, 1)]]
    path = folder / "sums.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {
        "task": "local_sums",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
        "doc_to_text": "{{question}}",
        "doc_to_target": "{{answer}}",
        "output_type": "generate_until",
        "generation_kwargs": {"until": ["\n", "Q:"], "max_gen_toks": 8, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }


def evaluate(model_args, tasks, task_manager=None, **kwargs):
    """`lm_eval.simple_evaluate` of the `redumix` model with samples logged and no bootstrap."""
    import lm_eval

    import harness.lmeval.model  # noqa: F401 (registers the "redumix" model with lm-eval)

    kwargs = {"batch_size": 2, "bootstrap_iters": 0, "log_samples": True, **kwargs}
    return lm_eval.simple_evaluate(model="redumix", model_args=model_args, tasks=tasks,
                                   task_manager=task_manager, **kwargs)
