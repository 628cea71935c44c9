"""GKD towards the ReDuMix mixture: a transformers `Trainer` with its own `compute_loss`.

The teacher is the base model read under two contexts and mixed per token,

    log P_mix(. | t<i) = mix_logprobs([log P_base(. | x, t<i), log P_base(. | x2, t<i)], (lam, 1 - lam)),

teacher-forced along the redo t; the student reads x alone. TRL's GKDTrainer does not fit:
it lives in trl.experimental, and it runs its teacher on the student's own input ids, so
a teacher that reads a second context x2 cannot be expressed there. This trainer keeps
everything else of `Trainer` (accumulation, checkpoints, resuming, logging) and
replaces only the loss. The distillation is offline (on the harvested redos), which is
GKD with no student-generated sequences.

The teacher is the base model itself: with LoRA the student with its adapters switched
off (no second copy in memory), otherwise a frozen copy made before training.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from transformers import Trainer

from decoders.mixture import mix_logprobs
from harness.distill.losses import generalized_jsd, teacher_cross_entropy
from harness.distill.whole_checkpoints import SavesWhole


class MixtureGKDTrainer(SavesWhole, Trainer):
    """`Trainer` whose loss is the generalised JSD between the student under x and the ReDuMix
    mixture of the base model under x and x2, on the answer tokens only (batches from
    `harness.distill.sequences.MixtureCollator`)."""

    # The loss is a mean over one batch's answer tokens; Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, beta: float = 0.0, teacher: nn.Module | None = None, **kwargs) -> None:
        """`teacher`: a frozen copy of the base model; None: the student with its adapters disabled."""
        super().__init__(*args, **kwargs)
        self.beta = beta
        self.teacher = teacher
        if teacher is not None:
            teacher.to(self.args.device).eval().requires_grad_(False)
        self._metrics: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mask = inputs["target_mask"]
        student = answer_logprobs(model, inputs, "")
        teacher = self.teacher_logprobs(model, inputs)
        loss = generalized_jsd(student, teacher, self.beta, mask)
        with torch.no_grad():
            self._metrics["teacher_ce"].append(teacher_cross_entropy(student, teacher, mask).item())
        return (loss, {"logprobs": student}) if return_outputs else loss

    @torch.no_grad()
    def teacher_logprobs(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        """(B, n, V) ReDuMix mixture log-probs of the base model at the answer positions."""
        lam = inputs["lam"].float()
        with self._teacher(model) as teacher:
            # A stream whose weight is 0 in every row changes nothing: skip its forward pass.
            x = answer_logprobs(teacher, inputs, "") if bool((lam != 0).any()) else None
            x2 = answer_logprobs(teacher, inputs, "reflective_") if bool((lam != 1).any()) else None
        return redumix_mixture(x, x2, lam)

    @contextlib.contextmanager
    def _teacher(self, model: nn.Module) -> Iterator[nn.Module]:
        if self.teacher is not None:
            yield self.teacher
            return
        base = self.accelerator.unwrap_model(model)
        was_training = base.training
        base.eval()  # no dropout in the teacher
        try:
            with base.disable_adapter():
                yield base
        finally:
            base.train(was_training)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the means of this logging window's metrics (cross-entropy under the teacher, ...)."""
        if "loss" in logs:
            for key, values in self._metrics.items():
                if values:
                    logs[key] = sum(values) / len(values)
            self._metrics.clear()
        super().log(logs, start_time)


def redumix_mixture(x: Tensor | None, x2: Tensor | None, lam: Tensor) -> Tensor:
    """(B, n, V) log-probs under x and x2 and (B,) weights on x -> the (B, n, V) ReDuMix mixture.

    A stream may be None where every row's weight on it is 0.
    """
    x = x if x is not None else torch.zeros_like(x2)
    x2 = x2 if x2 is not None else torch.zeros_like(x)
    rows, width, vocab = x.shape
    weights = torch.stack([lam, 1.0 - lam]).to(x).repeat_interleave(width, dim=1)  # (2, B * n): one per token
    mixed = mix_logprobs(torch.stack([x.reshape(rows * width, vocab), x2.reshape(rows * width, vocab)]), weights)
    return mixed.view(rows, width, vocab)


def answer_logprobs(model: nn.Module, inputs: dict[str, Tensor], prefix: str) -> Tensor:
    """(B, n, V) log-probs `model` gives at the n answer columns of the stream `prefix` ("" or "reflective_")."""
    width = inputs["target_mask"].shape[1]
    logits = model(
        input_ids=inputs[f"{prefix}input_ids"],
        attention_mask=inputs[f"{prefix}attention_mask"],
        position_ids=inputs[f"{prefix}position_ids"],
        logits_to_keep=width,
        use_cache=False,
    ).logits
    return torch.log_softmax(logits[:, -width:].float(), dim=-1)
