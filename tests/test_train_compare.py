"""`redumix train compare`: the reward curves of GRPO runs in one PNG, read from each run's
training_log.csv (or a checkpoint of a run still training), and its refusals."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from harness.cli import main
from harness.train.compare import compare_runs, read_run_log, reward_components

pytestmark = pytest.mark.usefixtures("one_thread")


def fake_run(folder, name, mix, rewards):
    folder.mkdir()
    lines = ["step,loss,reward,rewards/format/mean,rewards/score/mean"]
    lines += [f"{i + 1},0.1,{r},{r},0.0" for i, r in enumerate(rewards)]
    (folder / "training_log.csv").write_text("\n".join(lines) + "\n")
    (folder / "train_config.json").write_text(json.dumps(
        {"name": name, "rollout": {"kind": "mixture" if mix else "discrete", "mix": mix}}))
    return folder


def test_two_runs_in_one_figure_with_a_panel_per_reward(tmp_path, capsys):
    a = fake_run(tmp_path / "a", "rl-discrete", None, [0.1, 0.5, 0.9])
    b = fake_run(tmp_path / "b", "rl-mixture", "gumbel", [0.0, 0.4])
    out = tmp_path / "figs" / "rewards.png"
    assert main(["train", "compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rl-discrete: discrete, 3 steps, mean reward 0.100 -> 0.900" in printed
    assert "rl-mixture: mixture (gumbel), 2 steps" in printed
    runs = [read_run_log(a), read_run_log(b)]
    assert reward_components(runs) == ["format", "score"]
    assert [row["step"] for row in runs[0].rows] == [1, 2, 3] and runs[0].rows[2]["reward"] == 0.9
    width, height = Image.open(out).size
    assert width == 3 * 420 and height == 360  # the total reward, format and score panels


def test_a_run_still_training_is_read_from_its_newest_checkpoint(tmp_path):
    run = tmp_path / "running"
    for step in (2, 10):  # 10 sorts after 2 by number, not by text
        state = run / "checkpoints" / f"checkpoint-{step}"
        state.mkdir(parents=True)
        history = [{"step": s, "loss": 0.0, "reward": s / 10} for s in range(1, step + 1)]
        (state / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    log = read_run_log(run)
    assert not log.finished and len(log.rows) == 10 and log.label == "running"
    compare_runs([run, run], tmp_path / "same.png")  # the same label twice is named by folder too


def test_a_trained_tiny_model_is_compared(tiny_model_dir, tmp_path, capsys):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Say {i}.", "answer": "[0-4]+"}) + "\n"
                                for i in range(4)))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(tiny_model_dir), "extraction": "flexible", "rewards": {"score": 1.0, "format": 0.5},
        "train": {"envs": [{"name": f"file:{problems}", "n": 4, "config": {"checker": "regex"}}]},
        "rollout": {"max_new_tokens": 6}, "grpo": {"max_steps": 2, "group_size": 2, "prompts_per_step": 1}}))
    assert main(["train", "grpo", str(config), "--out", str(tmp_path / "m")]) == 0
    assert main(["train", "compare", str(tmp_path / "m"), "--out", str(tmp_path / "m.png")]) == 0
    assert "c: discrete, 2 steps" in capsys.readouterr().out
    assert sorted(reward_components([read_run_log(tmp_path / "m")])) == ["format", "score"]  # rewards/<name>/mean


def test_refusals_name_the_folder_and_the_fix(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    a = fake_run(tmp_path / "a", "x", None, [0.1])
    for argv, expected in [
        ([str(tmp_path / "empty")], "has no training_log.csv and no checkpoint"),
        ([str(tmp_path / "missing")], "is not a folder"),
        ([str(a), "--out", str(tmp_path / "f.jpg")], "ending in .png"),
    ]:
        if "--out" not in argv:
            argv = argv + ["--out", str(tmp_path / "f.png")]
        assert main(["train", "compare", *argv]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "f.png").exists()
