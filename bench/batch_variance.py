"""How many greedy completions change with what shares their batch, invariance on and off.

Run on demand (`python bench/batch_variance.py`). Greedy decodes every problem alone
(batch size 1, 2 threads, no prefix cache): the reference. Then the same problems in
batches of 4 and 16, in batches of 16 on 1 thread, and as ReDuMix at lambda 1 (by
definition greedy on x, but decoded in stage 4 beside the x2 rows, from the prefix
cache stages 1-3 leave); the table counts completions that differ from the reference,
for each dtype, with batch invariance on (the default) and off.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envs.registry import get_env  # noqa: E402
from harness.engine.batch_invariance import batch_invariance  # noqa: E402
from harness.engine.models import load_model  # noqa: E402
from harness.engine.prefix_cache import PrefixCache  # noqa: E402
from harness.methods import Generation, get_method  # noqa: E402

TASKS = ("chain_sum", "basic_arithmetic", "leg_counting")
SHORT = {"reflection_max_new_tokens": "24"}


def completions(loaded, env, problems, name: str, config: dict, batch: int, threads: int, new_tokens: int,
                cache: bool) -> dict[str, list[int]]:
    method = get_method(name, **config)
    gen = Generation(max_new_tokens=new_tokens, stop=(), seed=0)
    loaded.prefix_cache = PrefixCache() if cache else None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {}
        for start in range(0, len(problems), batch):
            for a in method.solve(env, {"policy": loaded}, problems[start : start + batch], gen):
                if a.variant.get("lambda", 1.0) == 1.0:
                    out[a.problem.problem_id] = a.row.token_ids
        return out
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--n", type=int, default=20, help="problems per task")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cases = {
        "batch size 4": ("greedy", {}, 4, 2, False),
        "batch size 16": ("greedy", {}, 16, 2, False),
        "batch size 16, 1 thread": ("greedy", {}, 16, 1, False),
        "ReDuMix lambda=1": ("redumix", {"lam": "1", "feedback": "ground_truth", **SHORT}, 16, 2, True),
    }
    tasks = args.tasks.split(",")
    columns = [(dtype, mode) for dtype in args.dtypes.split(",") for mode in (True, False)]
    counts: dict[str, dict[tuple, str]] = {case: {} for case in cases}
    for dtype in args.dtypes.split(","):
        loaded = load_model(args.model, dtype=dtype, device=args.device)
        for mode in (True, False):
            with batch_invariance(loaded, mode):
                differ = dict.fromkeys(cases, 0)
                total = 0
                for task in tasks:
                    env = get_env(task)
                    problems = env.problems(args.n, 0)
                    alone = completions(loaded, env, problems, "greedy", {}, 1, 2, args.new_tokens, False)
                    total += len(alone)
                    for case, (name, config, batch, threads, cache) in cases.items():
                        got = completions(loaded, env, problems, name, config, batch, threads, args.new_tokens, cache)
                        differ[case] += sum(got[pid] != tokens for pid, tokens in alone.items())
                for case in cases:
                    counts[case][(dtype, mode)] = f"{differ[case]}/{total}"
                print(f"{dtype}, invariance {'on' if mode else 'off'}: done", file=sys.stderr, flush=True)
    header = " | ".join(f"{dtype} {'on' if mode else 'off'}" for dtype, mode in columns)
    print(f"completions that differ from batch size 1 ({len(tasks)} tasks x {args.n} problems, greedy, "
          f"{args.new_tokens} new tokens, {torch.get_num_threads()} threads)")
    print(f"| compared with batch size 1 | {header} |")
    print("|---|" + "---|" * len(columns))
    for case in cases:
        print(f"| {case} | " + " | ".join(counts[case][c] for c in columns) + " |")


if __name__ == "__main__":
    main()
