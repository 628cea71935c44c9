"""A whole ReDuMix answer (stages 1-4) against a greedy answer, with the prefix cache off and on.

Run on demand (`python bench/redumix_answer.py`). Two settings:

- quick: configs/quick.yaml's problems and lengths (single-digit sums, 32 new tokens,
  24-token reflections), x2 of ~150-250 tokens;
- long: the same problems behind a ~1,300-token passage of notes, 96 new tokens and
  96-token reflections, so that x2 exceeds 1,500 tokens.

Each runs greedy, then ReDuMix at one lambda with the prefix cache off, then on (fresh
caches each time, nothing carried between them), and prints seconds and the ratio to greedy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu_load import OtherLoad  # noqa: E402
from envs import get_env  # noqa: E402
from harness.engine.models import load_model  # noqa: E402
from harness.engine.prefix_cache import PrefixCache  # noqa: E402
from harness.methods.base import Generation, MethodCache  # noqa: E402
from harness.methods.registry import get_method  # noqa: E402

EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+", "-"],
        "allow_parentheses": False, "allow_negation": False}
NOTE = ("Note {i}: when adding whole numbers, line up the digits by place value, add the ones first, "
        "carry any ten into the next column, and check the result by subtracting one addend from the sum. ")


class WithNotes:
    """An environment whose user turn starts with a long passage of notes (a long-context task)."""

    def __init__(self, env, passage: str) -> None:
        self._env, self._passage = env, passage

    def user_prompt(self, problem) -> str:
        return f"{self._passage}\n\n{self._env.user_prompt(problem)}"

    def __getattr__(self, name):
        return getattr(self._env, name)


def timed_solve(loaded, env, method, problems, gen, cache_on: bool) -> tuple[float, int]:
    """(seconds, reused prompt tokens) of one method over `problems`, from fresh caches."""
    loaded.prefix_cache = PrefixCache() if cache_on else None
    try:
        start = time.perf_counter()
        method.solve(env, {"policy": loaded}, problems, gen, cache=MethodCache())
        seconds = time.perf_counter() - start
        return seconds, loaded.prefix_cache.stats.reused_tokens if cache_on else 0
    finally:
        loaded.prefix_cache = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=6, help="problems per setting (one batch)")
    parser.add_argument("--settings", default="quick,long")
    parser.add_argument("--lam", type=float, default=0.5)
    args = parser.parse_args()

    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    base = get_env("basic_arithmetic", extraction="flexible", **EASY)
    problems = base.problems(args.n, 0)
    passage = "".join(NOTE.format(i=i) for i in range(30))
    settings = {
        "quick": (base, 32, 24),
        "long": (WithNotes(base, passage), 96, 96),
    }
    print(f"{args.model} {args.dtype} on {args.device}, {torch.get_num_threads()} threads, {args.n} problems, "
          f"lambda {args.lam}; seconds for the batch (ratio to greedy)")
    for name in args.settings.split(","):
        env, max_new, reflection = settings[name]
        gen = Generation(max_new_tokens=max_new, stop=("</answer>",), seed=0)
        greedy = get_method("greedy")
        redumix = get_method("redumix", lam=args.lam, reflection_max_new_tokens=reflection, feedback="ground_truth")
        greedy.solve(env, {"policy": loaded}, problems[:1], Generation(max_new_tokens=2, stop=(), seed=0))  # warm-up
        with OtherLoad() as load:
            g, _ = timed_solve(loaded, env, greedy, problems, gen, cache_on=False)
            off, _ = timed_solve(loaded, env, redumix, problems, gen, cache_on=False)
            on, reused = timed_solve(loaded, env, redumix, problems, gen, cache_on=True)
        answers = redumix.solve(env, {"policy": loaded}, problems[:1], gen, cache=MethodCache())
        x_len, x2_len = answers[0].extras["context_tokens"]
        print(f"\n{name}: |x| {x_len}, |x2| {x2_len} (first problem), {max_new} new tokens, "
              f"other processes {load.share:.0%} CPU")
        print(f"  {'greedy':>22} {g:7.1f} s (1.00x)")
        print(f"  {'redumix, cache off':>22} {off:7.1f} s ({off / g:.2f}x)")
        print(f"  {'redumix, prefix cache':>22} {on:7.1f} s ({on / g:.2f}x), {reused} prompt tokens reused", flush=True)


if __name__ == "__main__":
    main()
