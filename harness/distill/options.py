"""The settings of one distillation, checked in full before anything is read or loaded."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from harness.analysis.harvest import RULES
from harness.engine.models import resolve_device, resolve_dtype
from harness.naming import unknown_name_message

OBJECTIVES: dict[str, str] = {
    "gkd": "generalised KD towards the ReDuMix mixture of the base model under x and x2 (the seed's §3.6)",
    "dpo": "TRL's DPO on prompt / chosen (the redo) / rejected (the first attempt)",
}

# Learning rates that suit each objective when --lr is left out: adapters take larger steps
# than full fine-tuning; DPO's full fine-tuning rate is TRL's own default.
DEFAULT_LR: dict[tuple[str, bool], float] = {
    ("gkd", False): 2e-5,
    ("gkd", True): 2e-4,
    ("dpo", False): 1e-6,
    ("dpo", True): 5e-6,
}
DEFAULT_BETA = {"gkd": 0.0, "dpo": 0.1}
DEFAULT_LORA_R, DEFAULT_LORA_ALPHA = 16, 32


@dataclass(frozen=True)
class DistillOptions:
    """What `redumix distill` was asked to do; None means "the default" (see `resolved`).

    Attributes:
        objective: "gkd" or "dpo".
        model: the base model; None: the one named by the pairs' "model" field.
        lam: mixture weight of x for every pair (gkd); None: each pair's own lambda.
        beta: gkd: the generalised JSD's interpolation in [0, 1] (0: forward KL, the seed's
            loss); dpo: the strength of the KL penalty (> 0). None: 0 for gkd, 0.1 for dpo.
        lora: train low-rank adapters (merged into the saved model) instead of every weight.
        max_steps: optimizer steps; None: as many as `epochs` take.
        lr: peak learning rate (linear decay); None: `DEFAULT_LR` for the objective.
        save_steps: a checkpoint every this many optimizer steps (for resuming).
        rule: which records of a run folder become pairs (harvest's rules); None: "improved".
        force: move an existing model (or other files) in the output folder aside first.
        keep_checkpoints: leave OUT/checkpoints/ in place after the model is saved.
    """

    objective: str = "gkd"
    model: str | None = None
    lam: float | None = None
    beta: float | None = None
    lora: bool = False
    lora_r: int | None = None
    lora_alpha: float | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    lr: float | None = None
    batch_size: int = 4
    grad_accum: int = 1
    save_steps: int = 50
    seed: int = 0
    # float32: pure bfloat16 training keeps weights and optimizer state in bf16, where small updates
    # round away; "auto" (bfloat16 where the hardware runs it natively) is taken, but not the default.
    dtype: str = "float32"
    device: str = "cpu"
    rule: str | None = None
    force: bool = False
    keep_checkpoints: bool = False

    def resolved(self) -> DistillOptions:
        """These options checked, with every default filled in.

        Raises:
            ValueError: naming the flag, its value and the fix.
        """
        check_options(self)
        lora_r = self.lora_r if self.lora_r is not None else DEFAULT_LORA_R
        lora_alpha = self.lora_alpha if self.lora_alpha is not None else DEFAULT_LORA_ALPHA
        return dataclasses.replace(
            self,
            beta=self.beta if self.beta is not None else DEFAULT_BETA[self.objective],
            lr=self.lr if self.lr is not None else DEFAULT_LR[(self.objective, self.lora)],
            lora_r=lora_r if self.lora else None,
            lora_alpha=float(lora_alpha) if self.lora else None,
            dtype=resolve_dtype(self.dtype, resolve_device(self.device)),  # "auto" -> the dtype that trains
        )


def check_options(o: DistillOptions) -> None:
    """Every flag on its own and against the others, before any file is read.

    Raises:
        ValueError: naming the flag, its value and the fix.
    """
    if o.objective not in OBJECTIVES:
        raise ValueError(unknown_name_message("objective", o.objective, OBJECTIVES))
    if o.rule is not None and o.rule not in RULES:
        raise ValueError(unknown_name_message("harvest rule", o.rule, RULES))
    device = resolve_device(o.device, flag="--device")
    resolve_dtype(o.dtype, device, flag="--dtype")  # unknown, or one the device cannot run well
    if device.startswith("cuda:") and device != "cuda:0":
        raise ValueError(f"--device (={o.device!r}): training runs on the first visible GPU; choose the GPU with "
                         f"CUDA_VISIBLE_DEVICES={device.split(':')[1]} and pass --device cuda")
    if o.lam is not None:
        if o.objective != "gkd":
            raise ValueError(f"--lam (={o.lam:g}) sets the teacher mixture of --objective gkd; leave it out for "
                             f"--objective {o.objective}")
        if not (math.isfinite(o.lam) and 0.0 <= o.lam <= 1.0):
            raise ValueError(f"--lam (={o.lam:g}) must be in [0, 1]: the teacher's weight on the original context x "
                             "(1 - lam goes to the reflective x2; 0 distils the redo context alone); leave it out to "
                             "use each pair's own lambda")
    if o.beta is not None:
        if o.objective == "gkd" and not (math.isfinite(o.beta) and 0.0 <= o.beta <= 1.0):
            raise ValueError(f"--beta (={o.beta:g}) must be in [0, 1] for gkd: 0 is forward KL (the seed's "
                             "cross-entropy under the mixture), 1 reverse KL, between a generalised JSD")
        if o.objective == "dpo" and not (math.isfinite(o.beta) and o.beta > 0):
            raise ValueError(f"--beta (={o.beta:g}) must be above 0 for dpo (the strength of the pull towards the "
                             "base model; TRL's default is 0.1)")
    if not o.lora:
        for flag, value in (("--lora-r", o.lora_r), ("--lora-alpha", o.lora_alpha)):
            if value is not None:
                raise ValueError(f"{flag} (={value:g}) sets the adapters of --lora; add --lora, or leave {flag} out")
    if o.lora_r is not None and o.lora_r < 1:
        raise ValueError(f"--lora-r (={o.lora_r}) must be 1 or more (the adapters' rank, e.g. 16)")
    if o.lora_alpha is not None and not (math.isfinite(o.lora_alpha) and o.lora_alpha > 0):
        raise ValueError(f"--lora-alpha (={o.lora_alpha:g}) must be above 0 (the adapters' scale, e.g. 32)")
    if not (math.isfinite(o.epochs) and o.epochs > 0):
        raise ValueError(f"--epochs (={o.epochs:g}) must be above 0 (passes over the pairs; fractions allowed)")
    if o.max_steps is not None and o.max_steps < 1:
        raise ValueError(f"--max-steps (={o.max_steps}) must be 1 or more; leave it out to train for --epochs")
    if o.lr is not None and not (math.isfinite(o.lr) and o.lr > 0):
        raise ValueError(f"--lr (={o.lr:g}) must be above 0, e.g. 2e-5; leave it out for the objective's default")
    for flag, value, meaning in (("--batch-size", o.batch_size, "pairs per forward pass"),
                                 ("--grad-accum", o.grad_accum, "batches per optimizer step"),
                                 ("--save-steps", o.save_steps, "optimizer steps between checkpoints")):
        if value < 1:
            raise ValueError(f"{flag} (={value}) must be 1 or more ({meaning})")
