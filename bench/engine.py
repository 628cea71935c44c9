"""Engine vs transformers' generate: greedy tokens/s at several batch sizes.

Run on demand (`make bench` or `python bench/engine.py`). Both paths decode the
same ~100-token prompts for 128 new tokens with EOS disabled, alternating, in one
process; the engine runs batch-invariant (on, the default) and with its plain fast
kernels (off). The table prints the medians of the repeats, each engine mode's ratio
to generate and the cost of invariance (off tok/s / on tok/s).
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
from decoders import get_decoder  # noqa: E402
from harness.engine.batch_invariance import batch_invariance  # noqa: E402
from harness.engine.lockstep import decode  # noqa: E402
from harness.engine.models import load_model  # noqa: E402
from harness.engine.prompts import encode, render_chat  # noqa: E402

TOPICS = ["prime numbers", "the water cycle", "binary search", "photosynthesis", "sorting lists",
          "the moon", "fractions", "volcanoes"]


def prompts(tokenizer, batch: int, target_tokens: int = 100) -> list[list[int]]:
    rows = []
    for i in range(batch):
        text = f"Explain {TOPICS[i % len(TOPICS)]} step by step. " * 12
        ids = encode(tokenizer, render_chat(tokenizer, [{"role": "user", "content": text}]))
        rows.append(ids[: target_tokens - 10 + i % 10] + ids[-5:])  # lengths differ: left padding is exercised
    return rows


def time_engine(loaded, rows, new_tokens) -> float:
    start = time.perf_counter()
    out = decode(loaded, [rows], get_decoder("greedy"), max_new_tokens=new_tokens, eos_token_ids=[])
    assert all(r.new_tokens == new_tokens for r in out)
    return time.perf_counter() - start


def time_generate(loaded, rows, new_tokens) -> float:
    tok = loaded.tokenizer
    enc = tok.pad({"input_ids": rows}, return_tensors="pt", padding=True).to(loaded.model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = loaded.model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                    pad_token_id=tok.pad_token_id)
    assert out.shape[1] - enc["input_ids"].shape[1] == new_tokens
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    print(f"model {args.model} {args.dtype} on {args.device}, {torch.get_num_threads()} threads, "
          f"{args.new_tokens} new tokens; the engine batch-invariant (on, the default) and not (off); "
          "generate on the plain model")
    print(f"{'batch':>5} {'on tok/s':>9} {'off tok/s':>10} {'generate tok/s':>15} {'on/gen':>7} {'off/gen':>8} "
          f"{'on cost':>8} {'other load':>11}")
    for batch in [int(b) for b in args.batches.split(",")]:
        rows = prompts(loaded.tokenizer, batch)
        for mode in (True, False):
            with batch_invariance(loaded, mode):
                time_engine(loaded, rows[:1], 4)  # warm-up
        times: dict[str, list[float]] = {"on": [], "off": [], "generate": []}
        loads = []
        for _ in range(args.repeats):
            with OtherLoad() as load:
                with batch_invariance(loaded, True):
                    times["on"].append(time_engine(loaded, rows, args.new_tokens))
                with batch_invariance(loaded, False):
                    times["off"].append(time_engine(loaded, rows, args.new_tokens))
                    times["generate"].append(time_generate(loaded, rows, args.new_tokens))
            loads.append(load.share)
        rate = {name: batch * args.new_tokens / statistics.median(t) for name, t in times.items()}
        print(f"{batch:>5} {rate['on']:>9.1f} {rate['off']:>10.1f} {rate['generate']:>15.1f} "
              f"{rate['on'] / rate['generate']:>7.2f} {rate['off'] / rate['generate']:>8.2f} "
              f"{rate['off'] / rate['on']:>7.2f}x {max(loads):>10.0%}", flush=True)



if __name__ == "__main__":
    main()
