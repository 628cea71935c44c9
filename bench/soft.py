"""Soft-token decoders vs greedy: time per generated token, side by side.

Run on demand (`python bench/soft.py`). Every decoder decodes the same ~100-token
prompts for the same number of new tokens with EOS disabled, alternating, in one
process, with transformers' greedy `generate` beside them as the peer. The soft rows
think (an end marker they never write) until the model's EOS, feeding a soft input
`weights @ E` at each of those steps, then answer greedily. The table prints ms per generated token (medians over the
repeats) and each decoder's ratio to our greedy.
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
from bench.engine import prompts, time_generate  # noqa: E402
from decoders import get_decoder  # noqa: E402
from decoders.sampling import row_generator  # noqa: E402
from harness.engine.lockstep import decode  # noqa: E402
from harness.engine.models import load_model  # noqa: E402

NEVER_WRITTEN = "QZXQZXQZX"  # an end-of-thinking marker no row writes: thinking until an EOS


def decoders() -> dict[str, object]:
    return {
        "greedy": get_decoder("greedy"),
        "soft probs": get_decoder("soft", think_end=NEVER_WRITTEN),
        "soft dirichlet": get_decoder("soft", mode="dirichlet", think_end=NEVER_WRITTEN),
        "gumbel 0.5": get_decoder("gumbel", tau=0.5, think_end=NEVER_WRITTEN),
    }


def time_decoder(loaded, rows, decoder, new_tokens) -> float:
    bind = getattr(decoder, "bind", None)
    decoder = bind(loaded.tokenizer) if bind is not None else decoder
    rngs = [row_generator(0, str(i), loaded.device) for i in range(len(rows))]
    start = time.perf_counter()
    out = decode(loaded, [rows], decoder, max_new_tokens=new_tokens, eos_token_ids=[], rngs=rngs)
    assert all(r.new_tokens == new_tokens for r in out)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    loaded = load_model(args.model, dtype=args.dtype)
    named = decoders()
    print(f"model {args.model} {args.dtype}, {torch.get_num_threads()} threads, {args.new_tokens} new tokens; "
          "ms per generated token (ratio to our greedy)")
    print(f"{'batch':>5} {'generate':>15} " + " ".join(f"{name:>17}" for name in named) + f" {'other load':>11}")
    for batch in [int(b) for b in args.batches.split(",")]:
        rows = prompts(loaded.tokenizer, batch)
        for decoder in named.values():  # warm-up
            time_decoder(loaded, rows[:1], decoder, 4)
        times: dict[str, list[float]] = {name: [] for name in ["generate", *named]}
        loads = []
        for _ in range(args.repeats):
            with OtherLoad() as load:
                times["generate"].append(time_generate(loaded, rows, args.new_tokens))
                for name, decoder in named.items():
                    times[name].append(time_decoder(loaded, rows, decoder, args.new_tokens))
            loads.append(load.share)
        ms = {name: 1000 * statistics.median(t) / (batch * args.new_tokens) for name, t in times.items()}
        cells = [f"{ms[name]:>8.2f} ({ms[name] / ms['greedy']:.2f}x)" for name in times]
        print(f"{batch:>5} " + " ".join(f"{c:>17}" for c in cells) + f" {max(loads):>10.0%}")


if __name__ == "__main__":
    main()
