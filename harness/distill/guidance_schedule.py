"""The guidance weight of soft SFT over training: warmed from `start` down to `floor`.

Soft SFT feeds each answer position `alpha * E[gold] + (1 - alpha) * (p @ E)`. At alpha 1
that is plain teacher forcing; lowering alpha moves the inputs towards the soft mixtures a
soft decoder feeds. The schedule starts at `start`, reaches `floor` after `warmup_steps`
optimizer steps (linearly or along a half cosine) and stays there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHAPES = {
    "linear": "alpha falls by the same amount every step",
    "cosine": "alpha falls slowly at first and last, fastest halfway (a half cosine)",
}


@dataclass(frozen=True)
class GuidanceSchedule:
    """Attributes:
        start: alpha of the first optimizer step, in [0, 1].
        floor: alpha from step `warmup_steps` on, in [0, start].
        warmup_steps: optimizer steps from start to floor (0: floor from the first step).
        shape: "linear" or "cosine" (see `SHAPES`).
    """

    start: float = 1.0
    floor: float = 0.0
    warmup_steps: int = 0
    shape: str = "linear"

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape (={self.shape!r}) must be one of {', '.join(SHAPES)}")
        if not (0.0 <= self.floor <= self.start <= 1.0):
            raise ValueError(f"need 0 <= floor (={self.floor:g}) <= start (={self.start:g}) <= 1")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps (={self.warmup_steps}) must be 0 or more")

    def alpha(self, step: int) -> float:
        """alpha for the optimizer step that follows `step` completed ones (step 0: the first)."""
        if step >= self.warmup_steps:
            return self.floor
        done = step / self.warmup_steps  # in [0, 1)
        left = 1.0 - done if self.shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * done))
        return self.floor + (self.start - self.floor) * left
