"""`train_grpo`: a training config -> a new model folder that `redumix run --model` loads."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from transformers import TrainerCallback, set_seed

from harness.console import note
from harness.distill.deps import require
from harness.distill.out_folder import claim_out, inspect_out, last_checkpoint, save_model_folder
from harness.distill.run import TRAINER_SETTINGS, versions
from harness.distill.training_log import log_csv, step_rows
from harness.engine.models import load_model, resolve_source
from harness.train.config import GRPOTrainConfig
from harness.train.curve import reward_curve_png
from harness.train.problems import evaluation_problems, training_problems
from harness.train.progress import set_up_reporting
from harness.train.trainer import CHECKPOINTS, make_trainer

CONFIG_FILE, LOG_FILE, CURVE_FILE = "train_config.json", "training_log.csv", "training_curve.png"
# GRPO's own settings recorded beside the Trainer's, as TRL resolved them.
GRPO_SETTINGS = ("num_generations", "generation_batch_size", "steps_per_generation", "loss_type", "beta", "epsilon",
                 "epsilon_high", "scale_rewards", "num_iterations", "temperature", "top_p", "top_k",
                 "max_completion_length", "reward_weights", "importance_sampling_level")


@dataclass(frozen=True)
class TrainSummary:
    out: Path  # the model folder
    base_model: str
    rollout: str  # "discrete", or "mixture (gumbel)"
    problems: int  # training problems
    steps: int  # optimizer steps in all (a resumed run counts the earlier ones)
    first_reward: float | None  # mean reward of the first logged step
    last_reward: float | None
    seconds: float
    resumed_from: int | None  # step of the checkpoint the run resumed from


def train_grpo(config: GRPOTrainConfig, out: str | Path, *, source: str | Path | None = None, force: bool = False,
               keep_checkpoints: bool = False, callbacks: Sequence[TrainerCallback] = ()) -> TrainSummary:
    """Train `config.model` with GRPO on the config's problems and save it as the model folder `out`.

    Everything is checked before the model loads (the config already is): the libraries, the
    base model's name and the output folder (a folder holding a model is refused unless
    `force`, which moves its files aside). Checkpoints of the same run in `out` are resumed
    from. `source`: the config file, which `out` may not hold. `callbacks`: extra Trainer callbacks.

    Raises:
        ValueError: a missing library, model or bad output folder; the message names it and the fix.
    """
    began = time.perf_counter()
    require("trl", "redumix train grpo")
    if config.grpo.lora_r is not None:
        require("peft", "grpo.lora")
    kind, model_path = resolve_source(config.model)
    training = config.resolved()
    source_path = Path(source).expanduser().resolve() if source is not None else Path.cwd() / "<config>"
    plan = inspect_out(out, training, source_path, force, base=model_path if kind == "hf" else None)
    problems = training_problems(config)
    held_out = evaluation_problems(config)

    # Row-for-row batch invariance (the engine's default) is not needed to repeat a run, whose batches
    # repeat too, and its kernels take about twice the time of the plain ones on a CPU.
    loaded = load_model(config.model, config.dtype, config.device, batch_invariant=False)
    claim_out(plan, training)
    out = plan.out
    checkpoint = last_checkpoint(out) if plan.resume else None
    resumed_from = int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else None
    if checkpoint is not None:
        note(f"resuming from {checkpoint} (step {resumed_from})")
    set_seed(config.grpo.seed)  # before adapters are initialised at random
    trainer = make_trainer(config, loaded, problems, out / CHECKPOINTS)
    set_up_reporting(trainer)
    for callback in callbacks:
        trainer.add_callback(callback)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)

    rows = step_rows(trainer.state.log_history)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if config.grpo.lora_r is not None:
        model = model.merge_and_unload()  # a plain model: loads without peft, decodes at full speed
    rewards = [row["reward"] for row in rows if row.get("reward") is not None]
    rollout = config.rollout.kind + (f" ({config.rollout.mix})" if config.rollout.mix else "")
    summary = TrainSummary(
        out=out, base_model=config.model, rollout=rollout, problems=len(problems), steps=trainer.state.global_step,
        first_reward=rewards[0] if rewards else None, last_reward=rewards[-1] if rewards else None,
        seconds=time.perf_counter() - began, resumed_from=resumed_from,
    )
    record = {
        "training": training,
        "name": config.name,
        "source": str(source_path) if source is not None else None,
        "problems": {"train": len(problems), "eval": len(held_out), "train_seeds": list(config.train_seeds),
                     "eval_seeds": list(config.eval_seeds)},
        "rollout": {"kind": config.rollout.kind, "mix": config.rollout.mix, "logprob": config.rollout.logprob},
        "base_model": loaded.describe(),
        "trainer": {key: _plain(getattr(trainer.args, key)) for key in TRAINER_SETTINGS + GRPO_SETTINGS
                    if hasattr(trainer.args, key)},
        "run": {"device": loaded.device, "resumed_from_step": resumed_from},
        "result": {"steps": summary.steps, "first_reward": summary.first_reward, "last_reward": summary.last_reward,
                   "seconds": round(summary.seconds, 3)},
        "versions": versions(),
        "written": datetime.now().isoformat(timespec="seconds"),
    }
    title = f"redumix train grpo: {rollout} rollouts, {config.model}"
    files = {CONFIG_FILE: json.dumps(record, indent=2) + "\n", LOG_FILE: log_csv(rows),
             CURVE_FILE: reward_curve_png(rows, title)}
    save_model_folder(model, loaded.tokenizer, out, files)
    if not keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # only for resuming; the model supersedes them
    return summary


def _plain(value):
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, int | float | str | bool | type(None)) else str(value)
