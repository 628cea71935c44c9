"""The settings of one distillation, checked in full before anything is read or loaded."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from harness.analysis.harvest import RULES
from harness.distill.guidance_schedule import SHAPES
from harness.distill.soft_sft import GRADIENTS, SoftInputs
from harness.engine.models import resolve_device, resolve_dtype
from harness.naming import unknown_name_message

OBJECTIVES: dict[str, str] = {
    "gkd": "generalised KD towards the ReDuMix mixture of the base model under x and x2 (the seed's §3.6)",
    "dpo": "TRL's DPO on prompt / chosen (the redo) / rejected (the first attempt)",
    "soft-sft": "cross-entropy of gold answers read with soft inputs alpha * E[gold] + (1 - alpha) * (p @ E), "
                "alpha warmed from 1 to a floor (the soft-latent seed's §5.1)",
}

# Learning rates that suit each objective when --lr is left out: adapters take larger steps
# than full fine-tuning; DPO's full fine-tuning rate is TRL's own default.
DEFAULT_LR: dict[tuple[str, bool], float] = {
    ("gkd", False): 2e-5,
    ("gkd", True): 2e-4,
    ("dpo", False): 1e-6,
    ("dpo", True): 5e-6,
    ("soft-sft", False): 2e-5,
    ("soft-sft", True): 2e-4,
}
DEFAULT_BETA = {"gkd": 0.0, "dpo": 0.1, "soft-sft": None}
# Soft SFT's settings and their defaults (the filter's: the soft decoders' own), and their flags.
FILTER_FIELDS = ("temperature", "top_k", "top_p", "min_p", "max_topk")
SOFT_DEFAULTS = {"guidance_start": 1.0, "guidance_floor": 0.0, "guidance_schedule": "linear", "soft_grad": "stop",
                 **{name: getattr(SoftInputs, name) for name in FILTER_FIELDS}}
SOFT_FLAGS = {name: "--" + name.replace("_", "-") for name in (*SOFT_DEFAULTS, "guidance_warmup", "clamp_gold")}
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
        guidance_start, guidance_floor, guidance_warmup, guidance_schedule (soft-sft): alpha
            starts at guidance_start (1: teacher forcing) and falls to guidance_floor (default 0:
            the inputs a soft decoder feeds) over guidance_warmup optimizer steps (None: half
            of the run's steps), "linear" or "cosine".
        clamp_gold (soft-sft): raise the gold token's weight in p to at least alpha instead
            of mixing alpha * E[gold] into every input.
        soft_grad (soft-sft): "stop" (default) or "flow", the gradient through p.
        temperature, top_k, top_p, min_p, max_topk (soft-sft): how p is filtered, as the
            soft decoders filter it; None: their defaults.
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
    guidance_start: float | None = None
    guidance_floor: float | None = None
    guidance_warmup: int | None = None
    guidance_schedule: str | None = None
    clamp_gold: bool = False
    soft_grad: str | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    max_topk: int | None = None

    def soft_inputs(self) -> SoftInputs:
        """Soft SFT's filter and mixing (of resolved options)."""
        return SoftInputs(**{name: getattr(self, name) for name in FILTER_FIELDS}, clamp_gold=self.clamp_gold,
                          gradient=self.soft_grad)

    def resolved(self) -> DistillOptions:
        """These options checked, with every default filled in.

        Raises:
            ValueError: naming the flag, its value and the fix.
        """
        check_options(self)
        lora_r = self.lora_r if self.lora_r is not None else DEFAULT_LORA_R
        lora_alpha = self.lora_alpha if self.lora_alpha is not None else DEFAULT_LORA_ALPHA
        soft = {name: default if getattr(self, name) is None else getattr(self, name)
                for name, default in SOFT_DEFAULTS.items()} if self.objective == "soft-sft" else {}
        return dataclasses.replace(
            self,
            **soft,
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
        if o.objective == "soft-sft":
            raise ValueError(f"--beta (={o.beta:g}) sets gkd's divergence or dpo's KL strength; soft-sft has none, "
                             "leave it out")
        if o.objective == "dpo" and not (math.isfinite(o.beta) and o.beta > 0):
            raise ValueError(f"--beta (={o.beta:g}) must be above 0 for dpo (the strength of the pull towards the "
                             "base model; TRL's default is 0.1)")
    check_soft_options(o)
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


def check_soft_options(o: DistillOptions) -> None:
    """Soft SFT's flags: given only with --objective soft-sft, each in its range.

    Raises:
        ValueError: naming the flag, its value and the fix.
    """
    given = {name: getattr(o, name) for name in SOFT_FLAGS if getattr(o, name) not in (None, False)}
    if o.objective != "soft-sft":
        for name, value in given.items():
            shown = "" if value is True else f" (={value!r})" if isinstance(value, str) else f" (={value:g})"
            raise ValueError(f"{SOFT_FLAGS[name]}{shown} is a setting of --objective soft-sft; add --objective "
                             f"soft-sft, or leave {SOFT_FLAGS[name]} out")
        return
    start = o.guidance_start if o.guidance_start is not None else SOFT_DEFAULTS["guidance_start"]
    if o.guidance_start is not None and not (math.isfinite(start) and 0.0 <= start <= 1.0):
        raise ValueError(f"--guidance-start (={start:g}) must be in [0, 1]: the gold token's weight in the first "
                         "steps' inputs (1, the default: plain teacher forcing)")
    if o.guidance_floor is not None and not (math.isfinite(o.guidance_floor) and 0.0 <= o.guidance_floor <= start):
        raise ValueError(f"--guidance-floor (={o.guidance_floor:g}) must be in [0, {start:g}] (0 up to "
                         "--guidance-start): the gold token's weight once the warm-up is over (0, the default: the "
                         "model's own distribution alone, as a soft decoder feeds it)")
    if o.guidance_warmup is not None and o.guidance_warmup < 0:
        raise ValueError(f"--guidance-warmup (={o.guidance_warmup}) must be 0 or more (optimizer steps from "
                         "--guidance-start to --guidance-floor); leave it out for half of the run's steps")
    if o.guidance_schedule is not None and o.guidance_schedule not in SHAPES:
        raise ValueError(unknown_name_message("--guidance-schedule", o.guidance_schedule, SHAPES))
    if o.soft_grad is not None and o.soft_grad not in GRADIENTS:
        raise ValueError(unknown_name_message("--soft-grad", o.soft_grad, GRADIENTS))
    if o.temperature is not None and not (math.isfinite(o.temperature) and o.temperature > 0):
        raise ValueError(f"--temperature (={o.temperature:g}) must be above 0 (the soft decoders' default is "
                         f"{SOFT_DEFAULTS['temperature']:g})")
    if o.top_k is not None and o.top_k < 0:
        raise ValueError(f"--top-k (={o.top_k}) must be 0 or more; 0 keeps every token")
    if o.top_p is not None and not 0.0 < o.top_p <= 1.0:
        raise ValueError(f"--top-p (={o.top_p:g}) must be in (0, 1]; 1 turns it off")
    if o.min_p is not None and not 0.0 <= o.min_p < 1.0:
        raise ValueError(f"--min-p (={o.min_p:g}) must be in [0, 1); 0 turns it off")
    if o.max_topk is not None and o.max_topk < 1:
        raise ValueError(f"--max-topk (={o.max_topk}) must be 1 or more (tokens mixed into each input; the soft "
                         f"decoders' default is {SOFT_DEFAULTS['max_topk']})")
