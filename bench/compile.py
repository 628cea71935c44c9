"""What a static KV cache and torch.compile give greedy decoding at batch 1, beside eager.

Run on demand (`python bench/compile.py`). All rows are transformers' `generate` on
one ~100-token prompt (EOS off), in one process: the engine's own eager loop, then
generate with its dynamic cache, with a static cache, and with a static cache and the
forward compiled (inductor). The compiled row prints its first call (the compile) apart
from the steady state: inductor keeps compiled graphs on disk (TORCHINDUCTOR_CACHE_DIR),
so a second process pays less; run the script twice to see that figure.
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
from bench.engine import prompts, time_engine  # noqa: E402
from harness.engine.models import load_model  # noqa: E402


def time_generate(model, ids, new_tokens, **kwargs) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=0, **kwargs)
    assert out.shape[1] - ids.shape[1] == new_tokens
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, batch 1, {args.new_tokens} new tokens; tokens/s (median)")
    for dtype in args.dtypes.split(","):
        _measure(load_model(args.model, dtype=dtype), dtype, args.new_tokens, args.repeats)


def _measure(loaded, dtype: str, new_tokens: int, repeats: int) -> None:
    rows = prompts(loaded.tokenizer, 1)
    ids = torch.tensor(rows)
    model = loaded.model
    static = {"cache_implementation": "static"}
    variants = {
        "engine (eager)": lambda: time_engine(loaded, rows, new_tokens),
        "generate, dynamic cache": lambda: time_generate(model, ids, new_tokens),
        "generate, static cache": lambda: time_generate(model, ids, new_tokens, **static, disable_compile=True),
    }
    for run in variants.values():
        run()  # warm-up
    began = time.perf_counter()
    compiled_first = time_generate(model, ids, new_tokens, **static, compile_config=_compile_config())
    compile_s = time.perf_counter() - began
    variants["generate, static + compiled"] = lambda: time_generate(model, ids, new_tokens, **static,
                                                                    compile_config=_compile_config())
    with OtherLoad() as load:
        times = {name: statistics.median(run() for _ in range(repeats)) for name, run in variants.items()}
    print(f"\n{dtype} (other processes {load.share:.0%} CPU); first compiled call {compile_s:.1f} s "
          f"({new_tokens / compiled_first:.1f} tok/s)")
    for name, seconds in times.items():
        print(f"  {name:>28} {new_tokens / seconds:7.1f} tok/s ({times['engine (eager)'] / seconds:.2f}x the engine)")


def _compile_config():
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=True, dynamic=False)
    # generate compiles only on accelerators unless this (private) switch is set.
    config._compile_all_devices = True
    return config


if __name__ == "__main__":
    main()
