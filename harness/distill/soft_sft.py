"""Soft SFT: teaching a model to read the soft inputs a soft decoder feeds it.

A pretrained model has only ever read single token embeddings; a soft decoder feeds it
mixtures `p @ E` of them, which lie off that distribution. Soft SFT trains on gold answers
while feeding, at every answer position t,

    e_t = alpha * E[gold_t] + (1 - alpha) * (p_t @ E),

where p_t is the model's own distribution over that position (read from the step
before), filtered exactly as the soft decoders filter it (temperature, top-k, top-p,
min-p, then at most `max_topk` tokens; `decoders.soft_weights.kept_distribution`). The
loss is the cross-entropy of the gold tokens under the model's unfiltered distribution.
alpha follows a `GuidanceSchedule` from 1 (plain teacher forcing) down to a floor.

With `clamp_gold` the gold token's weight is raised to at least alpha instead: where
the model already gives the gold token alpha or more, it reads its own p unchanged;
elsewhere the gold token gets exactly alpha and the other kept tokens share the rest in
proportion to p.

Gradient through p: "stop" (the default) treats p as a given input, as it is when
decoding, so every position's distribution is trained by its own gold token alone;
"flow" also lets later tokens' losses reshape the distributions that made their inputs,
which trains the model to write mixtures that read well, at the price of pulling those
distributions away from their own gold tokens. At alpha 1 the two are the same.

Each input depends on the step before, so the answer is read one position at a time
with the KV cache: one forward of the prompt, then one single-position forward per answer
token; the backward pass runs through the whole chain.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedTokenizerBase, Trainer

from decoders.soft_weights import kept_distribution
from decoders.thinking import ThinkingDecoder
from harness.distill.guidance_schedule import GuidanceSchedule
from harness.distill.losses import masked_mean
from harness.distill.sequences import continuation_ids, left_padded
from harness.distill.whole_checkpoints import SavesWhole
from harness.engine.prompts import render_chat

GRADIENTS = {
    "stop": "p is a given input, as when decoding; each distribution is trained by its own gold token",
    "flow": "later tokens' losses also reshape the distributions that made their inputs",
}
# The soft decoders' own defaults, so a model trained with the defaults reads what `--decoder soft` feeds.
_DECODER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ThinkingDecoder)}


@dataclass(frozen=True)
class SoftInputs:
    """How the model's distribution becomes its next input (the soft decoders' filter), and
    how the gold token is mixed in. Defaults: the soft decoders' own."""

    temperature: float = _DECODER_DEFAULTS["temperature"]
    top_k: int = _DECODER_DEFAULTS["top_k"]
    top_p: float = _DECODER_DEFAULTS["top_p"]
    min_p: float = _DECODER_DEFAULTS["min_p"]
    max_topk: int = _DECODER_DEFAULTS["max_topk"]
    clamp_gold: bool = False
    gradient: str = "stop"


@dataclass(frozen=True)
class SoftSftExample:
    prompt_ids: list[int]
    target: list[int]  # the gold answer as a continuation of the prompt, then EOS


@dataclass
class SoftForward:
    """What one soft-fed pass over a batch gives."""

    loss: Tensor  # mean cross-entropy of the gold answer tokens
    logits: Tensor  # (B, n, V): position t's logits, read after the soft inputs of positions < t
    gold_weight: Tensor  # (B, n - 1): the gold token's weight in each fed input
    gold_kept: Tensor | None  # (B, n - 1): whether the gold token was among p's kept tokens (None at alpha 1)
    fed: list[Tensor] | None  # the (B, d) embeddings fed at positions 1..n-1, when asked for


def soft_sft_examples(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[dict],
                      max_length: int) -> tuple[list[SoftSftExample], dict[str, int]]:
    """Examples for the pairs that can be trained on, and how many were left out and why.

    A pair gives its rendered "prompt" (harvested pairs) or its "user_prompt" (an environment's
    problem, rendered here as the engine renders it), and its gold answer "chosen". EOS ends
    every answer.
    """
    examples, skipped = [], {"empty prompt": 0, "empty answer": 0, "too long": 0}
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for pair in pairs:
        prompt = pair.get("prompt")
        if prompt is None:
            prompt = render_chat(tokenizer, [{"role": "user", "content": pair["user_prompt"]}])
        prompt_ids, target = continuation_ids(tokenizer, prompt, pair["chosen"])
        if not prompt_ids:
            skipped["empty prompt"] += 1
        elif not target:
            skipped["empty answer"] += 1
        elif len(prompt_ids) + len(target) + len(eos) > max_length:
            skipped["too long"] += 1
        else:
            examples.append(SoftSftExample(prompt_ids, target + eos))
    return examples, {k: v for k, v in skipped.items() if v}


