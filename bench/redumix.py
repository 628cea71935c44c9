"""ReDuMix stage 4 vs greedy decoding: time per generated token, side by side.

Run on demand (`python bench/redumix.py`). Greedy decodes the original context x
(~100 tokens); stage 4 decodes x and the reflective context x2 (~600 tokens) in
lockstep with lambda = 0.5. Both run with EOS disabled for the same number of new
tokens, alternating, in one process; the table prints medians over the repeats
and the ratio stage-4 / greedy, with and without the prefill.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu_load import OtherLoad  # noqa: E402
from bench.engine import prompts  # noqa: E402
from decoders import get_decoder  # noqa: E402
from harness.engine.lockstep import decode  # noqa: E402
from harness.engine.models import load_model  # noqa: E402
from harness.engine.prompts import encode, render_chat  # noqa: E402

ATTEMPT = "First I add the two numbers, then I check the sum by counting on my fingers. "
FEEDBACK = "Your answer is incorrect. The expected answer is: 42"
REFLECTION = "I added the tens but forgot to carry the one, so the sum was off by ten. "


def reflective_contexts(tokenizer, xs: list[list[int]], target_tokens: int = 600) -> list[list[int]]:
    """x2 for each x: [x, y1, feedback, reflection, redo] as chat turns, ~target_tokens long."""
    rows = []
    for i, x in enumerate(xs):
        user = tokenizer.decode(x, skip_special_tokens=True)
        repeats = 1
        while True:
            turns = [
                {"role": "user", "content": user},
                {"role": "assistant", "content": ATTEMPT * repeats},
                {"role": "user", "content": f"{FEEDBACK}\n\nReflect on the attempt above."},
                {"role": "assistant", "content": REFLECTION * repeats},
                {"role": "user", "content": "Now redo the task."},
            ]
            ids = encode(tokenizer, render_chat(tokenizer, turns))
            if len(ids) >= target_tokens - 40 + i % 40 or repeats > 100:
                rows.append(ids)
                break
            repeats += 1
    return rows


def timed(loaded, contexts, decoder, new_tokens) -> tuple[float, float]:
    """(total seconds, prefill seconds) of one engine call."""
    start = time.perf_counter()
    out = decode(loaded, contexts, decoder, max_new_tokens=new_tokens, eos_token_ids=[])
    total = time.perf_counter() - start
    assert all(r.new_tokens == new_tokens for r in out)
    return total, out[0].prefill_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    greedy, mix = get_decoder("greedy"), get_decoder("redumix", lam=0.5)
    print(f"{torch.get_num_threads()} threads, {args.new_tokens} new tokens, lambda 0.5; ms per generated token")
    print(f"{'dtype':>9} {'batch':>5} {'|x|':>4} {'|x2|':>5} {'greedy':>8} {'stage 4':>8} {'ratio':>6} "
          f"{'greedy dec':>11} {'stage4 dec':>11} {'ratio dec':>10} {'other load':>11}")
    for dtype in args.dtypes.split(","):
        loaded = load_model(args.model, dtype=dtype)
        for batch in [int(b) for b in args.batches.split(",")]:
            xs = prompts(loaded.tokenizer, batch)
            x2s = reflective_contexts(loaded.tokenizer, xs)
            timed(loaded, [xs[:1], x2s[:1]], mix, 4)  # warm-up
            singles, duals, loads = [], [], []
            for _ in range(args.repeats):
                with OtherLoad() as load:
                    singles.append(timed(loaded, [xs], greedy, args.new_tokens))
                    duals.append(timed(loaded, [xs, x2s], mix, args.new_tokens))
                loads.append(load.share)
            tokens = batch * args.new_tokens
            g = 1000 * statistics.median(t for t, _ in singles) / tokens
            m = 1000 * statistics.median(t for t, _ in duals) / tokens
            gd = 1000 * statistics.median(t - p for t, p in singles) / tokens
            md = 1000 * statistics.median(t - p for t, p in duals) / tokens
            x_len = statistics.mean(map(len, xs))
            x2_len = statistics.mean(map(len, x2s))
            print(f"{dtype:>9} {batch:>5} {x_len:>4.0f} {x2_len:>5.0f} {g:>8.1f} {m:>8.1f} {m / g:>6.2f} "
                  f"{gd:>11.1f} {md:>11.1f} {md / gd:>10.2f} {max(loads):>10.0%}", flush=True)


if __name__ == "__main__":
    main()
