"""The `redumix` command line."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shlex
import sys
import traceback
from datetime import datetime
from pathlib import Path

from decoders.registry import parse_key_values
from envs.answer import EXTRACTION_MODES
from harness.cli_errors import DEBUG_ENV, Context, describe
from harness.console import third_party_output
from harness.engine.dtype_choice import DTYPE_CHOICES
from harness.engine.models import DEFAULT_MODEL, EMBEDDED_MODELS
from harness.engine.prefix_cache import DEFAULT_BUDGET_MB as PREFIX_CACHE_MB
from harness.runs.signals import sigterm_as_interrupt

RESULTS_DIR = Path("results")
DTYPE_METAVAR = "{" + ",".join(DTYPE_CHOICES) + "}"
PREFIX_CACHE_HELP = (f"memory for decoded prompts' KV caches, so that prompts starting the same way (ReDuMix's "
                     f"stages, a greedy answer before them) prefill only what is new (default {PREFIX_CACHE_MB}; "
                     "0 turns it off)")
BATCH_INVARIANT_HELP = ("on (default for a new folder): every problem decodes to the same tokens whatever shares its "
                        "batch (batch size, other rows, prefix cache, threads, executor); off: the fastest kernels, "
                        "whose sums round differently from batch to batch. A folder being resumed keeps its mode; "
                        "records and spec.json say which mode made them")
# The commands that load models or do work; `redumix lm-eval` takes --verbose too (see main).
VERBOSE_COMMANDS = ("run", "sweep", "report", "distill", "serve")
DEBUG_HELP = (f"on an error, show the traceback above its one-line message (also {DEBUG_ENV}=1)")
VERBOSE_HELP = ("also show what transformers and huggingface_hub print: their progress bars (loading weights, "
                "converting a GGUF) and logged warnings, hidden by default")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redumix", description="Mixture decoding with feedback on reasoning environments."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="decode an environment's problems with one decoder and score them")
    run.add_argument("--env", required=True, help="environment, e.g. basic_arithmetic (see `redumix list envs`)")
    run.add_argument("--env-config", action="append", metavar="KEY=VALUE",
                     help="task config override, e.g. --env-config max_terms=2 (repeatable)")
    run.add_argument("--decoder", default="greedy", help="decoder (see `redumix list decoders`)")
    run.add_argument("--decoder-config", action="append", metavar="KEY=VALUE",
                     help="decoder parameter, e.g. --decoder-config temperature=0.7 (repeatable)")
    run.add_argument("--feedback", metavar="POLICY",
                     help="feedback policy for decoders that use feedback (redumix): none, binary, verifier "
                          "or ground_truth; same as --decoder-config feedback=POLICY")
    run.add_argument("--model", default=DEFAULT_MODEL,
                     help=f"embedded model ({', '.join(EMBEDDED_MODELS)}), a local HF model folder, or a .gguf file")
    # No argparse `choices`: an unknown dtype is answered with a did-you-mean, before anything loads.
    run.add_argument("--dtype", default="auto", metavar=DTYPE_METAVAR,
                     help="auto (default): bfloat16 where the CPU (avx512_bf16 or amx_bf16) or GPU runs it "
                          "natively, since it halves the bytes read per step, else float32; a folder being resumed "
                          "keeps the dtype it was written in. Records name the dtype that ran")
    run.add_argument("--extraction", default="strict", choices=EXTRACTION_MODES,
                     help="strict: only <answer> tags count; flexible: fall back to an 'answer is' phrase, "
                          "then the last number (format_ok still records whether tags were used)")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    run.add_argument("--n", type=int, default=20, help="number of problems")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--max-new-tokens", type=int, default=256)
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--stop", action="append", metavar="TEXT",
                     help="stop string (repeatable; default </answer>); --stop '' disables")
    run.add_argument("--out", help="run folder (default results/<env>-<decoder>-<time>)")
    run.add_argument("--save-steps", action="store_true",
                     help="keep per-step arrays in each record (token ids, log-probs; for mixtures KL, JS, entropy)")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    run.add_argument("--prefix-cache-mb", type=int, default=PREFIX_CACHE_MB, metavar="MIB", help=PREFIX_CACHE_HELP)
    run.add_argument("--batch-invariant", metavar="on|off", help=BATCH_INVARIANT_HELP)
    run.add_argument("--chat-template-option", action="append", metavar="KEY=VALUE",
                     help="a variable for the model's chat template (repeatable), e.g. enable_thinking=false for "
                          "Qwen3; VALUE is read as JSON (true, 3, \"text\"), else as plain text")
    run.add_argument("--think-budget", type=int, metavar="N",
                     help="budget forcing: after N new tokens of thinking, </think> (<answer> on a model without "
                          "it) is forced in and the answer follows; any decoder (default: no budget)")
    run.set_defaults(handler=_cmd_run)

    harvest = sub.add_parser("harvest", help="write reflection-revision preference pairs from a ReDuMix run")
    harvest.add_argument("run_dir", metavar="RUN_DIR", help="folder of a run made with --decoder redumix")
    harvest.add_argument("--out", required=True, help="JSONL file to write (prompt/chosen/rejected per line)")
    harvest.add_argument("--force", action="store_true", help="replace --out if it exists")
    rule = harvest.add_mutually_exclusive_group()
    rule.add_argument("--only", choices=["improved"], default="improved",
                      help="improved (default): first attempt wrong, redo right")
    rule.add_argument("--all", action="store_true", help="every record whose redo differs from its first attempt")
    harvest.set_defaults(handler=_cmd_harvest)

    distill = sub.add_parser("distill", help="fine-tune the base model on a ReDuMix run's redos (GKD towards the "
                                             "mixture, or DPO), or on gold answers read with soft inputs (soft SFT), "
                                             "into a new model folder")
    distill.add_argument("source", metavar="SOURCE", nargs="?", help="a run or sweep folder made with --decoder "
                         "redumix, or a pairs file from `redumix harvest` (or --env instead, for soft-sft)")
    distill.add_argument("--out", required=True, help="folder for the new model (what `redumix run --model` loads)")
    distill.add_argument("--objective", default="gkd", help="gkd (default): distil the ReDuMix mixture of the base "
                         "model under x and x2 into the model reading x alone; dpo: TRL's DPO, redo over first "
                         "attempt; soft-sft: the answers' cross-entropy with soft inputs "
                         "alpha*E[gold] + (1-alpha)*(p @ E)")
    distill.add_argument("--env", help="soft-sft: train on the gold answers of this environment's problems instead "
                         "of SOURCE")
    distill.add_argument("--env-config", action="append", metavar="KEY=VALUE",
                         help="with --env: task config override (repeatable), as for `redumix run`")
    distill.add_argument("--env-seed", type=int, action="append", metavar="SEED",
                         help="with --env: problem seed to train on (repeatable; default 0); hold other seeds out")
    distill.add_argument("--n", type=int, help="with --env: problems per seed (default 64)")
    distill.add_argument("--model", help="base model to train (default: the one the pairs were decoded with)")
    distill.add_argument("--rule", help="which records of a run folder become pairs: improved (default: first "
                         "attempt wrong, redo right) or all (every redo that differs)")
    distill.add_argument("--lam", type=float, help="gkd: the teacher's weight on x for every pair, in [0, 1] "
                         "(default: each pair's own lambda; 0 distils the redo context x2 alone)")
    distill.add_argument("--beta", type=float, help="gkd: generalised JSD in [0, 1] (default 0: forward KL, the "
                         "seed's cross-entropy under the mixture; 1: reverse KL); dpo: KL strength (default 0.1)")
    soft = distill.add_argument_group("soft-sft", "the inputs' guidance weight alpha and how p is filtered")
    soft.add_argument("--guidance-start", type=float, help="alpha of the first step (default 1: teacher forcing)")
    soft.add_argument("--guidance-floor", type=float, help="alpha after the warm-up (default 0: the model's own "
                      "filtered distribution alone, as soft decoding feeds it)")
    soft.add_argument("--guidance-warmup", type=int, metavar="STEPS",
                      help="optimizer steps from start to floor (default: half of the run's steps)")
    soft.add_argument("--guidance-schedule", help="linear (default) or cosine")
    soft.add_argument("--clamp-gold", action="store_true", help="raise the gold token's weight in p to at least "
                      "alpha (the model's own p where it already gives it that much) instead of mixing")
    soft.add_argument("--soft-grad", help="stop (default: p is a given input, as when decoding) or flow (later "
                      "losses also reshape the distributions that made their inputs)")
    soft.add_argument("--temperature", type=float, help="p's temperature (default 0.6, as the soft decoders)")
    soft.add_argument("--top-k", type=int, help="p's top-k (default 30)")
    soft.add_argument("--top-p", type=float, help="p's top-p (default 0.95)")
    soft.add_argument("--min-p", type=float, help="p's min-p (default 0.001)")
    soft.add_argument("--max-topk", type=int, help="tokens mixed into each input at most (default 10)")
    distill.add_argument("--lora", action="store_true",
                         help="train LoRA adapters (merged into the saved model) instead of every weight")
    distill.add_argument("--lora-r", type=int, help="adapter rank (default 16)")
    distill.add_argument("--lora-alpha", type=float, help="adapter scale (default 32)")
    distill.add_argument("--epochs", type=float, default=1.0, help="passes over the pairs (default 1)")
    distill.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    distill.add_argument("--lr", type=float, help="peak learning rate, decaying linearly (default: gkd 2e-5, "
                         "2e-4 with --lora; dpo 1e-6, 5e-6 with --lora)")
    distill.add_argument("--batch-size", type=int, default=4, help="pairs per forward pass (default 4)")
    distill.add_argument("--grad-accum", type=int, default=1,
                         help="batches per optimizer step (default 1; effective batch = batch size x this)")
    distill.add_argument("--save-steps", type=int, default=50,
                         help="a checkpoint every N optimizer steps, to resume from after an interrupt (default 50)")
    distill.add_argument("--keep-checkpoints", action="store_true",
                         help="leave OUT/checkpoints/ in place once the model is saved")
    distill.add_argument("--seed", type=int, default=0, help="seed (same seed and settings: same weights)")
    distill.add_argument("--dtype", default="float32", metavar=DTYPE_METAVAR,
                         help="float32 (default): training in pure bfloat16 keeps the weights and the optimizer's "
                              "state in bf16, whose small updates are lost to rounding; auto: bfloat16 where the "
                              "hardware runs it natively, else float32")
    distill.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    distill.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    distill.add_argument("--force", action="store_true", help="if OUT holds a model or other files, move them to "
                         "OUT/replaced-<time>/ and train afresh")
    distill.set_defaults(handler=_cmd_distill)

    sweep = sub.add_parser("sweep", help="run a config's grid of models, envs, decoders, lambdas, seeds and "
                                         "feedback policies into one resumable folder, then write its report")
    sweep.add_argument("config", metavar="CONFIG", help="sweep config (YAML), e.g. configs/quick.yaml")
    sweep.add_argument("--out", help="sweep folder (default: the config's `out`, else results/<config name>)")
    sweep.add_argument("--force-new", action="store_true",
                       help="if the folder holds another sweep, move its files to replaced-<time>/ and start afresh")
    sweep.add_argument("--no-report", action="store_true", help="skip the report (write it later: redumix report)")
    sweep.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    sweep.add_argument("--prefix-cache-mb", type=int, default=PREFIX_CACHE_MB, metavar="MIB", help=PREFIX_CACHE_HELP)
    sweep.add_argument("--batch-invariant", metavar="on|off",
                       help=BATCH_INVARIANT_HELP + "; overrides the config's batch_invariant")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="where the units run: local (this process, the default) or ray (actors of a Ray "
                            "cluster, or of a local Ray instance without --address; needs pip install \".[ray]\")")
    sweep.add_argument("--address", metavar="ADDR",
                       help="with --executor ray: the cluster to join, auto or HOST:PORT (default: start a local "
                            "Ray instance on this machine's CPUs and stop it at the end)")
    sweep.add_argument("--ray-actors", type=int, metavar="N",
                       help="with --executor ray: number of actors (default: one per (model, env, seed), at most one "
                            "per CPU)")
    sweep.add_argument("--ray-cpus-per-actor", type=float, metavar="N",
                       help="with --executor ray: CPUs, and torch threads, per actor (default: Ray's CPUs / actors)")
    sweep.set_defaults(handler=_cmd_sweep)

    report = sub.add_parser("report", help="write summary.csv, samples.csv and report.html of a sweep or run folder, "
                                           "or of several together (--out)")
    report.add_argument("run_dir", metavar="RUN_DIR", nargs="+",
                        help="folder written by `redumix sweep` or `redumix run`; with several, each is compared with "
                             "the first on the problems both answered")
    report.add_argument("--out", metavar="DIR",
                        help="write the report here instead of into RUN_DIR (needed for several runs; the run folders "
                             "are left as they are)")
    report.add_argument("--ks", metavar="K,K,...",
                        help="the k of the pass@k and maj@k columns of methods that draw N answers per problem "
                             "(self-consistency, best-of-N), e.g. 1,2,4,8 (default: the powers of two up to N, and N)")
    report.set_defaults(handler=_cmd_report)

    # Listed for --help only: main() hands everything after `lm-eval` to lm-eval's own parser.
    sub.add_parser("lm-eval", add_help=False,
                   help="lm-evaluation-harness's CLI with the redumix model and the rg_* tasks, e.g. "
                        "redumix lm-eval run --model redumix --tasks rg_easy --apply_chat_template")

    from harness.serve.command import add_parser as add_serve_parser

    add_serve_parser(sub)

    from harness.train.command import add_parser as add_train_parser

    add_train_parser(sub)

    from harness.analysis.dera_check_command import add_parser as add_dera_check_parser

    add_dera_check_parser(sub)

    lister = sub.add_parser("list", help="list available environments, decoders or models")
    lister.add_argument("what", choices=["envs", "decoders", "models"])
    lister.add_argument("--format", choices=["grouped", "names"], default=None,
                        help="envs: `grouped` shows each environment family (what it is, where it comes from) "
                             "with its environments; `names` prints only the names, one a line. Default: grouped "
                             "on a terminal, names when piped (for scripts)")
    lister.set_defaults(handler=_cmd_list)

    for name in VERBOSE_COMMANDS:
        sub.choices[name].add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    # Before or after the command; SUPPRESS: a command's default does not undo `redumix --debug CMD`.
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    for command in sub.choices.values():
        if command.add_help:
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads (={threads}) must be 1 or more (CPU threads torch may use); leave it out for "
                         "torch's own choice")
    from harness.runs.limits import MAX_THREADS_PER_CPU

    cpus = os.cpu_count() or 1
    if threads > MAX_THREADS_PER_CPU * cpus:
        raise ValueError(f"--threads (={threads}) is more than {MAX_THREADS_PER_CPU} per CPU of this machine "
                         f"({cpus} CPUs): the extra threads only wait, and the system may refuse to start them; "
                         f"give at most {MAX_THREADS_PER_CPU * cpus}, or leave it out for torch's own choice")
    import torch

    torch.set_num_threads(threads)


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.engine.prompts import parse_chat_template_options
    from harness.runs.runner import RunSpec, run

    _set_threads(args.threads)
    stop = [s for s in args.stop if s] if args.stop is not None else ["</answer>"]
    decoder_config = parse_key_values(args.decoder_config, "--decoder-config")
    if args.feedback is not None:
        from envs.feedback import check_policy_name

        check_policy_name(args.feedback)
        given = decoder_config.get("feedback", args.feedback)
        if given != args.feedback:
            raise ValueError(f"--feedback (={args.feedback!r}) and --decoder-config feedback={given} disagree; "
                             "give the feedback policy once")
        decoder_config["feedback"] = args.feedback
    env_config = parse_key_values(args.env_config, "--env-config")
    if "extraction" in env_config:
        raise ValueError(f"--env-config extraction={env_config['extraction']} is not a task setting; the answer "
                         "extraction is --extraction")
    spec = RunSpec(
        env=args.env,
        decoder=args.decoder,
        n=args.n,
        seed=args.seed,
        model=args.model,
        env_config=env_config,
        decoder_config=decoder_config,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        stop=stop,
        dtype=args.dtype,
        device=args.device,
        extraction=args.extraction,
        save_steps=args.save_steps,
        batch_invariant=_mode_flag(args.batch_invariant),
        chat_template_options=parse_chat_template_options(args.chat_template_option),
        think_budget=args.think_budget,
    )
    out = Path(args.out) if args.out else RESULTS_DIR / f"{args.env}-{args.decoder}-{datetime.now():%Y%m%d-%H%M%S}"
    args.out_dir = out  # for the message if the run is interrupted
    summary = run(spec, out, prefix_cache_mb=args.prefix_cache_mb)
    total = summary.n + summary.skipped
    print(f"accuracy: {summary.correct}/{summary.n} = {summary.accuracy:.3f}"
          + (f" (new problems only; {summary.skipped} already recorded)" if summary.skipped else ""))
    for line in summary.notes:
        print(f"  {line}")
    for variant, (right, seen) in (summary.by_variant or {}).items():
        print(f"  {variant}: {right}/{seen} = {right / seen:.3f}")
    print(f"throughput: {summary.new_tokens} tokens in {summary.decode_s:.1f} s = {summary.tokens_per_s:.1f} tokens/s")
    unit = "records" if summary.by_variant is not None else "problems"
    print(f"results: {summary.out / 'samples.jsonl'} ({total} {unit})")
    return 0


def _cmd_harvest(args: argparse.Namespace) -> int:
    from harness.analysis.harvest import harvest

    rule = "all" if args.all else args.only
    summary = harvest(args.run_dir, args.out, rule, force=args.force)
    print(f"{summary.pairs} pairs ({rule}) from {summary.records} records "
          f"({summary.identical} skipped: redo identical to the first attempt) -> {args.out}")
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    from harness.distill import DistillOptions, distill

    options = DistillOptions(
        objective=args.objective, model=args.model, lam=args.lam, beta=args.beta, lora=args.lora,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, epochs=args.epochs, max_steps=args.max_steps, lr=args.lr,
        batch_size=args.batch_size, grad_accum=args.grad_accum, save_steps=args.save_steps, seed=args.seed,
        dtype=args.dtype, device=args.device, rule=args.rule, force=args.force,
        keep_checkpoints=args.keep_checkpoints, guidance_start=args.guidance_start,
        guidance_floor=args.guidance_floor, guidance_warmup=args.guidance_warmup,
        guidance_schedule=args.guidance_schedule, clamp_gold=args.clamp_gold, soft_grad=args.soft_grad,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, max_topk=args.max_topk,
    ).resolved()  # every flag checked before torch threads or anything else is touched
    source = _distill_source(args)
    _set_threads(args.threads)
    try:
        summary = distill(source, args.out, options)
    except KeyboardInterrupt:
        from harness.distill.out_folder import interrupted_message

        print(interrupted_message(args.out), file=sys.stderr)
        return 130
    losses = (f"{summary.first_loss:.4f} -> {summary.last_loss:.4f}" if summary.first_loss is not None
              else "not logged")
    resumed = f", resumed at step {summary.resumed_from}" if summary.resumed_from is not None else ""
    print(f"distilled ({summary.objective}) {summary.base_model} on {summary.pairs} pairs"
          + (f" ({sum(summary.skipped.values())} left out)" if summary.skipped else "")
          + f": {summary.steps} steps{resumed}, loss {losses}, {summary.seconds:.1f} s")
    out, base = shlex.quote(str(summary.out)), shlex.quote(summary.base_model)
    print(f"model: {summary.out}")
    print(f"use it: redumix run --model {out} --env ENV ...")
    print(f"  or realign at decoding time (DeRa): redumix run --model {base} --decoder dera "
          f"--decoder-config aligned={out} --env ENV ...")
    return 0


def _distill_source(args: argparse.Namespace):
    """SOURCE, or the `EnvSource` of --env and its flags; exactly one of them."""
    from harness.distill.env_answers import EnvSource, check_env_source

    env_flags = [flag for flag, value in (("--env-config", args.env_config), ("--env-seed", args.env_seed),
                                          ("--n", args.n)) if value is not None]
    if args.env is None:
        if env_flags:
            raise ValueError(f"{env_flags[0]} sets the problems of --env; add --env NAME, or leave {env_flags[0]} out")
        if args.source is None:
            raise ValueError("give SOURCE (a run folder or pairs file), or --env NAME with --objective soft-sft to "
                             "train on an environment's gold answers")
        return args.source
    if args.source is not None:
        raise ValueError(f"give SOURCE (={args.source!r}) or --env (={args.env!r}), not both")
    source = EnvSource(env=args.env, config=parse_key_values(args.env_config, "--env-config"),
                       seeds=tuple(args.env_seed or (0,)), n=args.n if args.n is not None else 64)
    check_env_source(source)
    return source


def _mode_flag(value: str | None) -> bool | None:
    """--batch-invariant on|off (None when not given: on, or a resumed folder's mode)."""
    from harness.engine.batch_invariance import parse_mode

    return None if value is None else parse_mode(value)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from harness.runs.sweep_config import load_config

    # Checked in full before anything is imported for decoding or written.
    config = load_config(args.config)
    out = Path(args.out or config.out or RESULTS_DIR / config.name).expanduser()  # `out: ~/results/x` in YAML
    if args.batch_invariant is not None:
        config = dataclasses.replace(config, batch_invariant=_mode_flag(args.batch_invariant))

    executor = _sweep_executor(args)

    from harness.runs.sweep import run_sweep

    _set_threads(args.threads)
    args.out_dir = out
    result = run_sweep(config, out, force_new=args.force_new, write_report=not args.no_report,
                       prefix_cache_mb=args.prefix_cache_mb, executor=executor)
    print(f"records: {result.total} ({result.new} new, {result.total - result.new} already recorded)")
    t = result.timings
    print(f"time: {t['total_s']:.1f} s (model load {t['load_s']:.1f} s, stages 1-3 {t['stage_s']:.1f} s, "
          f"decoding {t['decode_s']:.1f} s, report {t['report_s']:.1f} s)")
    if result.report is not None:
        _print_report(result.report)
    print(f"results: {result.out / 'samples.jsonl'}")
    if result.failed_units:
        missing = sum(f["missing"] for f in result.failed_units)
        print(f"failed units: {len(result.failed_units)} ({missing} records missing; run the same command to retry "
              "them)", file=sys.stderr)
        for failed in result.failed_units:
            print(f"  {failed['label']}: {failed['error']}", file=sys.stderr)
        return 1
    return 0


def _sweep_executor(args: argparse.Namespace):
    """What runs the sweep's units, as `run_sweep` takes it; --executor ray without Ray is refused
    here, before anything is written."""
    ray_flags = [flag for flag, value in (("--address", args.address), ("--ray-actors", args.ray_actors),
                                          ("--ray-cpus-per-actor", args.ray_cpus_per_actor)) if value is not None]
    if args.executor == "local":
        if ray_flags:
            raise ValueError(f"{', '.join(ray_flags)} only apply with --executor ray")
        from harness.runs.executor import LocalExecutor

        return LocalExecutor
    for flag, value in (("--ray-actors", args.ray_actors), ("--ray-cpus-per-actor", args.ray_cpus_per_actor)):
        if value is not None and value <= 0:
            raise ValueError(f"{flag} (={value:g}) must be more than 0")
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ValueError('--executor ray needs Ray, which is not installed; install it with: pip install ".[ray]"')
    if args.address:
        from harness.runs.ray_address import check_reachable

        check_reachable(args.address)  # Ray itself would retry for minutes
    from harness.runs.ray_executor import RayExecutor

    return functools.partial(RayExecutor, address=args.address, actors=args.ray_actors,
                             cpus_per_actor=args.ray_cpus_per_actor)


def _cmd_report(args: argparse.Namespace) -> int:
    if args.out is None and len(args.run_dir) > 1:
        raise ValueError(f"RUN_DIR (={' '.join(args.run_dir)!r}) names {len(args.run_dir)} runs; a report over several "
                         "runs needs a folder of its own: add --out DIR (e.g. --out results/compare)")
    from harness.analysis.metrics import parse_ks

    ks = None if args.ks is None else parse_ks(args.ks)
    if args.out is None:
        from harness.analysis.report import write_report

        _print_report(write_report(args.run_dir[0], ks=ks))
    else:
        from harness.analysis.joined_report import write_joined_report

        _print_report(write_joined_report(args.run_dir, args.out, ks=ks))
    return 0


def _print_report(report) -> None:
    from harness.analysis.report import format_summary

    print(format_summary(report.summary))
    for line in report.notes:
        print(f"note: {line}")
    print(f"report: {report.html}")
    tables = [report.summary_csv, report.samples_csv, report.samples_parquet, report.comparisons_csv,
              report.cross_runs_csv]
    print(f"tables: {', '.join(str(t) for t in tables if t is not None)}")


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "envs":
        from envs import env_families

        families = env_families()
        grouped = args.format == "grouped" or (args.format is None and sys.stdout.isatty())
        if grouped:
            print("\n".join(_env_family_lines(families)))
            return 0
        names = sorted(env for family in families for env in family.envs)
    elif args.what == "decoders":
        from decoders import available_decoders

        names = available_decoders()
    else:
        names = list(EMBEDDED_MODELS)
    print("\n".join(names))
    return 0


def _env_family_lines(families) -> list[str]:
    """`redumix list envs --format grouped`: a heading line per family, then its environments indented."""
    lines = []
    for family in families:
        count = f"{len(family.envs)} environment{'' if len(family.envs) == 1 else 's'}"
        about = f": {family.description}" if family.description else ""
        lines.append(f"{family.name} ({family.origin}, {count}){about}")
        lines.extend(f"  {env}" for env in family.envs)
    return lines


def _fix_hash_seed(argv: list[str] | None) -> None:
    """Re-run under PYTHONHASHSEED=0: some reasoning-gym tasks iterate over sets of
    strings, so without a fixed hash seed their problems differ between processes."""
    if os.environ.get("PYTHONHASHSEED") == "0" or argv is not None:
        return
    env = dict(os.environ, PYTHONHASHSEED="0")
    os.execve(sys.executable, [sys.executable, "-m", "harness.cli", *sys.argv[1:]], env)


def main(argv: list[str] | None = None) -> int:
    _fix_hash_seed(argv)
    raw = sys.argv[1:] if argv is None else argv
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if raw[:1] == ["lm-eval"]:
        from harness.lmeval.cli import main as lm_eval_main

        # Ours, not lm-eval's (whose parser would refuse them): taken out before lm-eval parses the rest.
        lm_eval_args = [arg for arg in raw[1:] if arg not in ("--verbose", "--debug")]
        debug = debug or "--debug" in raw[1:]
        context = Context(settings="the lm-eval arguments (--model_args, --tasks, --device)",
                          inputs="the lm-eval arguments' files",
                          memory_hint="lower --batch_size or --limit, or use a smaller model")
        try:
            with third_party_output(verbose="--verbose" in raw[1:]):
                return lm_eval_main(lm_eval_args)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as err:  # each kind: one line and its exit code (cli_errors)
            return _failed("lm-eval", err, context, debug)
    args = build_parser().parse_args(argv)
    debug = debug or getattr(args, "debug", False)
    try:
        # Commands without --verbose (list, harvest) load no models: nothing to keep quiet.
        with sigterm_as_interrupt(), third_party_output(verbose=getattr(args, "verbose", True)):
            return args.handler(args)
    except KeyboardInterrupt:
        print(interrupted_message(getattr(args, "out_dir", None)), file=sys.stderr)
        return 130
    except Exception as err:  # each kind: one line and its exit code (cli_errors)
        return _failed(args.command, err, _context(args), debug)


def _failed(command: str, err: Exception, context: Context, debug: bool) -> int:
    """Say what failed in one line (a bug or --debug: after its traceback); the exit code of its kind."""
    failure = describe(err, context)
    if debug or failure.is_bug:
        traceback.print_exception(err)
    print(f"redumix {command}: {'' if failure.is_bug else 'error: '}{failure.message}", file=sys.stderr)
    return failure.code


def _context(args: argparse.Namespace) -> Context:
    """The settings and inputs of the command in `args`, as its error messages name them."""
    kept = functools.partial(records_kept, getattr(args, "out_dir", None))
    if args.command == "run":
        return Context(settings=f"--model {args.model}, --device {args.device}, --dtype {args.dtype}",
                       inputs=f"--model {args.model} or the run folder {args.out or ''}".rstrip(),
                       memory_hint="lower --batch-size or --max-new-tokens, or use a smaller --model", kept=kept)
    if args.command == "sweep":
        address = f" --address {args.address}" if args.address else " (a local Ray instance)"
        ray = f"--executor ray{address}" if args.executor == "ray" else ""
        return Context(settings=f"the models, device and dtype of CONFIG {args.config}", ray_settings=ray,
                       inputs=f"CONFIG {args.config}, its models or its folder",
                       memory_hint="lower batch_size or max_new_tokens in the config, or use smaller models",
                       kept=kept)
    if args.command == "distill":
        return Context(settings=f"--model {args.model or '(the base model of SOURCE)'}, --device {args.device}, "
                                f"--dtype {args.dtype}",
                       inputs=(f"SOURCE {args.source}" if args.source else f"--env {args.env}") + " or --model",
                       memory_hint="lower --batch-size (raise --grad-accum to keep the effective batch), or add "
                                   "--lora")
    if args.command == "train":
        from harness.train.command import context

        return context(args)
    if args.command == "serve":
        return Context(settings=f"--model {args.model}, --device {args.device}, --dtype {args.dtype}",
                       inputs=f"--model {args.model}", memory_hint="lower --batch-size or --max-new-tokens, or use a "
                                                                   "smaller --model")
    if args.command in ("report", "harvest", "dera-check"):
        folders = args.run_dir if isinstance(args.run_dir, list) else [args.run_dir]
        return Context(inputs=f"RUN_DIR {' '.join(folders)}", memory_hint="report fewer or smaller folders at once")
    return Context()


def records_kept(out: Path | None) -> int | None:
    """How many records the run or sweep folder `out` holds that count; None when it cannot be read."""
    if out is None:
        return None
    from harness.runs.record_grid import grid_of
    from harness.runs.store import RunDir

    store = RunDir(out)
    try:
        return len(store.read(grid_of(store.read_spec())).records)
    except (OSError, ValueError):
        return None


def interrupted_message(out: Path | None) -> str:
    """'interrupted: 12 records kept in results/quick; run the same command to resume'."""
    if out is None:
        return "interrupted"
    kept = records_kept(out)
    if kept is None:
        return f"interrupted; run the same command to resume {out}"
    return f"interrupted: {kept} records kept in {out}; run the same command to resume"


if __name__ == "__main__":
    sys.exit(main())
