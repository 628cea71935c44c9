"""The shipped quick sweep, shrunk, on the real embedded model."""

from __future__ import annotations

import math

import pytest
import yaml

from harness.engine.models import embedded_model_path
from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import parse_config

pytestmark = pytest.mark.integration


def test_quick_config_shrunk_runs_and_reports(tmp_path):
    try:
        embedded_model_path("smollm2-135m")
    except ValueError as err:
        pytest.skip(str(err))
    with open("configs/quick.yaml") as f:
        data = yaml.safe_load(f)
    data["envs"][0]["n"] = 2
    data["max_new_tokens"] = 10
    data["decoders"][1]["config"]["reflection_max_new_tokens"] = 8
    result = run_sweep(parse_config(data), tmp_path / "quick", progress=False)

    assert result.new == 2 * (1 + 3)
    summary = {(r["decoder_label"], r["lambda"]): r for r in result.report.summary.to_dict("records")}
    assert summary[("greedy", None)]["overhead_vs_greedy"] == 1.0
    for lam in (0.0, 0.5, 1.0):
        row = summary[("redumix", lam)]
        # Three decodings (first attempt, reflection, mixture) cost more than one greedy pass.
        assert row["overhead_vs_greedy"] > 1.0
        assert not math.isnan(row["stage1_accuracy"])
    # At the ends of the grid the mixture is one of its sources.
    assert summary[("redumix", 1.0)]["kl_mix_p1"] == pytest.approx(0.0, abs=1e-5)
    assert summary[("redumix", 0.0)]["kl_mix_p2"] == pytest.approx(0.0, abs=1e-5)
    assert (tmp_path / "quick" / "report.html").stat().st_size > 10_000
