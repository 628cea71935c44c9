"""`distill`: harvested ReDuMix answers -> a new model folder that `redumix run --model` loads."""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from transformers import TrainerCallback, TrainingArguments, set_seed

from harness.console import note
from harness.distill.callbacks import set_up_reporting
from harness.distill.deps import require
from harness.distill.env_answers import EnvSource, load_env_answers
from harness.distill.examples import PairSet, base_model, check_pairs, lambda_summary, load_pairs
from harness.distill.options import SOFT_DEFAULTS, DistillOptions
from harness.distill.out_folder import (
    CHECKPOINTS,
    claim_out,
    inspect_out,
    last_checkpoint,
    save_model_folder,
)
from harness.distill.sequences import MixtureCollator, gkd_examples, preference_examples
from harness.distill.soft_sft import soft_sft_examples
from harness.distill.training_log import curve_png, log_csv, step_rows
from harness.engine.models import DEFAULT_MODEL, LoadedModel, context_window, load_model, resolve_source

CONFIG_FILE, LOG_FILE, CURVE_FILE = "distill_config.json", "training_log.csv", "training_curve.png"
VERSIONED = ("torch", "transformers", "accelerate", "trl", "peft")
# The Trainer's own settings that shape the weights, recorded as it resolved them.
TRAINER_SETTINGS = ("optim", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "adam_beta1",
                    "adam_beta2", "adam_epsilon", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                    "gradient_accumulation_steps", "seed", "data_seed")


@dataclass(frozen=True)
class DistillSummary:
    out: Path  # the model folder
    objective: str
    base_model: str
    pairs: int  # pairs trained on
    skipped: dict[str, int]  # pairs left out, by reason
    steps: int  # optimizer steps taken in all (a resumed distillation counts the earlier ones)
    first_loss: float | None
    last_loss: float | None
    seconds: float
    resumed_from: int | None  # step of the checkpoint the distillation resumed from


