"""`redumix dera-check FOLDER`: DeRa against retrained models on a sweep folder
(`harness.analysis.dera_check`)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    check = sub.add_parser("dera-check", help="compare DeRa(base, anchor, lam) with DPO models retrained at "
                                              "beta0/lam, on a sweep folder holding both (configs/dera-check.yaml)")
    check.add_argument("run_dir", metavar="RUN_DIR", help="sweep folder with dera answers and greedy answers of the "
                                                          "retrained DPO models")
    check.add_argument("--device", default="cpu", help="device the models score on (default cpu)")
    check.add_argument("--batch-size", type=int, default=8, help="answers scored per forward pass (default 8)")
    check.add_argument("--verbose", action="store_true", help="show what transformers prints while models load")
    check.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from harness.analysis.dera_check import check_folder

    if args.batch_size < 1:
        raise ValueError(f"--batch-size (={args.batch_size}) must be >= 1")
    check = check_folder(args.run_dir, device=args.device, batch_size=args.batch_size)
    pairs = check.pairs[["lam", "dera_beta", "beta", "matching", "kl", "tokens"]]
    print(pairs.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    models = check.models[["label", "kl_from_base", "accuracy", "accuracy_diff", "accuracy_diff_lo",
                           "accuracy_diff_hi", *[c for c in ("dpo_reward_accuracy", "dpo_reward_margin")
                                                 if c in check.models]]]
    print(models.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for line in check.verdicts():
        print(line)
    print(f"tables: {', '.join(str(p) for p in check.paths)}")
    return 0
