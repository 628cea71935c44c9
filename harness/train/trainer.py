"""TRL's GRPOTrainer set up from a training config: its arguments, the dataset, the rewards, LoRA.

Discrete rollouts run TRL's trainer as it is (checkpoints saved whole, see
`harness.distill.whole_checkpoints`); mixture rollouts run `MixtureGRPOTrainer`, which
replaces only the rollout and the per-token log-probs.
"""

from __future__ import annotations

from pathlib import Path

from harness.distill.deps import require
from harness.distill.whole_checkpoints import SavesWhole
from harness.train.config import GRPOTrainConfig
from harness.train.problems import TrainProblem, dataset_rows, in_training_order
from harness.train.rewards import reward_functions

CHECKPOINTS = "checkpoints"


def grpo_arguments(config: GRPOTrainConfig, output_dir: str | Path, device: str):
    """TRL's GRPOConfig for `config`: one optimizer step sees prompts_per_step x grad_accum prompts,
    each with group_size completions; completions are generated once per optimizer step."""
    trl = require("trl", "redumix train grpo")
    g, r = config.grpo, config.rollout
    return trl.GRPOConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=g.prompts_per_step * g.group_size,
        num_generations=g.group_size,
        gradient_accumulation_steps=g.grad_accum,
        max_steps=g.max_steps,
        learning_rate=g.lr,
        loss_type=g.loss_type,
        beta=g.beta,
        epsilon=g.epsilon,
        epsilon_high=g.epsilon_high,
        scale_rewards=g.scale_rewards,
        num_iterations=g.num_iterations,
        mask_truncated_completions=g.mask_truncated_completions,
        max_completion_length=r.max_new_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        seed=g.seed,
        data_seed=g.seed,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="steps",
        save_steps=g.save_steps,
        save_total_limit=1,  # resuming needs the newest only
        report_to="none",
        disable_tqdm=False,
        log_completions=False,
        use_cpu=device == "cpu",
        bf16=False,  # the model trains in the dtype it was loaded in
        fp16=False,
        # TRL turns it on by default: it trades speed for memory that small runs do not need.
        activation_checkpointing=False,
        dataloader_num_workers=0,
        shuffle_dataset=False,  # the rows come in their training order already (`in_training_order`)
    )


def make_trainer(config: GRPOTrainConfig, loaded, problems: list[TrainProblem], output_dir: str | Path):
    """The GRPO trainer of `config` over `problems`, training `loaded` (a LoadedModel)."""
    require("trl", "redumix train grpo")
    from datasets import Dataset

    funcs, weights = reward_functions(config.reward_weights, problems)
    args = grpo_arguments(config, output_dir, loaded.device)
    args.reward_weights = weights
    peft_config = None
    if config.grpo.lora_r is not None:
        peft = require("peft", "grpo.lora")
        peft_config = peft.LoraConfig(r=config.grpo.lora_r, lora_alpha=config.grpo.lora_alpha, lora_dropout=0.0,
                                      target_modules="all-linear", task_type="CAUSAL_LM")
    g = config.grpo
    needed = g.max_steps * g.prompts_per_step * g.grad_accum
    dataset = Dataset.from_list(in_training_order(dataset_rows(problems, loaded.tokenizer), needed, g.seed))
    cls = discrete_trainer_class() if config.rollout.kind == "discrete" else _mixture_class()
    extra = {} if config.rollout.kind == "discrete" else {"rollout": config.rollout, "loaded": loaded}
    return cls(model=loaded.model, reward_funcs=funcs, args=args, train_dataset=dataset,
               processing_class=loaded.tokenizer, peft_config=peft_config, **extra)


def discrete_trainer_class():
    trl = require("trl", "redumix train grpo")

    class DiscreteGRPOTrainer(SavesWhole, trl.GRPOTrainer):
        """TRL's GRPOTrainer unchanged, but for checkpoints that a Ctrl-C cannot cut in half."""

    return DiscreteGRPOTrainer


def _mixture_class():
    from harness.train.mixture_trainer import mixture_trainer_class

    return mixture_trainer_class()
