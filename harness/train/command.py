"""The command line's `redumix train grpo CONFIG`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

RESULTS_DIR = Path("results")
DEBUG_HELP = "on an error, show the traceback above its one-line message (also REDUMIX_DEBUG=1)"


def add_parser(sub) -> argparse.ArgumentParser:
    """Add `train` (with its `grpo` subcommand) to the command line's subcommands."""
    train = sub.add_parser("train", help="train a model with reinforcement learning on the environments' verifiers "
                                         "(train grpo CONFIG)")
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
    return train


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

    return Context(settings=f"the model, device and dtype of CONFIG {args.config}",
                   inputs=f"CONFIG {args.config} or its model",
                   memory_hint="lower grpo.prompts_per_step or grpo.group_size (raise grpo.grad_accum to keep the "
                               "batch), or rollout.max_new_tokens, or add grpo.lora")
