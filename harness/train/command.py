"""The command line's `redumix train grpo CONFIG`, `train compare RUN_DIR... --out FIG` and
`train entropy CONFIG MODEL... --out DIR`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

RESULTS_DIR = Path("results")
DEBUG_HELP = "on an error, show the traceback above its one-line message (also REDUMIX_DEBUG=1)"


def add_parser(sub) -> argparse.ArgumentParser:
    """Add `train` (with its `grpo`, `compare` and `entropy` subcommands) to the command line's subcommands."""
    train = sub.add_parser("train", help="train a model with reinforcement learning on the environments' verifiers "
                                         "(train grpo, train compare, train entropy)")
    kinds = train.add_subparsers(dest="train_command", required=True)
    grpo = kinds.add_parser("grpo", help="GRPO (TRL's GRPOTrainer) with discrete or mixture-of-tokens (MoT-G) "
                                         "rollouts, into a new model folder")
    grpo.add_argument("config", metavar="CONFIG", help="training config (YAML), e.g. configs/rl-discrete.yaml")
    grpo.add_argument("--out", help="folder for the new model (default: the config's `out`, else "
                                    "results/<config name>); the same command resumes an interrupted run there")
    grpo.add_argument("--force", action="store_true", help="if OUT holds a model or other files, move them to "
                                                           "OUT/replaced-<time>/ and train afresh")
    grpo.add_argument("--keep-checkpoints", action="store_true",
                      help="leave OUT/checkpoints/ in place once the model is saved")
    grpo.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    grpo.add_argument("--verbose", action="store_true",
                      help="also show what transformers and huggingface_hub print (hidden by default)")
    grpo.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    grpo.set_defaults(handler=run_command)
    compare = kinds.add_parser("compare", help="the reward curves of GRPO runs in one figure (PNG), e.g. discrete "
                                               "and mixture rollouts side by side")
    compare.add_argument("run_dir", nargs="+", metavar="RUN_DIR",
                         help="a folder `train grpo` wrote (a run still training: its newest checkpoint)")
    compare.add_argument("--out", required=True, help="the figure to write, e.g. results/rl-rewards.png")
    compare.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    compare.set_defaults(handler=compare_command)
    entropy = kinds.add_parser("entropy", help="hidden-state and next-token entropy along the thinking of models' "
                                               "rollouts on a training config's held-out problems (CSV and PNG)")
    entropy.add_argument("config", metavar="CONFIG", help="training config: its held-out problems (eval.seeds) and "
                                                          "its rollout (discrete or mixture), e.g. "
                                                          "configs/rl-mixture.yaml")
    entropy.add_argument("models", nargs="+", metavar="MODEL",
                         help="a model or model folder, or LABEL=MODEL, e.g. base=smollm2-135m results/rl-mixture")
    entropy.add_argument("--out", required=True, help="folder for thinking_entropy.csv and thinking_entropy.png")
    entropy.add_argument("--n", type=int, default=16, help="held-out problems (the first N; default 16)")
    entropy.add_argument("--seed", type=int, default=0, help="seed of the rollouts' generators (default 0)")
    entropy.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    entropy.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    entropy.set_defaults(handler=entropy_command)
    return train


def entropy_command(args: argparse.Namespace) -> int:
    from harness.cli import _set_threads
    from harness.train.config import load_train_config
    from harness.train.entropy_probe import parse_model, probe_models, summary, write_probe

    config = load_train_config(args.config)
    models = [parse_model(text) for text in args.models]
    if args.n < 1:
        raise ValueError(f"--n (={args.n}) must be at least 1")
    _set_threads(args.threads)
    rows = probe_models(config, models, args.n, args.seed)
    rollout = config.rollout.kind + (f" ({config.rollout.mix})" if config.rollout.mix else "")
    out = write_probe(rows, args.out, f"{rollout} rollouts on {args.n} held-out problems of {config.name}")
    for label, values in summary(rows).items():
        print(f"{label}: {values['thinking_steps']:.0f} thinking steps, mean hidden-state entropy "
              f"{values['hidden_entropy']:.3f}, next-token entropy {values['token_entropy']:.3f}, effective tokens "
              f"{values['effective_tokens']:.2f}")
    print(f"written: {out / 'thinking_entropy.csv'}, {out / 'thinking_entropy.png'}")
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from harness.train.compare import compare_runs

    runs = compare_runs(args.run_dir, args.out)
    for folder, run in zip(args.run_dir, runs, strict=True):
        rewards = [row["reward"] for row in run.rows]
        state = "" if run.finished else ", unfinished (its newest checkpoint)"
        print(f"{folder}: {run.label}, {len(run.rows)} steps{state}, mean reward {rewards[0]:.3f} -> "
              f"{rewards[-1]:.3f}")
    print(f"figure: {args.out}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    from harness.cli import _set_threads
    from harness.train.config import load_train_config

    config = load_train_config(args.config)  # checked in full before torch threads or any model
    out = Path(args.out) if args.out else Path(config.out) if config.out else RESULTS_DIR / config.name
    _set_threads(args.threads)
    from harness.train.run import train_grpo

    try:
        summary = train_grpo(config, out, source=args.config, force=args.force,
                             keep_checkpoints=args.keep_checkpoints)
    except KeyboardInterrupt:
        from harness.distill.out_folder import interrupted_message

        print(interrupted_message(out), file=sys.stderr)
        return 130
    rewards = (f"{summary.first_reward:.3f} -> {summary.last_reward:.3f}" if summary.first_reward is not None
               else "not logged")
    resumed = f", resumed at step {summary.resumed_from}" if summary.resumed_from is not None else ""
    print(f"trained {summary.base_model} with GRPO ({summary.rollout} rollouts) on {summary.problems} problems: "
          f"{summary.steps} steps{resumed}, mean reward {rewards}, {summary.seconds:.1f} s")
    print(f"model: {summary.out} (training_log.csv, training_curve.png beside it)")
    print(f"use it: redumix run --model {shlex.quote(str(summary.out))} --env ENV ...")
    return 0


def context(args: argparse.Namespace):
    """The settings and inputs `redumix train grpo` errors name."""
    from harness.cli_errors import Context

    if args.train_command == "compare":
        return Context(inputs=f"RUN_DIR {' '.join(args.run_dir)}", memory_hint="compare fewer runs at once")
    if args.train_command == "entropy":
        return Context(settings=f"the device and dtype of CONFIG {args.config}",
                       inputs=f"CONFIG {args.config} or MODEL {' '.join(args.models)}",
                       memory_hint="lower --n or the config's rollout.max_new_tokens")
    return Context(settings=f"the model, device and dtype of CONFIG {args.config}",
                   inputs=f"CONFIG {args.config} or its model",
                   memory_hint="lower grpo.prompts_per_step or grpo.group_size (raise grpo.grad_accum to keep the "
                               "batch), or rollout.max_new_tokens, or add grpo.lora")
