"""How a distillation's Trainer reports and checkpoints: the latest loss on the progress bar,
and no checkpoint of the last step (the model itself is saved right after it)."""

from __future__ import annotations

from transformers import ProgressCallback, Trainer, TrainerCallback


class LossProgress(ProgressCallback):
    """tqdm bar over optimizer steps whose postfix is the latest loss (one log per step would
    otherwise print a dictionary per step)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)


class NoFinalCheckpoint(TrainerCallback):
    """The Trainer checkpoints the last step too; the model saved right after it makes that
    copy of weights and optimizer state (three times the model's size) wasted time."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and state.global_step % args.save_steps != 0:
            control.should_save = False


def set_up_reporting(trainer: Trainer) -> None:
    """Swap the Trainer's default progress bar for `LossProgress`, and skip the last step's checkpoint."""
    trainer.pop_callback(ProgressCallback)
    trainer.add_callback(LossProgress())
    trainer.add_callback(NoFinalCheckpoint())
