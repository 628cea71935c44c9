"""`redumix lm-eval run` on the real embedded model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.engine.models import embedded_model_path

pytestmark = pytest.mark.integration


def test_lm_eval_cli_on_the_embedded_model_writes_lm_evals_files(tmp_path):
    try:
        embedded_model_path("smollm2-135m")
    except ValueError as err:
        pytest.skip(str(err))
    out = tmp_path / "lm-eval"
    cmd = [str(Path(sys.executable).parent / "redumix"), "lm-eval", "run", "--model", "redumix",
           "--model_args", "model=smollm2-135m,decoder=greedy", "--tasks", "rg_basic_arithmetic",
           "--limit", "4", "--batch_size", "4", "--apply_chat_template", "--gen_kwargs", "max_gen_toks=48",
           "--output_path", str(out), "--log_samples"]
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rg_basic_arithmetic" in done.stdout and "|acc" in done.stdout.replace(" ", "")
    (results,) = out.rglob("results_*.json")
    assert results.parent.name == "smollm2-135m"  # lm-eval names the folder from model=
    metrics = json.loads(results.read_text())["results"]["rg_basic_arithmetic"]
    assert {"acc,none", "score,none", "format_ok,none"} <= set(metrics)
    date = results.stem.removeprefix("results_")
    samples = [json.loads(line) for line in (results.parent / f"samples_rg_basic_arithmetic_{date}.jsonl").open()]
    assert len(samples) == 4 and all(s["resps"][0][0].strip() for s in samples)
    assert all(s["arguments"]["gen_args_0"]["arg_0"].startswith("<|im_start|>") for s in samples)
    telemetry = (results.parent / f"telemetry_rg_basic_arithmetic_{date}.jsonl").read_text().splitlines()
    assert len(telemetry) == 4