def distill(source: str | Path | EnvSource, out: str | Path, options: DistillOptions | None = None, *,
            callbacks: Sequence[TrainerCallback] = ()) -> DistillSummary:
    """Train the base model on the pairs in `source` and save it as the model folder `out`.

    `source`: a run or sweep folder, a pairs file, or (soft-sft only) an `EnvSource`, whose
    problems' gold answers are the pairs; its base model is --model, else the embedded default.

    Everything is checked before the model loads: the options, the source and its pairs,
    the base model's name and the output folder (a folder holding a model is refused
    unless `options.force`, which moves its files aside). Checkpoints of the same
    distillation in `out` are resumed from. `callbacks` are extra Trainer callbacks.

    Raises:
        ValueError: a bad option, source, model or output folder; the message names it and the fix.
    """
    began = time.perf_counter()
    options = (options or DistillOptions()).resolved()
    pair_set = _load(source, options)
    check_pairs(pair_set, options.objective, options.lam)
    model_name = base_model(pair_set, options.model) if pair_set.kind != "env" else options.model or DEFAULT_MODEL
    kind, model_path = resolve_source(model_name)
    if options.lora:
        require("peft", "--lora")
    if options.objective == "dpo":
        require("trl", "--objective dpo")
    training = training_config(pair_set, model_name, options)
    plan = inspect_out(out, training, pair_set.source, options.force, base=model_path if kind == "hf" else None)

    loaded = load_model(model_name, options.dtype, options.device)
    max_length = context_window(loaded.model) or 2048
    if options.objective == "gkd":
        examples, skipped = gkd_examples(loaded.tokenizer, pair_set.pairs, options.lam, max_length)
    elif options.objective == "soft-sft":
        examples, skipped = soft_sft_examples(loaded.tokenizer, pair_set.pairs, max_length)
    else:
        examples, skipped = preference_examples(loaded.tokenizer, pair_set.pairs, max_length)
    if not examples:
        reasons = ", ".join(f"{n} {reason}" for reason, n in skipped.items())
        where = f"SOURCE (={str(pair_set.source)!r})" if pair_set.source is not None else f"--env ({pair_set.label})"
        raise ValueError(f"{where}: none of its {len(pair_set.pairs)} pairs can be trained "
                         f"on ({reasons}; the model's context window is {max_length} tokens)")
    if skipped:
        note(f"left out {sum(skipped.values())} of {len(pair_set.pairs)} pairs: "
             + ", ".join(f"{n} {reason}" for reason, n in skipped.items()))

    claim_out(plan, training)
    out = plan.out
    checkpoint = last_checkpoint(out) if plan.resume else None
    resumed_from = int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else None
    if checkpoint is not None:
        note(f"resuming from {checkpoint} (step {resumed_from})")
    trainer = _trainer(loaded, examples, options, out)
    for callback in callbacks:
        trainer.add_callback(callback)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)

    rows = step_rows(trainer.state.log_history)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if options.lora:
        model = model.merge_and_unload()  # a plain model: loads without peft, decodes at full speed
    summary = DistillSummary(
        out=out, objective=options.objective, base_model=model_name, pairs=len(examples), skipped=skipped,
        steps=trainer.state.global_step, first_loss=rows[0]["loss"] if rows else None,
        last_loss=rows[-1]["loss"] if rows else None, seconds=time.perf_counter() - began, resumed_from=resumed_from,
    )
    config = {
        "training": training,
        "source": {"path": str(pair_set.source) if pair_set.source is not None else None, "kind": pair_set.kind,
                   "rule": pair_set.rule, "records": pair_set.records, "pairs": len(pair_set.pairs),
                   "pairs_sha256": pair_set.digest, **({"env": pair_set.env} if pair_set.env is not None else {})},
        "base_model": loaded.describe(),
        "lambda": lambda_summary(pair_set.pairs, options.lam) if options.objective == "gkd" else None,
        **({"guidance": dataclasses.asdict(trainer.schedule), "soft_inputs": dataclasses.asdict(trainer.soft)}
           if options.objective == "soft-sft" else {}),
        "examples": len(examples),
        "skipped": skipped,
        "trainer": {key: _plain(getattr(trainer.args, key)) for key in TRAINER_SETTINGS},
        "run": {"device": loaded.device, "save_steps": options.save_steps, "max_length": max_length,
                "resumed_from_step": resumed_from},
        "result": {"steps": summary.steps, "first_loss": summary.first_loss, "last_loss": summary.last_loss,
                   "seconds": round(summary.seconds, 3)},
        "versions": versions(),
        "written": datetime.now().isoformat(timespec="seconds"),
    }
    what = "gold answers" if pair_set.kind == "env" else "pairs"
    title = f"redumix distill: {options.objective} on {len(examples)} {what} from {model_name}"
    save_model_folder(model, loaded.tokenizer, out, {CONFIG_FILE: json.dumps(config, indent=2) + "\n",
                                                     LOG_FILE: log_csv(rows), CURVE_FILE: curve_png(rows, title)})
    if not options.keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # only for resuming; the model supersedes them
    return summary


def _load(source: str | Path | EnvSource, options: DistillOptions) -> PairSet:
    if not isinstance(source, EnvSource):
        return load_pairs(source, options.rule)
    if options.objective != "soft-sft":
        raise ValueError(f"--env (={source.env!r}) gives gold answers, which only --objective soft-sft trains on; "
                         f"add --objective soft-sft, or give --objective {options.objective} a run folder or pairs "
                         "file as SOURCE")
    if options.rule is not None:
        raise ValueError(f"--rule (={options.rule!r}) selects records of a run folder; --env trains on every problem's "
                         "gold answer, leave --rule out")
    return load_env_answers(source)


def _plain(value):
    return value if isinstance(value, int | float | str | bool | type(None)) else str(value)