class SoftSftCollator:
    """SoftSftExamples -> the prompts left-padded (ids, mask, positions) and the answers
    right-padded: `labels` (B, n) and `target_mask` (B, n) marking each row's answer tokens."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[SoftSftExample]) -> dict[str, Tensor]:
        ids, mask, positions = left_padded([e.prompt_ids for e in examples], self.pad_token_id)
        width = max(len(e.target) for e in examples)
        labels = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        target_mask = torch.zeros((len(examples), width), dtype=torch.bool)
        for row, e in enumerate(examples):
            labels[row, : len(e.target)] = torch.as_tensor(e.target, dtype=torch.long)
            target_mask[row, : len(e.target)] = True
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels,
                "target_mask": target_mask}


def mixed_input(embed: nn.Module, logits: Tensor, gold: Tensor, alpha: float,
                soft: SoftInputs) -> tuple[Tensor, Tensor, Tensor]:
    """The input for positions whose gold tokens are `gold` (B,), given the logits (B, V) that
    predicted them: ((B, d) embeddings, (B,) the gold token's weight in them, (B,) whether the
    gold token is among p's kept tokens). `embed`: the model's input embedding layer (read
    through its forward, so a layer that scales its output is mixed as the model reads it)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    if soft.gradient == "stop":
        logprobs = logprobs.detach()
    probs, ids = kept_distribution(logprobs, soft.temperature, soft.top_k, soft.top_p, soft.min_p, soft.max_topk)
    is_gold = (ids == gold[:, None]) & (probs > 0)
    p_gold = (probs * is_gold).sum(-1)
    weight = torch.full_like(p_gold, alpha)
    if soft.clamp_gold:
        # One-hot weight a with a + (1 - a) * p_gold = alpha where p_gold < alpha, 0 where it is above.
        weight = ((alpha - p_gold) / (1.0 - p_gold).clamp_min(1e-12)).clamp(0.0, 1.0)
    gold_embedding = embed(gold)
    dtype = gold_embedding.dtype
    from_p = (probs.to(dtype).unsqueeze(-1) * embed(ids)).sum(dim=1)  # p @ E over the kept tokens
    w = weight.to(dtype).unsqueeze(-1)
    fed = w * gold_embedding + (1.0 - w) * from_p
    return fed, (weight + (1.0 - weight) * p_gold).detach(), is_gold.any(-1)


def soft_forward(model: nn.Module, batch: dict[str, Tensor], alpha: float, soft: SoftInputs,
                 keep_fed: bool = False) -> SoftForward:
    """Read the batch's answers position by position (KV cache), feeding soft inputs at `alpha`.

    At alpha 1 every input is the gold token's embedding, so the logits and the loss are those
    of plain teacher forcing, and the answer is read in one pass (unless `keep_fed`).
    """
    ids, mask, positions = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
    labels, target_mask = batch["labels"], batch["target_mask"]
    rows, width = labels.shape
    if alpha >= 1.0 and not keep_fed:
        return _teacher_forced(model, batch)
    embed = model.get_input_embeddings()
    cache = _new_cache(model)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **cache)
    logits = [out.logits[:, -1]]
    next_position = mask.sum(dim=-1)  # prompts are left-padded: each row's positions count from its first token
    ones = torch.ones((rows, 1), dtype=mask.dtype, device=mask.device)
    gold_weight, gold_kept, fed_all = [], [], []
    for t in range(width - 1):
        gold = labels[:, t]
        if alpha >= 1.0:  # teacher forcing (step by step only when the fed inputs are asked for)
            fed = embed(gold)
            gold_weight.append(torch.ones(rows, device=labels.device))
        else:
            fed, weight, kept = mixed_input(embed, logits[-1], gold, alpha, soft)
            gold_weight.append(weight)
            gold_kept.append(kept)
        if keep_fed:
            fed_all.append(fed)
        mask = torch.cat([mask, ones], dim=1)
        out = model(inputs_embeds=fed[:, None], attention_mask=mask, position_ids=(next_position + t)[:, None],
                    use_cache=True, **cache)
        logits.append(out.logits[:, -1])
    logits = torch.stack(logits, dim=1)
    empty = torch.zeros((rows, 0), device=labels.device)
    return SoftForward(
        loss=_answer_loss(logits, labels, target_mask), logits=logits,
        gold_weight=torch.stack(gold_weight, dim=1) if gold_weight else empty,
        gold_kept=torch.stack(gold_kept, dim=1) if gold_kept else (empty.bool() if width == 1 else None),
        fed=fed_all if keep_fed else None,
    )


