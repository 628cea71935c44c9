"""DPO on the harvested pairs with TRL's `DPOTrainer`: the redo is chosen, the first attempt rejected.

The pairs' prompts are already chat-rendered text. Left to itself TRL would tokenise a
plain-string prompt with the tokenizer's special tokens, a second BOS for tokenizers
that add one; so the pairs are tokenised here exactly as the engine does
(`harness.distill.sequences.preference_examples`) and TRL's own preprocessing is
skipped. The reference model is the base: a frozen copy made here (TRL would reload it
by name from disk), or with LoRA the student with its adapters disabled (TRL's way).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from harness.distill.deps import require
from harness.distill.sequences import PreferenceExample
from harness.distill.whole_checkpoints import SavesWhole


def dpo_trainer(model, tokenizer, examples: Sequence[PreferenceExample], config, peft_config=None):
    """A DPOTrainer over pre-tokenised `examples` (`config`: a trl.DPOConfig); LoRA when `peft_config`."""
    datasets = require("datasets", "--objective dpo")
    trl = require("trl", "--objective dpo")

    class EngineTokenizedDPOTrainer(SavesWhole, trl.DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # tokenised already, as the engine reads prompts

    rows = [{"prompt_ids": e.prompt_ids, "chosen_ids": e.chosen_ids, "rejected_ids": e.rejected_ids}
            for e in examples]
    reference = copy.deepcopy(model) if peft_config is None else None
    return EngineTokenizedDPOTrainer(model=model, ref_model=reference, args=config,
                                     train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                                     peft_config=peft_config)