def training_config(pair_set: PairSet, model_name: str, options: DistillOptions) -> dict:
    """Everything that decides the trained weights: checkpoints resume only under the same values."""
    soft = {name: getattr(options, name) for name in (*SOFT_DEFAULTS, "guidance_warmup", "clamp_gold")}
    return {
        "source": pair_set.label,
        "pairs_sha256": pair_set.digest,
        "rule": pair_set.rule,
        "base_model": model_name,
        "objective": options.objective,
        "lam": options.lam,
        "beta": options.beta,
        "lora": options.lora,
        "lora_r": options.lora_r,
        "lora_alpha": options.lora_alpha,
        "epochs": options.epochs,
        "max_steps": options.max_steps,
        "lr": options.lr,
        "batch_size": options.batch_size,
        "grad_accum": options.grad_accum,
        "seed": options.seed,
        "dtype": options.dtype,
        **(soft if options.objective == "soft-sft" else {}),
    }


def versions() -> dict[str, str | None]:
    found = {}
    for package in VERSIONED:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def _trainer(loaded: LoadedModel, examples: list, options: DistillOptions, out: Path):
    set_seed(options.seed)  # before adapters are initialised at random
    if options.objective == "gkd":
        from harness.distill.gkd import MixtureGKDTrainer

        model, teacher = loaded.model, None
        if options.lora:
            model = require("peft", "--lora").get_peft_model(model, _lora_config(options))
        else:
            teacher = copy.deepcopy(model)  # the base stays the teacher while the student moves
        trainer = MixtureGKDTrainer(
            model=model, args=_arguments(TrainingArguments, options, out, loaded.device), train_dataset=examples,
            data_collator=MixtureCollator(loaded.tokenizer.pad_token_id), beta=options.beta, teacher=teacher,
        )
    elif options.objective == "soft-sft":
        from harness.distill.soft_sft import SoftSftCollator, SoftSftTrainer

        model = loaded.model
        if options.lora:
            model = require("peft", "--lora").get_peft_model(model, _lora_config(options))
        trainer = SoftSftTrainer(
            model=model, args=_arguments(TrainingArguments, options, out, loaded.device), train_dataset=examples,
            data_collator=SoftSftCollator(loaded.tokenizer.pad_token_id), soft=options.soft_inputs(),
            start=options.guidance_start, floor=options.guidance_floor, warmup_steps=options.guidance_warmup,
            shape=options.guidance_schedule,
        )
    else:
        from harness.distill.dpo import dpo_trainer

        trl = require("trl", "--objective dpo")
        # TRL turns activation checkpointing on by default: it trades speed for memory that small runs do not need.
        fields = trl.DPOConfig.__dataclass_fields__
        checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
        config = _arguments(trl.DPOConfig, options, out, loaded.device, beta=options.beta, max_length=None,
                            precompute_ref_log_probs=False, **{checkpointing: False})
        trainer = dpo_trainer(loaded.model, loaded.tokenizer, examples, config,
                              peft_config=_lora_config(options) if options.lora else None)
    set_up_reporting(trainer)
    return trainer


def _arguments(cls, options: DistillOptions, out: Path, device: str, **extra):
    return cls(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        num_train_epochs=options.epochs,
        max_steps=options.max_steps if options.max_steps is not None else -1,
        learning_rate=options.lr,
        seed=options.seed,
        data_seed=options.seed,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=1,  # resuming needs the newest only
        report_to="none",
        disable_tqdm=False,
        use_cpu=device == "cpu",
        bf16=False,  # the model trains in the dtype it was loaded in (--dtype)
        fp16=False,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **extra,
    )


def _lora_config(options: DistillOptions):
    peft = require("peft", "--lora")
    return peft.LoraConfig(r=options.lora_r, lora_alpha=options.lora_alpha, lora_dropout=0.0,
                           target_modules="all-linear", task_type="CAUSAL_LM")
