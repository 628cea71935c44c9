"""Pairs -> token sequences for training, cut exactly as the engine cuts them.

The answer is tokenised once, as a continuation of x (`encode(x + answer)` after the ids
of x, which is how ReDuMix scores a continuation), and the same answer ids follow x2 in
the teacher's second stream, so position i of the answer means the same token in every
stream.

Batches are left-padded like the engine's (positions counted from each row's first real
token), so every row's answer ends in the last column: one `logits_to_keep` covers the
answers of a whole batch, and the answer columns line up across the streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from harness.engine.prompts import encode


@dataclass(frozen=True)
class GkdExample:
    x_ids: list[int]  # the original context x (what the student sees)
    x2_ids: list[int]  # the reflective context x2 (the teacher's second stream)
    target: list[int]  # the redo, as a continuation of x
    lam: float  # the teacher's weight on x


@dataclass(frozen=True)
class PreferenceExample:
    prompt_ids: list[int]
    chosen_ids: list[int]  # the redo, then EOS
    rejected_ids: list[int]  # the first attempt, then EOS


def continuation_ids(tokenizer: PreTrainedTokenizerBase, context: str, text: str) -> tuple[list[int], list[int]]:
    """(ids of `context`, ids of `text` read after it), as the engine tokenises a continuation."""
    context_ids = encode(tokenizer, context)
    return context_ids, encode(tokenizer, context + text)[len(context_ids) :]


def gkd_examples(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[dict], lam: float | None,
                 max_length: int) -> tuple[list[GkdExample], dict[str, int]]:
    """Examples for the pairs that can be trained on, and how many were left out and why."""
    examples, skipped = [], {"empty prompt": 0, "empty redo": 0, "too long": 0}
    for pair in pairs:
        x_ids, target = continuation_ids(tokenizer, pair["prompt"], pair["chosen"])
        x2_ids = encode(tokenizer, pair["reflective_prompt"])
        if not x_ids or not x2_ids:
            skipped["empty prompt"] += 1
        elif not target:
            skipped["empty redo"] += 1
        elif max(len(x_ids), len(x2_ids)) + len(target) > max_length:
            skipped["too long"] += 1
        else:
            weight = float(lam if lam is not None else pair["lambda"])
            examples.append(GkdExample(x_ids=x_ids, x2_ids=x2_ids, target=target, lam=weight))
    return examples, {k: v for k, v in skipped.items() if v}


def preference_examples(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[dict],
                        max_length: int) -> tuple[list[PreferenceExample], dict[str, int]]:
    """DPO examples with the engine's tokenisation: the chat-rendered prompt gets no second template
    and no second BOS (TRL would add the tokenizer's specials to plain strings); EOS ends both answers,
    as TRL does for plain text."""
    examples, skipped = [], {"empty prompt": 0, "empty answer": 0, "too long": 0}
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for pair in pairs:
        prompt_ids, chosen = continuation_ids(tokenizer, pair["prompt"], pair["chosen"])
        _, rejected = continuation_ids(tokenizer, pair["prompt"], pair["rejected"])
        if not prompt_ids:
            skipped["empty prompt"] += 1
        elif not chosen or not rejected:
            skipped["empty answer"] += 1
        elif len(prompt_ids) + max(len(chosen), len(rejected)) + len(eos) > max_length:
            skipped["too long"] += 1
        else:
            examples.append(PreferenceExample(prompt_ids, chosen + eos, rejected + eos))
    return examples, {k: v for k, v in skipped.items() if v}


class MixtureCollator:
    """GkdExamples -> a left-padded batch: the student's stream (x, answer), the teacher's
    second stream (x2, answer), the answer mask and each row's lambda.

    Each stream holds its context and the answer minus its last token (position t predicts
    token t + 1); `target_mask` (B, n) marks, right-aligned, the answer columns of each row.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[GkdExample]) -> dict[str, torch.Tensor]:
        width = max(len(e.target) for e in examples)
        target_mask = torch.zeros((len(examples), width), dtype=torch.bool)
        for row, e in enumerate(examples):
            target_mask[row, width - len(e.target) :] = True
        batch = {"target_mask": target_mask, "lam": torch.tensor([e.lam for e in examples], dtype=torch.float32)}
        for prefix, contexts in (("", [e.x_ids for e in examples]), ("reflective_", [e.x2_ids for e in examples])):
            rows = [list(c) + e.target[:-1] for c, e in zip(contexts, examples, strict=True)]
            ids, mask, positions = left_padded(rows, self.pad_token_id)
            batch |= {f"{prefix}input_ids": ids, f"{prefix}attention_mask": mask, f"{prefix}position_ids": positions}
        return batch


def left_padded(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, ...]:
    """(ids, attention mask, position ids) of `rows` padded on the left to one width."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return ids, mask, positions
