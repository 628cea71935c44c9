"""Checkpoints saved whole: Ctrl-C or SIGTERM during a save lands after it."""

from __future__ import annotations

from harness.runs.signals import signals_deferred


class SavesWhole:
    """Mixin for a `transformers.Trainer` subclass (put it first in the bases)."""

    def _save_checkpoint(self, model, trial):
        with signals_deferred():
            return super()._save_checkpoint(model, trial)
