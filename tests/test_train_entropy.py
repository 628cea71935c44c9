"""`redumix train entropy`: the entropies along the thinking by hand, the probe's forward pass
against the distributions the engine decoded from (discrete and mixture rollouts on the tiny
model), and the CSV and figure the command writes."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import yaml

from harness.cli import main
from harness.train.entropy_probe import rollout_rows
from harness.train.hidden_entropy import (
    effective_tokens,
    energy_entropy,
    next_token_entropy,
    position_means,
    thinking_steps,
)
from tests.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_energy_entropy_by_hand():
    assert energy_entropy(torch.tensor([0.0, 3.0, 0.0])).item() == pytest.approx(0.0)
    assert energy_entropy(torch.tensor([1.0, -1.0, 1.0, -1.0])).item() == pytest.approx(math.log(4))
    h = torch.tensor([[1.0, 2.0, 2.0]])  # energies 1/9, 4/9, 4/9
    by_hand = -(1 / 9 * math.log(1 / 9) + 2 * 4 / 9 * math.log(4 / 9))
    assert energy_entropy(h).item() == pytest.approx(by_hand) == energy_entropy(7 * h).item()  # scale-free
    assert energy_entropy(torch.zeros(3)).item() == 0.0


def test_next_token_entropy_and_effective_tokens_by_hand():
    assert next_token_entropy(torch.zeros(8)).item() == pytest.approx(math.log(8))
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    assert next_token_entropy(logits).item() == pytest.approx(1.5 * math.log(2))
    assert next_token_entropy(torch.tensor([0.0, float("-inf")])).item() == 0.0
    assert next_token_entropy(logits, temperature=1e-3).item() < 1e-3
    assert effective_tokens(torch.tensor([1.0, 0.0])).item() == pytest.approx(1.0)
    assert effective_tokens(torch.tensor([0.5, 0.5, 0.0])).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="temperature"):
        next_token_entropy(logits, temperature=0)


def test_thinking_steps_end_where_the_marker_starts():
    assert thinking_steps(["We ", "add", "<", "answer", ">", "5"], "<answer>") == 2
    assert thinking_steps(["x<", "answer>5"], "<answer>") == 1  # a step holding the marker's start thinks
    assert thinking_steps(["<answer>", "5"], "<answer>") == 0
    assert thinking_steps(["no", " marker"], "<answer>") == 2
    assert position_means([[1.0, 2.0], [3.0], [5.0, math.nan, 1.0]], min_rows=2) == [(0, 3.0, 3)]
    assert position_means([[1.0, 2.0], [3.0]]) == [(0, 2.0, 2), (1, 2.0, 1)]


def config(model, kind: str) -> dict:
    from harness.train.config import parse_train_config

    rollout = {"kind": kind, "max_new_tokens": 8}
    if kind == "mixture":
        rollout |= {"mix": "gumbel", "config": {"tau": 0.5, "max_topk": 5}}
    data = {"model": model, "rollout": rollout, "eval": {"seeds": [1], "n": 3},
            "train": {"envs": [{"name": "basic_arithmetic", "n": 2}], "seeds": [0]}}
    return data, parse_train_config(data)


@pytest.mark.parametrize("kind", ["discrete", "mixture"])
def test_the_forward_pass_gives_the_distributions_the_engine_decoded_from(tiny_model_dir, kind, monkeypatch):
    """The next-token entropy the probe computes at step t is the entropy of the distribution
    the engine drew step t + 1 from: the forward feeds what the rollout fed, soft steps included."""
    from harness.engine import lockstep
    from harness.train.problems import evaluation_problems

    _, parsed = config(str(tiny_model_dir), kind)
    loaded = tiny_model()
    seen: dict[int, list[float]] = {}
    original = lockstep.decode

    def watching(*args, on_step=None, **kwargs):
        def both(view):
            for i, row in enumerate(view.rows):
                seen.setdefault(row, []).append(next_token_entropy(view.logprobs[0][i]).item())
            if on_step is not None:
                on_step(view)
        return original(*args, on_step=both, **kwargs)

    monkeypatch.setattr(lockstep, "decode", watching)
    rows = rollout_rows(loaded, parsed, evaluation_problems(parsed), seed=0)
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    assert len(problems) == 3
    for index, problem in enumerate(problems):
        mine = [r for r in rows if r["problem"] == problem]
        engine = seen[index]
        assert len(mine) == len(engine)
        for t in range(len(mine) - 1):
            assert mine[t]["token_entropy"] == pytest.approx(engine[t + 1], abs=1e-4)
    if kind == "mixture":
        soft = [r for r in rows if r["soft"]]
        assert soft and all(1.0 <= r["effective_tokens"] <= 5.0 for r in soft)
        assert any(r["effective_tokens"] > 1.01 for r in soft)
    else:
        assert all(not r["soft"] and r["effective_tokens"] == 1.0 for r in rows)


def test_the_command_writes_the_csv_and_figure_per_model(tiny_model_dir, tmp_path, capsys):
    data, _ = config(str(tiny_model_dir), "mixture")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "entropy"
    assert main(["train", "entropy", str(path), f"base={tiny_model_dir}", f"again={tiny_model_dir}",
                 "--out", str(out), "--n", "2"]) == 0
    printed = capsys.readouterr().out
    assert "base: " in printed and "again: " in printed and "mean hidden-state entropy" in printed
    rows = list(csv.DictReader((out / "thinking_entropy.csv").open()))
    base = [{k: v for k, v in r.items() if k != "model"} for r in rows if r["model"] == "base"]
    again = [{k: v for k, v in r.items() if k != "model"} for r in rows if r["model"] == "again"]
    assert base and base == again  # the same model meets the same problems with the same seeds
    assert (out / "thinking_entropy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["train", "entropy", str(path), "=x", "--out", str(out)]) == 2
    assert "LABEL=MODEL" in capsys.readouterr().err
