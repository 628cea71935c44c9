"""`redumix distill`: fine-tune a model on what ReDuMix harvested, into a new model folder.

The source is a ReDuMix run (or sweep) folder, or a pairs file from `redumix harvest`;
each pair holds the original context x, the reflective context x2, the first attempt
and the mixture-decoded redo. Two objectives:

- gkd (default, the seed's §3.6): the student reads x alone and is pulled, token by token
  along the redo, towards the ReDuMix mixture of the base model under x and x2
  (`decoders.mixture.mix_logprobs` at the pair's lambda), with GKD's generalised JSD.
- dpo: TRL's DPO, the redo preferred over the first attempt.

The result is a plain model folder (LoRA adapters merged) that `redumix run --model OUT`
loads, with distill_config.json, training_log.csv and training_curve.png beside it.
Training runs through transformers' Trainer (TRL's for DPO): gradient accumulation,
checkpoints, resuming after an interrupt. TRL and peft are the optional `distill` extra.

Modules: options (flags and their checks), examples (reading pairs), sequences
(tokenising and batching), losses (pure functions), gkd and dpo (the trainers),
callbacks (progress bar, last checkpoint), whole_checkpoints, out_folder (the output
folder's life cycle), training_log (CSV and curve), run (`distill`).
"""

from __future__ import annotations

from harness.distill.options import DistillOptions
from harness.distill.run import DistillSummary, distill

__all__ = ["DistillOptions", "DistillSummary", "distill"]
