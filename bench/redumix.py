"""ReDuMix stage 4 vs greedy decoding: time per generated token, side by side in one run.

Run on demand (`python bench/redumix.py`). Greedy decodes the original context x
(~100 tokens); stage 4 decodes x and the reflective context x2 (~600 tokens) in
lockstep with lambda = 0.5. Everything runs with EOS disabled for the same number
of new tokens, alternating, in one process; the table prints medians over the
repeats and each one's ratio to greedy, prefill included (and decode only):

- greedy: the engine on x, cold (no prefix cache);
- hf cfg: transformers' `generate(guidance_scale=0.5, negative_prompt_ids=x2)`, its
  two-context decode (the same mixture: 0.5 log P(.|x) + 0.5 log P(.|x2));
- stage 4 cold: the engine on [x, x2] with no prefix cache (x and x2 prefilled in full),
  both contexts advanced in one forward per step;
- stage 4 split: the same, each context advanced as a batch of its own;
- stage 4: the engine as a ReDuMix run uses it: the prefix cache as stages 1-3 leave it
  (x, and x2 up to its last user turn, already decoded), joint or split as the engine
  decides for the batch size.

The engine runs batch-invariant (the default); "greedy off" and "stage 4 off" are the same
calls with invariance switched off, and transformers' CFG runs on the plain model.
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
from harness.engine.batch_invariance import batch_invariance  # noqa: E402
from harness.engine.lockstep import decode  # noqa: E402
from harness.engine.models import load_model  # noqa: E402
from harness.engine.prefix_cache import PrefixCache  # noqa: E402
from harness.engine.prompts import encode, render_chat  # noqa: E402

ATTEMPT = "First I add the two numbers, then I check the sum by counting on my fingers. "
FEEDBACK = "Your answer is incorrect. The expected answer is: 42"
REFLECTION = "I added the tens but forgot to carry the one, so the sum was off by ten. "
REDO = "Now redo the task."
LAMBDA = 0.5


def reflective_contexts(tokenizer, xs: list[list[int]], target_tokens: int = 600) -> tuple[list, list]:
    """(x2, x2 before its last user turn) for each x: [x, y1, feedback, reflection, redo]
    as chat turns, ~target_tokens long; the shorter form is what stage 3 leaves decoded."""
    rows, stage3 = [], []
    for i, x in enumerate(xs):
        user = tokenizer.decode(x, skip_special_tokens=True)
        repeats = 1
        while True:
            turns = [
                {"role": "user", "content": user},
                {"role": "assistant", "content": ATTEMPT * repeats},
                {"role": "user", "content": f"{FEEDBACK}\n\nReflect on the attempt above."},
                {"role": "assistant", "content": REFLECTION * repeats},
            ]
            ids = encode(tokenizer, render_chat(tokenizer, [*turns, {"role": "user", "content": REDO}]))
            if len(ids) >= target_tokens - 40 + i % 40 or repeats > 100:
                rows.append(ids)
                # Stage 3's prompt and the reflection it decoded.
                stage3.append(encode(tokenizer, render_chat(tokenizer, turns[:3]) + turns[3]["content"]))
                break
            repeats += 1
    return rows, stage3


def timed(loaded, contexts, decoder, new_tokens, **kwargs) -> tuple[float, float]:
    """(total seconds, prefill seconds) of one engine call."""
    start = time.perf_counter()
    out = decode(loaded, contexts, decoder, max_new_tokens=new_tokens, eos_token_ids=[], **kwargs)
    total = time.perf_counter() - start
    assert all(r.new_tokens == new_tokens for r in out)
    return total, out[0].prefill_s


def timed_hf_cfg(loaded, xs, x2s, new_tokens) -> tuple[float, float]:
    """(total seconds, prefill seconds) of transformers' classifier-free guidance decode."""
    tok = loaded.tokenizer
    enc = tok.pad({"input_ids": xs}, return_tensors="pt", padding=True).to(loaded.model.device)
    neg = tok.pad({"input_ids": x2s}, return_tensors="pt", padding=True).to(loaded.model.device)
    kwargs = dict(guidance_scale=LAMBDA, negative_prompt_ids=neg["input_ids"],
                  negative_prompt_attention_mask=neg["attention_mask"], do_sample=False,
                  pad_token_id=tok.pad_token_id)
    with torch.inference_mode():
        start = time.perf_counter()
        loaded.model.generate(**enc, max_new_tokens=1, min_new_tokens=1, **kwargs)
        first = time.perf_counter() - start
        start = time.perf_counter()
        out = loaded.model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
        total = time.perf_counter() - start
    assert out.shape[1] - enc["input_ids"].shape[1] == new_tokens
    return total, first  # the one-token call stands for its prefill