def _teacher_forced(model: nn.Module, batch: dict[str, Tensor]) -> SoftForward:
    """`soft_forward` at alpha 1 in one pass: every input is a gold token, none depends on the step
    before, so the prompt and the answer are read together as plain teacher forcing."""
    mask, labels, target_mask = batch["attention_mask"], batch["labels"], batch["target_mask"]
    rows, width = labels.shape
    steps = torch.arange(width - 1, device=labels.device)
    logits = model(
        input_ids=torch.cat([batch["input_ids"], labels[:, :-1]], dim=1),
        attention_mask=torch.cat([mask, torch.ones_like(labels[:, :-1], dtype=mask.dtype)], dim=1),
        position_ids=torch.cat([batch["position_ids"], mask.sum(dim=-1, keepdim=True) + steps], dim=1),
        logits_to_keep=width, use_cache=False,
    ).logits
    return SoftForward(loss=_answer_loss(logits, labels, target_mask), logits=logits,
                       gold_weight=torch.ones((rows, width - 1), device=labels.device), gold_kept=None, fed=None)


def _answer_loss(logits: Tensor, labels: Tensor, target_mask: Tensor) -> Tensor:
    rows, width = labels.shape
    per_token = F.cross_entropy(logits.float().reshape(rows * width, -1), labels.reshape(-1),
                                reduction="none").view(rows, width)
    return masked_mean(per_token, target_mask)


def _new_cache(model: nn.Module) -> dict[str, DynamicCache]:
    """An empty KV cache (transformers' own, whose appends autograd follows) under the argument name
    the model takes: newer transformers call it `cache`, older ones `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under LoRA: the model itself
    name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    return {name: DynamicCache(config=base.config)}


@torch.no_grad()
def soft_cross_entropy(model: nn.Module, examples: Sequence[SoftSftExample], pad_token_id: int, alpha: float,
                       soft: SoftInputs, batch_size: int = 8) -> float:
    """Mean cross-entropy per gold answer token (nats) with soft inputs at `alpha` (0: the
    model's own filtered distributions, as a soft decoder feeds them; 1: teacher forcing)."""
    collate = SoftSftCollator(pad_token_id)
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size]).items()}
        count = int(batch["target_mask"].sum())
        total += soft_forward(model, batch, alpha, soft).loss.item() * count
        tokens += count
    return total / max(tokens, 1)


class SoftSftTrainer(SavesWhole, Trainer):
    """`Trainer` whose loss is the gold tokens' cross-entropy under soft inputs (`soft_forward`),
    alpha read from the guidance schedule at the optimizer step being taken (batches from
    `SoftSftCollator`). Checkpoints carry the step, so a resumed run continues the schedule."""

    # The loss is a mean over one batch's answer tokens; Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, soft: SoftInputs, start: float = 1.0, floor: float = 0.0,
                 warmup_steps: int | None = None, shape: str = "linear", **kwargs) -> None:
        """`warmup_steps`: None for half of the run's optimizer steps."""
        super().__init__(*args, **kwargs)
        self.soft = soft
        self._guidance = {"start": start, "floor": floor, "warmup_steps": warmup_steps, "shape": shape}
        GuidanceSchedule(**{**self._guidance, "warmup_steps": warmup_steps or 0})  # refuse bad values now
        self._metrics: dict[str, list[float]] = defaultdict(list)

    @property
    def schedule(self) -> GuidanceSchedule:
        """The guidance schedule; a warm-up left as None is half of the run's steps (known once training starts)."""
        warmup = self._guidance["warmup_steps"]
        if warmup is None:
            warmup = self.state.max_steps // 2
        return GuidanceSchedule(**{**self._guidance, "warmup_steps": warmup})

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        alpha = self.schedule.alpha(self.state.global_step)
        result = soft_forward(model, inputs, alpha, self.soft)
        fed_mask = inputs["target_mask"][:, 1:]  # positions that read a fed input
        if fed_mask.any():
            self._metrics["gold_weight"].append(masked_mean(result.gold_weight, fed_mask).item())
            if result.gold_kept is not None:
                self._metrics["gold_kept"].append(masked_mean(result.gold_kept.float(), fed_mask).item())
        self._metrics["guidance_alpha"].append(alpha)
        return (result.loss, {"logits": result.logits}) if return_outputs else result.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add this logging window's means: alpha, the gold token's weight in the inputs, and how
        often the gold token was among the kept tokens."""
        if "loss" in logs:
            for key, values in self._metrics.items():
                if values:
                    logs[key] = sum(values) / len(values)
            self._metrics.clear()
        super().log(logs, start_time)
