"""The config of best-of-N by self-certainty: self-consistency's samples, another choice."""

from __future__ import annotations

from dataclasses import dataclass

from decoders.self_consistency.config import SelfConsistency

SELECTIONS = ("self_certainty", "borda")


@dataclass(frozen=True)
class BestOfN(SelfConsistency):
    """N samples per problem (n and the sampling settings as for `self_consistency`, whose samples
    these are: the same seed draws the same N), one of them kept.

    Attributes:
        selection: "self_certainty" keeps the most self-certain sample; "borda" lets the samples
            vote for their answers with Borda weights by certainty rank (`borda_power`).
        borda_power: p in the vote weight (N - rank + 1) ** p; 0 is a plain majority vote,
            larger values trust the most certain samples more.
    """

    n: int | tuple[int, ...] = 4
    selection: str = "self_certainty"
    borda_power: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.selection not in SELECTIONS:
            from harness.naming import did_you_mean

            raise ValueError(f"selection (={self.selection!r}) is not one of {', '.join(SELECTIONS)}."
                             f"{did_you_mean(self.selection, SELECTIONS)} e.g. selection=borda")
        if isinstance(self.borda_power, bool) or not isinstance(self.borda_power, int | float) \
                or not 0 <= self.borda_power < float("inf"):
            raise ValueError(f"borda_power (={self.borda_power!r}) must be a finite number >= 0; e.g. borda_power=0.5")
