"""The progress bar of a GRPO run: the latest mean reward and KL beside the optimizer steps."""

from __future__ import annotations

from transformers import ProgressCallback, Trainer

from harness.distill.callbacks import NoFinalCheckpoint


class RewardProgress(ProgressCallback):
    """tqdm bar over optimizer steps whose postfix is the latest reward (and KL, when a reference
    model is in use), instead of a printed dictionary per step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is None or not logs or "reward" not in logs:
            return
        shown = {"reward": f"{logs['reward']:.3f}"}
        if logs.get("kl") is not None:
            shown["kl"] = f"{logs['kl']:.4f}"
        if logs.get("soft/effective_tokens") is not None:
            shown["eff_tokens"] = f"{logs['soft/effective_tokens']:.2f}"
        self.training_bar.set_postfix(shown, refresh=False)


def set_up_reporting(trainer: Trainer) -> None:
    """Swap the Trainer's progress bar for `RewardProgress`, and skip the last step's checkpoint
    (the model saved right after it supersedes it)."""
    trainer.pop_callback(ProgressCallback)
    trainer.add_callback(RewardProgress())
    trainer.add_callback(NoFinalCheckpoint())
