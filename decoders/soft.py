"""The soft (concept-token) decoder: Soft Thinking and training-free MoT-G.

While thinking, each row feeds a weighted mixture of its kept tokens' embeddings:
- `probs`: the kept probabilities themselves (Soft Thinking); records the top-1 token.
- `dirichlet`: weights ~ Dirichlet(alpha * p) over the kept set (MoT-G, Randomized Soft
  Thinking); records a token drawn from those weights.
- `different_tokens`: `num_tokens` tokens drawn without replacement, weighted by their
  renormalised probabilities (MoT-G); records the first drawn (an exact sample from p).
Thinking, its end and the answer phase: see `decoders.thinking`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from decoders.registry import register_decoder
from decoders.soft_weights import different_tokens, dirichlet, draw_position, gumbel_noise
from decoders.thinking import ThinkingDecoder
from decoders.thinking_report import THINKING
from harness.naming import unknown_name_message

MODES = ("probs", "dirichlet", "different_tokens")


@register_decoder("soft", contributes=THINKING)
@dataclass(frozen=True)
class Soft(ThinkingDecoder):
    """Attributes (beyond ThinkingDecoder's): `mode` (see the module docstring), `alpha`
    (Dirichlet concentration), `num_tokens` (tokens drawn by `different_tokens`)."""

    mode: str = "probs"
    # The settings the contract tests run it with on a tiny model (a marker it can write).
    contract_config: ClassVar[dict[str, str]] = {"think_end": "ab", "temperature": "1.0"}
    alpha: float = 1.0
    num_tokens: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(unknown_name_message("mode", self.mode, MODES))
        if not self.alpha > 0:
            raise ValueError(f"alpha (={self.alpha}) must be > 0 (Dirichlet concentration); e.g. alpha=1.0")
        if self.num_tokens < 1:
            raise ValueError(f"num_tokens (={self.num_tokens}) must be >= 1; e.g. num_tokens=2")

    @property
    def deterministic(self) -> bool:
        return self.mode == "probs" and self.after_thinking_temperature == 0

    def mix(self, probs: Tensor, rngs: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
        if self.mode == "probs":
            return probs, torch.zeros(probs.shape[0], dtype=torch.long, device=probs.device)
        if self.mode == "dirichlet":
            weights = dirichlet(probs, self.alpha, rngs)
            return weights, draw_position(weights, rngs)
        return different_tokens(probs, gumbel_noise(probs.shape[-1], rngs, probs.device), self.num_tokens)
