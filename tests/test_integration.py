"""A few end-to-end checks on the real embedded model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import model_cache
from harness.models import embedded_model_path, load_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded():
    try:
        embedded_model_path("smollm2-135m")
    except ValueError as err:
        pytest.skip(str(err))
    return load_model("smollm2-135m")


def test_embedded_model_loads_from_cache(embedded):
    again = load_model("smollm2-135m")
    assert again.from_cache
    assert model_cache.is_complete(model_cache.entry_dir(embedded_model_path("smollm2-135m")))
    assert again.describe()["parameters"] == embedded.describe()["parameters"]
    assert again.tokenizer.chat_template  # the instruct model's chat format is kept


def test_redumix_run_end_to_end(embedded, tmp_path):
    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).parent / "redumix"), "run", "--env", "basic_arithmetic", "--n", "4",
           "--seed", "0", "--max-new-tokens", "48", "--batch-size", "4", "--out", str(out),
           "--env-config", "min_terms=2,max_terms=2,min_digits=1,max_digits=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "accuracy:" in done.stdout and "samples.jsonl" in done.stdout
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 4
    for r in records:
        assert r["prompt"].startswith("<|im_start|>") and r["question"] in r["prompt"]
        assert r["completion"].strip() and r["new_tokens"] > 0
        assert r["model"] == "smollm2-135m"
