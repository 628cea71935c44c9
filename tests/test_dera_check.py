"""DeRa against retrained models (`harness.analysis.dera_check`): the KL of each DeRa setting to
DPO models of other betas along both models' answers, checked against a hand computation on tiny
models, the matching of lam to beta0 / lam, and the refusals."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from harness.analysis import dera_check
from harness.cli import main
from harness.engine.prompts import encode
from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import parse_config
from tests.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")
EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def _dpo_folder(path, seed: int, beta: float | None, objective: str = "dpo"):
    loaded = tiny_model(seed=seed)
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    if beta is not None:
        # As `redumix distill` writes it: the training settings, then where the pairs came from.
        (path / "distill_config.json").write_text(json.dumps({"training": {"objective": objective, "beta": beta},
                                                              "source": {"kind": "pairs"}}))
        (path / "training_log.csv").write_text("step,loss,rewards/accuracies,rewards/margins\n1,0.7,0.5,0.01\n"
                                               "2,0.6,0.75,0.2\n")
    return path


@pytest.fixture(scope="module")
def folder(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("dera-check")
    anchor = _dpo_folder(root / "dpo-b0.1", seed=1, beta=0.1)
    weaker = _dpo_folder(root / "dpo-b0.2", seed=2, beta=0.2)
    config = parse_config({
        "name": "dera-check", "models": [str(tiny_model_dir)], "seeds": [0], "max_new_tokens": 6, "batch_size": 3,
        "envs": [{"name": "basic_arithmetic", "n": 3, "config": EASY}],
        "decoders": [{"name": "greedy"},
                     {"name": "greedy", "label": "dpo-b0.1", "models": {"policy": str(anchor)}},
                     {"name": "greedy", "label": "dpo-b0.2", "models": {"policy": str(weaker)}},
                     {"name": "dera", "models": {"aligned": str(anchor)}, "lambdas": [0.5, 1]}],
    })
    out = root / "eval"
    run_sweep(config, out, progress=False, write_report=False)
    return out


def _logprobs(loaded, prompt: str, answer_ids: list[int]) -> torch.Tensor:
    """Log-probs predicting each answer token: one plain forward over prompt + answer."""
    prompt_ids = encode(loaded.tokenizer, prompt)
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logits = loaded.model(input_ids=ids).logits[0].float()
    return torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)


def _answer_ids(loaded, record) -> list[int]:
    ids = loaded.tokenizer(record["completion"], add_special_tokens=False)["input_ids"]
    return ids + ([loaded.tokenizer.eos_token_id] if record["finish_reason"] == "eos" else [])


def test_kl_to_each_retrained_model_matches_a_hand_computation(folder, tiny_model_dir):
    check = dera_check.check_folder(folder, write=False)
    pairs = check.pairs.set_index(["lam", "beta"])
    assert check.anchor_beta == 0.1 and sorted(pairs.index) == [(0.5, 0.1), (0.5, 0.2), (1.0, 0.1), (1.0, 0.2)]
    # lam stands for beta0 / lam: 0.5 for the model at 0.2, 1 for the anchor itself.
    assert pairs["matching"].to_dict() == {(0.5, 0.1): False, (0.5, 0.2): True, (1.0, 0.1): True, (1.0, 0.2): False}
    # DeRa at lam 1 is the anchor: no divergence from it.
    assert pairs.loc[(1.0, 0.1), "kl"] == pytest.approx(0.0, abs=1e-6)
    base, anchor, weaker = (tiny_model(seed=s) for s in (0, 1, 2))
    records = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    dera = [r for r in records if r["decoder"] == "dera" and r["lambda"] == 0.5]
    theirs = [r for r in records if r["decoder_label"] == "dpo-b0.2"]
    per_token = []
    for record in dera + theirs:
        answer = _answer_ids(base, record)
        if not answer:
            continue
        ref, al, target = (_logprobs(m, record["prompt"], answer) for m in (base, anchor, weaker))
        mixed = torch.log_softmax(0.5 * ref + 0.5 * al, dim=-1)
        per_token += (target.exp() * (target - mixed)).sum(-1).tolist()
    assert pairs.loc[(0.5, 0.2), "tokens"] == len(per_token)
    assert pairs.loc[(0.5, 0.2), "kl"] == pytest.approx(sum(per_token) / len(per_token), rel=1e-4)
    models = check.models.set_index("label")
    assert list(models.index) == ["dera lam=0.5", "dera lam=1", "dpo-b0.1", "dpo-b0.2"]
    assert models.loc["dpo-b0.2", "dpo_reward_accuracy"] == 0.75 and models.loc["dpo-b0.2", "dpo_reward_margin"] == 0.2
    assert (models["kl_from_base"] > 0).all() and (models["pairs"] == 3).all()
    # DeRa at lam 1 and the anchor's own greedy answers are the same answers of the same model.
    assert models.loc["dera lam=1", "kl_from_base"] == pytest.approx(models.loc["dpo-b0.1", "kl_from_base"], rel=1e-4)
    lines = check.verdicts()
    assert len(lines) == 2 and lines[1].startswith("lam=1 (beta 0.1): KL to its retrained model 0.0000")


def test_the_command_writes_its_tables_and_figure(folder, capsys):
    assert main(["dera-check", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "lam=0.5 (beta 0.2)" in out and "dera_check.csv" in out
    table = pd.read_csv(folder / "dera_check.csv")
    assert list(table.columns[:6]) == ["lam", "dera_beta", "model", "beta", "matching", "kl"] and len(table) == 4
    assert (folder / "dera_check.png").read_bytes().startswith(b"\x89PNG")
    assert len(pd.read_csv(folder / "dera_check_models.csv")) == 4


def test_folders_the_check_cannot_read_are_refused_in_one_line(folder, tiny_model_dir, tmp_path, capsys):
    config = parse_config({"name": "plain", "models": [str(tiny_model_dir)], "seeds": [0], "max_new_tokens": 4,
                           "envs": [{"name": "basic_arithmetic", "n": 2, "config": EASY}],
                           "decoders": [{"name": "greedy"}]})
    run_sweep(config, tmp_path / "plain", progress=False, write_report=False)
    assert main(["dera-check", str(tmp_path / "plain")]) == 2
    assert "holds no DeRa answers" in capsys.readouterr().err
    (tmp_path / "not-dpo").mkdir()
    with pytest.raises(ValueError, match=r"not-dpo.*distill_config\.json.*redumix distill --objective dpo"):
        dera_check._dpo_beta(str(tmp_path / "not-dpo"))
    gkd = _dpo_folder(tmp_path / "gkd", seed=3, beta=0.0, objective="gkd")
    with pytest.raises(ValueError, match=r"objective 'gkd', not DPO"):
        dera_check._dpo_beta(str(gkd))


def test_the_config_pairs_each_lambda_with_a_retrained_model_on_held_out_seeds(tiny_model_dir):
    import re
    from pathlib import Path

    import yaml

    from harness.runs.sweep_config import load_config

    text = Path("configs/dera-check.yaml").read_text()
    betas = {float(b) for b in re.findall(r"results/dera-check/dpo-b([0-9.]+)\b", text)}
    config = parse_config(yaml.safe_load(re.sub(r"results/dera-check/dpo-b[0-9.]+", str(tiny_model_dir), text)))
    dera = next(d for d in config.decoders if d.name == "dera")
    anchor = float(re.search(r"aligned: results/dera-check/dpo-b([0-9.]+)", text).group(1))
    assert betas == {0.05, 0.1, 0.2} and {anchor / lam for lam in dera.listed["lambdas"]} == betas
    # The pairs come from the check's own harvest (or the closed loop's): seeds the evaluation never draws.
    for harvest in ("configs/dera-check-harvest.yaml", "configs/loop-harvest.yaml"):
        assert set(load_config(harvest).seeds).isdisjoint(config.seeds), harvest