def timed_warm(loaded, xs, x2s, stage3s, decoder, new_tokens) -> tuple[float, float]:
    """Stage 4 with the prefix cache holding what stages 1 and 3 decoded (not timed)."""
    loaded.prefix_cache = PrefixCache()
    decode(loaded, [xs + stage3s], get_decoder("greedy"), max_new_tokens=1, eos_token_ids=[])
    try:
        return timed(loaded, [xs, x2s], decoder, new_tokens)
    finally:
        loaded.prefix_cache = None


def plain(run):
    """`run` with the model's batch invariance switched off for its duration."""
    def off(loaded, *args):
        with batch_invariance(loaded, False):
            return run(loaded, *args)
    return off


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--x2-tokens", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-hf-cfg", action="store_true", help="skip transformers' CFG (slow at large batches)")
    args = parser.parse_args()

    greedy, mix = get_decoder("greedy"), get_decoder("redumix", lam=LAMBDA)
    methods = {
        "greedy": lambda m, xs, x2s, s3: timed(m, [xs], greedy, args.new_tokens),
        "hf cfg": lambda m, xs, x2s, s3: timed_hf_cfg(m, xs, x2s, args.new_tokens),
        "stage 4 cold": lambda m, xs, x2s, s3: timed(m, [xs, x2s], mix, args.new_tokens, split_streams=False),
        "stage 4 split": lambda m, xs, x2s, s3: timed(m, [xs, x2s], mix, args.new_tokens, split_streams=True),
        "stage 4": lambda m, xs, x2s, s3: timed_warm(m, xs, x2s, s3, mix, args.new_tokens),
        "greedy off": plain(lambda m, xs, x2s, s3: timed(m, [xs], greedy, args.new_tokens)),
        "stage 4 off": plain(lambda m, xs, x2s, s3: timed_warm(m, xs, x2s, s3, mix, args.new_tokens)),
    }
    methods["hf cfg"] = plain(methods["hf cfg"])
    if args.no_hf_cfg:
        del methods["hf cfg"]
    print(f"{torch.get_num_threads()} threads, {args.new_tokens} new tokens, lambda {LAMBDA}, device {args.device}; "
          "ms per generated token (ratio to greedy), prefill included | decode only")
    for dtype in args.dtypes.split(","):
        loaded = load_model(args.model, dtype=dtype, device=args.device)
        for batch in [int(b) for b in args.batches.split(",")]:
            xs = prompts(loaded.tokenizer, batch)
            x2s, stage3s = reflective_contexts(loaded.tokenizer, xs, args.x2_tokens)
            timed(loaded, [xs[:1], x2s[:1]], mix, 4)  # warm-up
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
            loads = []
            for _ in range(args.repeats):
                with OtherLoad() as load:
                    for name, run in methods.items():
                        runs[name].append(run(loaded, xs, x2s, stage3s))
                loads.append(load.share)
            tokens = batch * args.new_tokens
            total = {n: 1000 * statistics.median(t for t, _ in r) / tokens for n, r in runs.items()}
            dec = {n: 1000 * statistics.median(t - p for t, p in r) / tokens for n, r in runs.items()}
            print(f"\n{dtype} batch {batch}: |x| {statistics.mean(map(len, xs)):.0f}, "
                  f"|x2| {statistics.mean(map(len, x2s)):.0f}, other processes {max(loads):.0%} CPU")
            for name in methods:
                print(f"  {name:>14} {total[name]:8.1f} ms ({total[name] / total['greedy']:4.2f}x) | "
                      f"{dec[name]:8.1f} ms ({dec[name] / dec['greedy']:4.2f}x)", flush=True)
            print(f"  off: stage 4 / greedy {total['stage 4 off'] / total['greedy off']:4.2f}x; cost of invariance "
                  f"(on / off): greedy {total['greedy'] / total['greedy off']:4.2f}x, stage 4 "
                  f"{total['stage 4'] / total['stage 4 off']:4.2f}x", flush=True)


if __name__ == "__main__":
    main()
