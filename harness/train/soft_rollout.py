"""Mixture (MoT-G) rollouts: completions decoded by our soft decoders on our engine, with what
rebuilds every soft input exactly and scores it afterwards.

The chain of thought is fed as `weights @ E` over the kept tokens (`different_tokens`,
`dirichlet` or `gumbel`), and the answer after the thinking marker is sampled token by
token (`decoders.thinking`). For each step of each row the rollout keeps:

- `fed`: whether the step's input was a mixture (False: its token was fed);
- `forced`: whether the token was forced in (the end-of-thinking marker after a budget),
  not drawn: such tokens are no action of the policy and carry no loss;
- `ids`, `weights` (K each): the kept ids and the weights over them that were fed;
- `kept` (K): which of them the top-k / top-p / min-p filter kept;
- `scores` (K): for `gumbel`, the perturbed scores log p + g the weights came from.

Every row draws from its own seeded generator, so a row decodes the same whatever
shares its batch, and a rollout is repeated exactly from its seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor

from decoders.base import NOT_FORCED
from decoders.gumbel import Gumbel
from decoders.soft import Soft
from decoders.soft_weights import gumbel_noise, gumbel_softmax, kept_from_tempered

# While a Gumbel rollout runs: [the rows that were thinking at this step, their noise].
_GUMBEL_NOISE: ContextVar[list | None] = ContextVar("gumbel_noise", default=None)


class RecordingGumbel(Gumbel):
    """The gumbel decoder, drawing exactly as it does, that also hands its noise to the rollout:
    the weights alone cannot give it back (softmax drops a constant, and small weights underflow)."""

    def step(self, logprobs, rngs, state):
        box = _GUMBEL_NOISE.get()
        if box is not None:
            box[:] = [state["thinking"].clone()]
        return super().step(logprobs, rngs, state)

    def mix(self, probs: Tensor, rngs) -> tuple[Tensor, Tensor]:
        noise = gumbel_noise(probs.shape[-1], rngs, probs.device)
        box = _GUMBEL_NOISE.get()
        if box is not None:
            box.append(noise)
        return gumbel_softmax(probs, noise, float(self.tau))


def rollout_decoder(name: str, config: dict, tokenizer):
    """The soft decoder of a mixture rollout (`name`: "soft" or "gumbel", `config`: every parameter), bound."""
    cls = RecordingGumbel if name == "gumbel" else Soft
    return cls(**config).bind(tokenizer)


@dataclass
class SoftRollout:
    """Per row: the prompt and completion ids, and per completion step what `steps_of` lists."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    fed: list[list[bool]]
    forced: list[list[bool]]
    ids: list[list[Tensor]]
    weights: list[list[Tensor]]
    kept: list[list[Tensor]]
    scores: list[list[Tensor]]

    def padded(self, length: int, width: int) -> dict[str, Tensor]:
        """The per-step records as (rows, length[, width]) tensors, padded after each row's end with
        steps that were not soft (what TRL's right-padded completions line up with)."""
        rows = len(self.completion_ids)
        out = {
            "soft_fed": torch.zeros(rows, length, dtype=torch.bool),
            "soft_ids": torch.zeros(rows, length, width, dtype=torch.long),
            "soft_weights": torch.zeros(rows, length, width),
            "soft_kept": torch.zeros(rows, length, width, dtype=torch.bool),
            "soft_scores": torch.zeros(rows, length, width),
        }
        for r in range(rows):
            for t, fed in enumerate(self.fed[r]):
                if not fed:
                    continue
                out["soft_fed"][r, t] = True
                out["soft_ids"][r, t] = self.ids[r][t]
                out["soft_weights"][r, t] = self.weights[r][t]
                out["soft_kept"][r, t] = self.kept[r][t]
                out["soft_scores"][r, t] = self.scores[r][t]
        return out

    def effective_tokens(self) -> list[float]:
        """exp(entropy of the weights) of every soft step: how many tokens each mixture effectively fed."""
        values = []
        for row_fed, row_weights in zip(self.fed, self.weights, strict=True):
            for fed, w in zip(row_fed, row_weights, strict=True):
                if fed:
                    p = w[w > 0]
                    values.append(float(torch.exp(-(p * p.log()).sum())))
        return values


def soft_rollout(loaded, decoder, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
                 rngs: Sequence[torch.Generator]) -> SoftRollout:
    """Decode every prompt with the bound soft `decoder` on `loaded` (a LoadedModel), keeping what
    rebuilds each soft input; `rngs`: one seeded generator per row."""
    from harness.engine.lockstep import decode

    rows = len(prompt_ids)
    width = decoder.max_topk
    record = SoftRollout(prompt_ids=[list(p) for p in prompt_ids], completion_ids=[], fed=[[] for _ in range(rows)],
                         forced=[[] for _ in range(rows)], ids=[[] for _ in range(rows)],
                         weights=[[] for _ in range(rows)], kept=[[] for _ in range(rows)],
                         scores=[[] for _ in range(rows)])
    box: list = []
    sampling = decoder.sampling

    def on_step(view) -> None:
        step = view.step
        n = len(view.rows)
        forced = (step.forced_ids.cpu() != NOT_FORCED) if step.forced_ids is not None else torch.zeros(n, dtype=bool)
        fed = step.soft_mask.cpu() & ~forced
        # The kept distribution the decoder mixed from, recomputed as it computes it.
        tempered = torch.log_softmax(view.logprobs[0] / sampling.temperature, dim=-1)
        probs, ids = kept_from_tempered(tempered, sampling.top_k, sampling.top_p, sampling.min_p, decoder.max_topk)
        scores = torch.zeros(n, probs.shape[-1])
        if box:
            thinking, noise = box[0].cpu(), box[1].cpu() if len(box) > 1 else None
            if noise is not None:
                scores[thinking] = torch.log(probs[thinking].cpu()).masked_fill(probs[thinking].cpu() == 0, 0.0) + noise
        weights, soft_ids = step.soft_weights.cpu(), step.soft_ids.cpu()
        for i, row in enumerate(view.rows):
            record.fed[row].append(bool(fed[i]))
            record.forced[row].append(bool(forced[i]))
            record.ids[row].append(_width(soft_ids[i], width))
            record.weights[row].append(_width(weights[i], width))
            record.kept[row].append(_width(probs[i].cpu() > 0, width))
            record.scores[row].append(_width(scores[i], width))

    token = _GUMBEL_NOISE.set(box)
    try:
        with torch.no_grad():
            results = decode(loaded, [list(map(list, prompt_ids))], decoder, max_new_tokens=max_new_tokens,
                             rngs=list(rngs), on_step=on_step)
    finally:
        _GUMBEL_NOISE.reset(token)
    record.completion_ids = [r.token_ids for r in results]
    return record


def _width(values: Tensor, width: int) -> Tensor:
    """A row's K values padded (with zeros: weight 0, not kept) to `width`, the decoder's max_topk."""
    if values.shape[0] >= width:
        return values[:width].clone()
    return torch.cat([values, torch.zeros(width - values.shape[0], dtype=values.dtype)])


def row_generators(seed: int, step: int, rows: int) -> list[torch.Generator]:
    """One generator per row of the rollout at optimizer step `step`: a run repeats its rollouts
    exactly, a resumed one included."""
    return [torch.Generator().manual_seed((seed * 1_000_003 + step) * 10_007 + row) for row in range(rows)]

