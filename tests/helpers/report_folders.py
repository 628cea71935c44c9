"""Synthetic sweep records and the sweep folders (spec.json, samples.jsonl) that hold them, for reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.runs.sweep import record_key

MARKUP = '</script><script>window.__pwned = 1</script><b class="injected">&amp; x < y & z</b>'


def synthetic_records(seed: int = 0, problems: int = 12) -> list[dict]:
    """Sweep-shaped records with seeded random outcomes (markup in some model outputs)."""
    rng = np.random.default_rng(seed)
    variants = [("greedy", None, None), ("sample", None, None)]
    variants += [("redumix", lam, policy) for lam in (0.0, 0.5, 1.0) for policy in ("binary", "ground_truth")]
    records = []
    for env in ("basic_arithmetic", "chain_sum"):
        for s in (0, 1):
            for i in range(problems):
                pid = f"{env}-s{s}-{i}"
                first = bool(rng.random() < 0.4)
                for decoder, lam, policy in variants:
                    correct = bool(rng.random() < (0.3 + 0.4 * (lam or 0)))
                    variant = {} if lam is None else {"lambda": lam}
                    record = {
                        "key": record_key("m", env, pid, decoder, variant, s, policy), "model": "m", "env": env,
                        "env_label": env, "problem_id": pid, "seed": s, "decoder": decoder, "decoder_label": decoder,
                        "lambda": lam, "feedback_policy": policy, "question": f"What is {i} + 1? {MARKUP}",
                        "gold": str(i + 1), "answer": str(i + 1) if correct else MARKUP,
                        "completion": f"<answer>{i + 1 if correct else MARKUP}</answer>",
                        "score": 1.0 if correct else float(rng.choice([0.0, 0.5])), "correct": correct,
                        "format_ok": bool(rng.random() < 0.8), "new_tokens": int(rng.integers(1, 40)),
                        "latency_s": float(rng.uniform(0.1, 2)), "decode_s": float(rng.uniform(0.05, 1.5)),
                        "cost_s": float(rng.uniform(0.1, 1) * (3 if decoder == "redumix" else 1)),
                        "stage_s": 0.0, "decoder_config": {"lam": lam},
                    }
                    if decoder == "redumix":
                        record |= {
                            "stage1_correct": first, "stage1_answer": "7", "feedback": f"Wrong. {MARKUP}",
                            "reflection": f"Let me think {MARKUP}", "stage_s": float(rng.uniform(0.5, 1)),
                            "contexts": ["x", "x2"],
                            **{k: float(rng.uniform(0, 2)) for k in
                               ("kl_mix_p1", "kl_mix_p2", "kl_p1_p2", "js_p1_p2", "entropy_mix", "top1_agree")},
                        }
                    records.append(record)
    return records


def synthetic_grid(problems: int = 12) -> dict:
    """The sweep spec (as spec.json holds it) whose grid is exactly `synthetic_records`' keys."""
    redumix = {"name": "redumix", "label": "redumix", "lambdas": [0.0, 0.5, 1.0],
               "feedback": ["binary", "ground_truth"]}
    return {
        "models": ["m"], "seeds": [0, 1],
        "envs": [{"name": env, "label": env, "n": problems} for env in ("basic_arithmetic", "chain_sum")],
        "decoders": [{"name": d, "label": d, "lambdas": None, "feedback": None} for d in ("greedy", "sample")]
        + [redumix],
    }


def write_sweep_folder(folder: Path, records: list[dict]) -> Path:
    """Write `records` as a sweep folder whose spec's grid is `synthetic_grid`; the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    problems = 1 + max(int(r["problem_id"].rsplit("-", 1)[1]) for r in records)
    spec = {"sweep": synthetic_grid(problems) | {"name": f"cfg {MARKUP}"}}
    (folder / "spec.json").write_text(json.dumps(spec))
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder
