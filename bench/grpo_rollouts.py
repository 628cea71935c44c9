"""Discrete GRPO rollouts: TRL's generation (transformers' `generate`, as GRPOTrainer calls it
without vLLM) against our engine (`harness.engine.lockstep.decode` with the `sample` decoder).

Run on demand: `python bench/grpo_rollouts.py` (default: configs/rl-discrete.yaml's problems and
sampling, 2 prompts x 4 and x 8 completions). Both paths decode the same group of completions
of the config's first training prompts, alternating, in one process, on the model loaded as the
trainer loads it (plain kernels), twice: stopping a row at EOS or after max_new_tokens, as in
training (`EOS`: the two paths sample different completions, so their lengths differ), and
with every row running to max_new_tokens (`budget`: the same work on both paths). Printed
per group size and mode: the median seconds of the repeats, new tokens per second, the
engine's speed-up over generate (generate s / engine s), and the other processes' share of
the CPU.
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
from harness.engine.lockstep import decode  # noqa: E402
from harness.engine.models import load_model  # noqa: E402
from harness.engine.prompts import encode, render_chat  # noqa: E402
from harness.train.config import load_train_config  # noqa: E402
from harness.train.problems import training_problems  # noqa: E402


def group_prompts(config, tokenizer, prompts: int, group: int) -> list[list[int]]:
    """The first `prompts` training prompts as the trainer renders them, each repeated `group` times."""
    rows = []
    for problem in training_problems(config)[:prompts]:
        ids = encode(tokenizer, render_chat(tokenizer, [{"role": "user", "content": problem.user_prompt}]))
        rows.extend([ids] * group)
    return rows


def generate_like_trl(loaded, rows, config, seed: int, full: bool = False) -> tuple[float, int]:
    """GRPOTrainer's transformers path: left-padded prompts (pad id 0), its GenerationConfig;
    `full`: every row runs to max_new_tokens (EOS suppressed)."""
    from transformers import GenerationConfig

    tok, r = loaded.tokenizer, config.rollout
    width = max(len(ids) for ids in rows)
    input_ids = torch.tensor([[0] * (width - len(ids)) + ids for ids in rows])
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows])
    # TRL's eos set: every eos id the model's generation config declares, and the tokenizer's.
    declared = loaded.model.generation_config.eos_token_id
    declared = [] if declared is None else [declared] if isinstance(declared, int) else list(declared)
    eos = declared if tok.eos_token_id in declared else [tok.eos_token_id, *declared]
    generation = GenerationConfig(max_new_tokens=r.max_new_tokens, do_sample=True, pad_token_id=tok.pad_token_id,
                                  bos_token_id=tok.bos_token_id, eos_token_id=eos, temperature=r.temperature,
                                  top_p=r.top_p, top_k=r.top_k, min_p=None, repetition_penalty=1.0,
                                  disable_compile=True, min_new_tokens=r.max_new_tokens if full else 0)
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.no_grad():
        out = loaded.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=generation)
    seconds = time.perf_counter() - start
    completions = out[:, width:]
    ended = torch.isin(completions, torch.tensor(eos))
    lengths = torch.where(ended.any(dim=1), ended.int().argmax(dim=1) + 1, completions.shape[1])
    return seconds, int(lengths.sum())


def engine_sample(loaded, rows, config, seed: int, full: bool = False) -> tuple[float, int]:
    r = config.rollout
    decoder = get_decoder("sample", temperature=r.temperature, top_p=r.top_p, top_k=r.top_k)
    rngs = [torch.Generator().manual_seed(seed * 10_007 + i) for i in range(len(rows))]
    start = time.perf_counter()
    results = decode(loaded, [rows], decoder, max_new_tokens=r.max_new_tokens, rngs=rngs,
                     eos_token_ids=[] if full else None)
    return time.perf_counter() - start, sum(res.new_tokens for res in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/rl-discrete.yaml", help="a `redumix train grpo` config")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per group of completions (the step's)")
    parser.add_argument("--groups", default="4,8", help="completions per prompt, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = load_train_config(args.config)
    # As the trainer loads it: without the engine's batch-invariant kernels.
    loaded = load_model(config.model, config.dtype, config.device, batch_invariant=False)
    print(f"model {config.model} {config.dtype} on {config.device}, {torch.get_num_threads()} threads; "
          f"{args.prompts} prompts of {args.config}, max_new_tokens {config.rollout.max_new_tokens}, "
          f"temperature {config.rollout.temperature:g}; medians of {args.repeats} repeats")
    print(f"{'group':>5} {'rows':>5} {'stop':>6} {'generate s':>11} {'tok/s':>7} {'engine s':>9} {'tok/s':>7} "
          f"{'engine speed-up':>16} {'other load':>11}")
    for group in [int(g) for g in args.groups.split(",")]:
        rows = group_prompts(config, loaded.tokenizer, args.prompts, group)
        generate_like_trl(loaded, rows[:1], config, 0)  # warm-up
        engine_sample(loaded, rows[:1], config, 0)
        for full in (False, True):
            times: dict[str, list[tuple[float, int]]] = {"generate": [], "engine": []}
            loads = []
            for repeat in range(args.repeats):
                with OtherLoad() as load:
                    times["generate"].append(generate_like_trl(loaded, rows, config, repeat, full))
                    times["engine"].append(engine_sample(loaded, rows, config, repeat, full))
                loads.append(load.share)
            seconds = {k: statistics.median(s for s, _ in v) for k, v in times.items()}
            rate = {k: sum(n for _, n in v) / sum(s for s, _ in v) for k, v in times.items()}
            stop = "budget" if full else "EOS"
            print(f"{group:>5} {len(rows):>5} {stop:>6} {seconds['generate']:>11.2f} {rate['generate']:>7.1f} "
                  f"{seconds['engine']:>9.2f} {rate['engine']:>7.1f} {seconds['generate'] / seconds['engine']:>15.2f}x "
                  f"{max(loads):>10.0%}", flush=True)


if __name__ == "__main__":
    main()
