#!/usr/bin/env bash
# The GPU check: one command, about 5-8 minutes on one GPU. Runs the CUDA tests, the
# batch-invariance contract and identities on CUDA, and the engine and stage-4 benches with
# transformers' generate and CFG beside ours (invariance on and off), then prints one table.
#
#   bash bench/gpu_check.sh            # uses .venv/bin/python; PYTHON=... for another interpreter
#
# Needs a torch build with CUDA in that interpreter (the project pins the CPU wheel; on a GPU
# machine install torch==2.13.0 from the CUDA index first) and the embedded model package.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOG=${GPU_CHECK_LOG:-gpu-check}
mkdir -p "$LOG"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)); nothing to check"
    exit 2
fi
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}')"

step() {  # name, time limit (s), command...
    local name=$1 limit=$2; shift 2
    local began=$SECONDS
    timeout "$limit" "$@" >"$LOG/$name.txt" 2>&1
    local rc=$?
    printf '%s\t%s\t%ss\n' "$name" "$([ $rc -eq 0 ] && echo ok || echo "failed ($rc)")" "$((SECONDS - began))" >>"$LOG/steps.tsv"
}
: >"$LOG/steps.tsv"
step cuda-tests 120 "$PY" -m pytest -q tests/test_engine.py -k cuda
step invariance-contract 240 env REDUMIX_TEST_DEVICE=cuda "$PY" -m pytest -q -m integration tests/test_batch_invariance.py
step engine-bench 90 "$PY" bench/engine.py --device cuda --dtype bfloat16 --batches 1,8,32 --new-tokens 128
step stage4-bench 120 "$PY" bench/redumix.py --device cuda --dtypes bfloat16 --batches 1,16
step batch-variance 90 "$PY" bench/batch_variance.py --device cuda --dtypes bfloat16 --n 10

echo
echo "| step | result | time |"
echo "|---|---|---|"
awk -F'\t' '{printf "| %s | %s | %s |\n", $1, $2, $3}' "$LOG/steps.tsv"
echo
"$PY" - "$LOG" <<'PYEOF'
import re, sys
from pathlib import Path
log = Path(sys.argv[1])
def text(name):
    path = log / f"{name}.txt"
    return path.read_text(errors="replace") if path.exists() else ""
print("| figure | value |")
print("|---|---|")
for line in text("engine-bench").splitlines():
    cols = line.split()
    if len(cols) >= 7 and cols[0].isdigit():
        print(f"| greedy tok/s, batch {cols[0]}: invariance on / off / generate | {cols[1]} / {cols[2]} / {cols[3]} "
              f"(on/generate {cols[4]}, cost of invariance {cols[6]}) |")
batch = None
for line in text("stage4-bench").splitlines():
    head = re.match(r"^(\w+) batch (\d+):", line)
    if head:
        batch = f"{head.group(1)} batch {head.group(2)}"
    row = re.match(r"^ +([a-z0-9 ]*[a-z0-9]) +[0-9.]+ ms \(([0-9.]+)x\) \| +[0-9.]+ ms \(([0-9.]+)x\)", line)
    if row and batch:
        print(f"| {batch}, {row.group(1)}: ms/token vs greedy (prefill incl. / decode only) | "
              f"{row.group(2)}x / {row.group(3)}x |")
    if "cost of invariance" in line and batch:
        print(f"| {batch}: {line.strip()} | |")
for line in text("batch-variance").splitlines()[3:]:
    cells = [c.strip() for c in line.strip("|").split("|")]
    if len(cells) >= 3:
        print(f"| completions differing from batch 1, {cells[0]} (on / off) | {cells[1]} / {cells[2]} |")
for name in ("cuda-tests", "invariance-contract"):
    last = [l for l in text(name).splitlines() if "passed" in l or "failed" in l or "error" in l]
    print(f"| {name} | {last[-1] if last else 'no result'} |")
PYEOF
echo
echo "full outputs: $LOG/"
