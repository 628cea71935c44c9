"""Making room in the reflective context: summarise the earliest part of y1.

When x2 = [x, y1, r, c, REDO] would not fit the context budget, the method keeps the
end of the first attempt y1 verbatim (where the answer is) and replaces its earliest
tokens with a short summary written by the same model. Nothing is cut silently: the
caller records that it happened and how many tokens of y1 were replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

# Re-tokenising "summary + tail" can merge or split a few tokens at the seams.
SEAM_TOKENS = 8

SUMMARY_PREFIX = "[Summary of earlier reasoning: "
SUMMARY_SUFFIX = "]\n"


@dataclass(frozen=True)
class CutPlan:
    """How many of y1's leading tokens to replace by a summary (0: it fits already)."""

    needed: int  # tokens the uncompressed context and its generations need
    budget: int
    cut: int


def plan_cut(needed: int, budget: int, y1_tokens: int, summary_tokens: int, wrapper_tokens: int = 0) -> CutPlan:
    """The number of leading y1 tokens to summarise so `needed` fits `budget`.

    The summary (at most `summary_tokens`, plus `wrapper_tokens` for the text around
    it) takes room back, so the cut covers the excess, the summary and its wrapper,
    and a small allowance for re-tokenisation.

    Raises:
        ValueError: even summarising all of y1 cannot bring the context under budget.
    """
    excess = needed - budget
    if excess <= 0:
        return CutPlan(needed, budget, 0)
    overhead = summary_tokens + wrapper_tokens + SEAM_TOKENS
    cut = excess + overhead
    if cut > y1_tokens:
        raise ValueError(
            f"the reflective context needs {needed} tokens but the context budget is {budget}, and "
            f"summarising the whole first attempt ({y1_tokens} tokens) would free at most "
            f"{max(0, y1_tokens - overhead)}; lower --max-new-tokens, "
            "reflection_max_new_tokens or summary_max_new_tokens, shorten the prompts, or raise context_budget"
        )
    return CutPlan(needed, budget, cut)


def wrapper_text() -> str:
    """The text `splice_summary` adds around a summary (to count its tokens)."""
    return SUMMARY_PREFIX + SUMMARY_SUFFIX


def splice_summary(summary: str, tail: str) -> str:
    """y1 as placed in the reflective context: the summary of its head, then its tail verbatim."""
    return f"{SUMMARY_PREFIX}{summary.strip()}{SUMMARY_SUFFIX}{tail}"
