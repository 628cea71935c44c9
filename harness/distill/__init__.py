"""`redumix distill`: fine-tune a model on what ReDuMix harvested, into a new model folder.

The source is a ReDuMix run (or sweep) folder, or a pairs file from `redumix harvest`;
each pair holds the original context x, the reflective context x2, the first attempt
and the mixture-decoded redo. Three objectives:

- gkd (default, the seed's §3.6): the student reads x alone and is pulled, token by token
  along the redo, towards the ReDuMix mixture of the base model under x and x2
  (`decoders.mixture.mix_logprobs` at the pair's lambda), with GKD's generalised JSD.
- dpo: TRL's DPO, the redo preferred over the first attempt.
- soft-sft (the soft-latent seed's §5.1): the answers' cross-entropy while the model reads,
  at each answer position, a mix of the gold token's embedding and its own filtered
  distribution's `p @ E`, the gold token's weight warmed from 1 to a floor; it teaches a
  model to read the soft inputs of the soft decoders. Its source may also be an
  environment's problems (`--env`), whose gold answers are the answers.

The result is a plain model folder (LoRA adapters merged) that `redumix run --model OUT`
loads, with distill_config.json, training_log.csv and training_curve.png beside it.
Training runs through transformers' Trainer (TRL's for DPO): gradient accumulation,
checkpoints, resuming after an interrupt. TRL and peft are the optional `distill` extra.

Modules: options (flags and their checks), examples (reading pairs), env_answers (an
environment's gold answers as pairs), sequences (tokenising and batching), losses (pure
functions), gkd, dpo and soft_sft (the trainers), guidance_schedule (soft SFT's alpha),
callbacks (progress bar, last checkpoint), whole_checkpoints, out_folder (the output
folder's life cycle), training_log (CSV and curve), run (`distill`).
"""

from __future__ import annotations

from harness.distill.env_answers import EnvSource
from harness.distill.options import DistillOptions
from harness.distill.run import DistillSummary, distill

__all__ = ["DistillOptions", "DistillSummary", "EnvSource", "distill"]
