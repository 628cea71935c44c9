"""A sweep config end to end, timed: model load, ReDuMix stages 1-3, decoding, report.

Run on demand: `python bench/sweep.py [configs/quick.yaml] [--threads N] [--repeats R]`.
Each repeat decodes the whole config afresh into a temporary folder (nothing is
resumed) in this process; the first load of the embedded model also converts its
GGUF (cached afterwards), so the table keeps that repeat apart. The other processes'
CPU share is printed next to each repeat: on a shared machine it explains most swings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu_load import OtherLoad  # noqa: E402
from harness.runs.sweep import run_sweep  # noqa: E402
from harness.runs.sweep_config import load_config  # noqa: E402

PARTS = ("load_s", "stage_s", "decode_s", "report_s", "total_s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/quick.yaml")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    print(f"config {args.config}: torch threads {torch.get_num_threads()}")
    print(f"{'repeat':>6} " + " ".join(f"{p:>9}" for p in PARTS) + f" {'records':>8} {'others CPU':>10}")
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder, OtherLoad() as load:
            began = time.perf_counter()
            result = run_sweep(config, Path(folder) / "sweep", progress=False)
            wall = time.perf_counter() - began
        t = result.timings | {"total_s": wall}
        print(f"{repeat:>6} " + " ".join(f"{t[p]:>9.1f}" for p in PARTS) + f" {result.new:>8} {load.share:>10.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
