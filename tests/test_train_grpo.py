"""`redumix train grpo` with discrete rollouts on the tiny model: the same loss as TRL's GRPOTrainer
run plainly, reproducible weights, resuming after an interrupt, the model folder, and bad configs
refused before any model loads."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file

from harness.cli import main
from harness.train.config import parse_train_config
from harness.train.run import train_grpo

pytestmark = pytest.mark.usefixtures("one_thread")

# Problems whose gold is a regex any answer of small digits matches: with flexible extraction (the
# last number of a completion), the tiny random model earns rewards that differ within a group.
GOLD = "[0-4]+"


@pytest.fixture(scope="module")
def problems_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rl") / "problems.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Say a small number, {i}.", "answer": GOLD}) + "\n"
                            for i in range(8)))
    return path


def config_data(model_dir, problems_file, **grpo) -> dict:
    return {
        "model": str(model_dir),
        "extraction": "flexible",
        "train": {"envs": [{"name": f"file:{problems_file}", "n": 4, "config": {"checker": "regex"}}]},
        "rollout": {"max_new_tokens": 10},
        "grpo": {"max_steps": 2, "lr": 1e-3, "group_size": 4, "prompts_per_step": 2} | grpo,
    }


def weights(folder) -> dict:
    return load_file(folder / "model.safetensors")


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_our_rewards_and_data_give_the_loss_of_trls_trainer_run_plainly(tiny_model_dir, problems_file, tmp_path):
    from datasets import Dataset
    from trl import GRPOTrainer

    from harness.engine.models import load_model
    from harness.train.problems import training_problems
    from harness.train.trainer import grpo_arguments, make_trainer

    config = parse_train_config(config_data(tiny_model_dir, problems_file))
    problems = {p.key: p for p in training_problems(config)}
    ours = make_trainer(config, load_model(str(tiny_model_dir), "float32"), list(problems.values()), tmp_path / "ours")
    ours.train()

    # The same by hand: the chat template's prompt and a reward that reads the last number.
    def last_number_matches(completions, **_):
        numbers = [re.findall(r"-?\d+(?:\.\d+)?(?:/\d+)?", c) for c in completions]
        return [float(bool(n) and re.fullmatch(GOLD, n[-1]) is not None) for n in numbers]

    loaded = load_model(str(tiny_model_dir), "float32")
    order = [problems[key] for key in ours.train_dataset["problem_key"]]  # the same prompts in the same order
    prompts = [loaded.tokenizer.apply_chat_template([{"role": "user", "content": p.user_prompt}], tokenize=False,
                                                    add_generation_prompt=True) for p in order]
    plain = GRPOTrainer(model=loaded.model, reward_funcs=last_number_matches,
                        args=grpo_arguments(config, tmp_path / "plain", "cpu"),
                        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                        processing_class=loaded.tokenizer)
    plain.train()

    def logged(trainer, key):
        return [entry[key] for entry in trainer.state.log_history if key in entry and "train_runtime" not in entry]

    rewards = logged(ours, "reward")
    assert rewards == logged(plain, "reward") and any(0 < r < 1 for r in rewards)  # rewards that differ
    assert logged(ours, "loss") == logged(plain, "loss") and any(loss != 0 for loss in logged(ours, "loss"))
    assert logged(ours, "entropy") == logged(plain, "entropy")


def test_the_model_folder_and_its_log(tiny_model_dir, problems_file, tmp_path):
    config = parse_train_config(config_data(tiny_model_dir, problems_file, max_steps=3))
    summary = train_grpo(config, tmp_path / "out")
    out = tmp_path / "out"
    assert summary.steps == 3 and summary.first_reward is not None
    assert {"config.json", "model.safetensors", "tokenizer.json", "train_config.json", "training_log.csv",
            "training_curve.png"} <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoints").exists()
    header, *rows = (out / "training_log.csv").read_text().splitlines()
    assert len(rows) == 3 and {"reward", "loss", "entropy"} <= set(header.split(","))
    record = json.loads((out / "train_config.json").read_text())
    assert record["rollout"] == {"kind": "discrete", "mix": None, "logprob": None}
    assert record["trainer"]["num_generations"] == 4 and record["problems"]["train"] == 4
    assert not same_weights(out, tiny_model_dir)
    # What `redumix run --model` loads.
    from harness.engine.models import load_model

    trained, base = load_model(str(out), "float32"), load_model(str(tiny_model_dir))
    assert trained.model.config.vocab_size == base.model.config.vocab_size


def test_the_same_config_and_seed_give_the_same_weights(tiny_model_dir, problems_file, tmp_path):
    config = parse_train_config(config_data(tiny_model_dir, problems_file))
    train_grpo(config, tmp_path / "a")
    train_grpo(config, tmp_path / "b")
    assert same_weights(tmp_path / "a", tmp_path / "b")
    other = parse_train_config(config_data(tiny_model_dir, problems_file, seed=1))
    train_grpo(other, tmp_path / "c")
    assert not same_weights(tmp_path / "a", tmp_path / "c")


def test_an_interrupted_run_resumes_to_the_same_weights(tiny_model_dir, problems_file, tmp_path):
    from transformers import TrainerCallback

    config = parse_train_config(config_data(tiny_model_dir, problems_file, max_steps=4, save_steps=2))
    train_grpo(config, tmp_path / "whole")

    class Interrupt(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_grpo(config, tmp_path / "cut", callbacks=[Interrupt()])
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-2").is_dir()
    summary = train_grpo(config, tmp_path / "cut")
    assert summary.resumed_from == 2 and summary.steps == 4
    assert same_weights(tmp_path / "whole", tmp_path / "cut")
    rows = (tmp_path / "cut" / "training_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4]  # the log covers the steps before the interrupt


def test_lora_adapters_are_merged_into_a_plain_model(tiny_model_dir, problems_file, tmp_path):
    config = parse_train_config(config_data(tiny_model_dir, problems_file, lora={"r": 4, "alpha": 8}, max_steps=1))
    train_grpo(config, tmp_path / "out")
    trained, base = weights(tmp_path / "out"), weights(tiny_model_dir)
    assert trained.keys() == base.keys()  # no adapter weights left
    assert any(not torch.equal(trained[k], base[k]) for k in base)


def test_cli_trains_and_refuses_bad_configs_before_loading_a_model(tiny_model_dir, problems_file, tmp_path, capsys,
                                                                  monkeypatch):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(config_data(tiny_model_dir, problems_file, max_steps=1) | {"name": "tiny-rl"}))
    assert main(["train", "grpo", str(good), "--out", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    assert "with GRPO (discrete rollouts) on 4 problems: 1 steps" in printed and "redumix run --model" in printed

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("harness.train.run.load_model", no_loading)
    bad = tmp_path / "bad.yaml"
    for text, expected in [
        ("model: x\nmodel: y\n", "key 'model' is given twice"),
        (yaml.safe_dump(config_data(tiny_model_dir, problems_file, group_sise=4)), "Did you mean: group_size?"),
        (yaml.safe_dump(config_data(tiny_model_dir, problems_file) | {"eval": {"seeds": [0]}}),
         "evaluation problem"),
    ]:
        bad.write_text(text)
        assert main(["train", "grpo", str(bad), "--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "never").exists()
    # A folder holding a model is refused without --force, before loading.
    assert main(["train", "grpo", str(good), "--out", str(tmp_path / "m")]) == 2
    assert "already holds a model" in capsys.readouterr().err
