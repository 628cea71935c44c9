"""A sweep's decoding with and without continuous batching, side by side in one run.

Run on demand: `python bench/continuous_sweep.py [--n 48] [--batch-size 8] [--max-new-tokens 160]`.

The same problems are answered twice by the same method on the embedded model:
- **batches**, as a sweep answers them: `batch_size` problems per engine call, one call after
  another; rows that finish early leave their batch, but the next problems wait until the
  batch's longest answer is done;
- **continuous**: every problem is its own call, `batch_size` worker threads sharing one
  `SharedDecoding` of `batch_size` rows, so a problem starts as soon as a row is free.

The problems mix answer lengths on purpose (chain sums of 2 to 6 terms; the model stops at
`</answer>` after a few tokens on some and runs to the token limit on others). Printed per
method: wall time of each way, their ratio, rows per forward step, and whether every answer is
the same (it must be: batch invariance). The other processes' CPU share is printed too: on a
shared machine it explains most swings.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu_load import OtherLoad  # noqa: E402
from envs.registry import get_env  # noqa: E402
from harness.engine.models import load_model  # noqa: E402
from harness.engine.shared_decoding import SharedDecoding  # noqa: E402
from harness.methods import Generation, get_method  # noqa: E402

METHODS = {"greedy": {}, "sample": {"temperature": "0.8"}}


def in_batches(method, env, models, problems, gen, batch_size):
    out = []
    for start in range(0, len(problems), batch_size):
        out += method.solve(env, models, problems[start : start + batch_size], gen)
    return out


def continuously(method, env, models, problems, gen, batch_size):
    sharing = SharedDecoding(max_rows=batch_size)

    def solve(problem):
        with sharing.worker():
            return method.solve(env, models, [problem], gen)

    with concurrent.futures.ThreadPoolExecutor(batch_size) as pool:
        out = [a for attempts in pool.map(solve, problems) for a in attempts]
    sharing.close()
    return out, sharing.steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=48, help="problems")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    env = get_env("chain_sum", min_terms=2, max_terms=6, min_digits=1, max_digits=3)
    problems = env.problems(args.n, 0)
    gen = Generation(max_new_tokens=args.max_new_tokens, stop=("</answer>",), seed=0)
    print(f"{args.n} problems, batch size {args.batch_size}, up to {args.max_new_tokens} new tokens, "
          f"{args.model} ({loaded.model.dtype}), torch threads {torch.get_num_threads()}")
    print(f"{'method':>8} {'batches s':>10} {'continuous s':>13} {'speed-up':>9} {'tokens':>7} "
          f"{'length min/median/max':>22} {'rows/step':>10} {'same':>5} {'others CPU':>10}")
    for name in args.methods.split(","):
        method = get_method(name, **METHODS.get(name, {}))
        models = dict.fromkeys(method.roles(), loaded)
        with OtherLoad() as load:
            began = time.perf_counter()
            batched = in_batches(method, env, models, problems, gen, args.batch_size)
            batches_s = time.perf_counter() - began
            began = time.perf_counter()
            shared, steps = continuously(method, env, models, problems, gen, args.batch_size)
            continuous_s = time.perf_counter() - began
        lengths = [a.row.new_tokens for a in batched]
        same = [a.row.token_ids for a in batched] == [a.row.token_ids for a in shared]
        print(f"{name:>8} {batches_s:>10.1f} {continuous_s:>13.1f} {batches_s / continuous_s:>8.2f}x "
              f"{sum(lengths):>7} {min(lengths):>6}/{statistics.median(lengths):>5.0f}/{max(lengths):>5} "
              f"{sum(lengths) / max(1, steps):>10.1f} {'yes' if same else 'NO':>5} {load.share:>10.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
