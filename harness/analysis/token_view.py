"""The token view of the report's sample browser: a record's answer token by token, each
token shaded by a per-step statistic, for records saved with `--save-steps`.

It reads the record's `steps` alone (token texts were decoded when the record was made),
so a report needs no model or tokenizer. What the page gets per record is plain data;
the page writes every token as text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class StepStatistic:
    """A per-step statistic the token view can shade by.

    Attributes:
        name: its key in a record's `steps`.
        label: what the selector calls it.
        centre: the value left unshaded (where the statistic says nothing stands out).
        diverging: values on either side of `centre` mean opposite things and get
            opposite colours; otherwise only the distance from `centre` counts.
        above, below: what a value above / below `centre` means (the legend's words).
    """

    name: str
    label: str
    centre: float
    diverging: bool
    above: str = ""
    below: str = ""


# In the order the selector offers them: the first a record has is shown first.
STEP_STATISTICS = (
    StepStatistic("log_ratio_p1_p2", "log P1 - log P2 of the token", 0.0, True,
                  above="P1 pulled it in (ReDuMix: the original context; DeRa: the reference model)",
                  below="P2 pulled it in (ReDuMix: the reflective context; DeRa: the aligned model)"),
    StepStatistic("js_p1_p2", "JS(P1, P2)", 0.0, False, above="P1 and P2 disagree at this step"),
    StepStatistic("entropy", "entropy of the thinking distribution", 0.0, False,
                  above="the model was unsure (nats)"),
    StepStatistic("effective_tokens", "tokens mixed", 1.0, False,
                  above="more tokens mixed into the soft input (unshaded: one token, or a discrete step)"),
    StepStatistic("entropy_mix", "entropy of the mixture", 0.0, False, above="the mixture was unsure (nats)"),
    StepStatistic("logprob", "log-prob of the token", 0.0, False, below="the model found the token unlikely"),
)

NO_TOKEN_TEXTS = ("token view unavailable: this record's steps have no token texts (recorded before they were "
                  "saved), so only the plain completion is shown")


def token_view(steps, text_limit: int) -> dict | None:
    """What the sample browser shows of a record's `steps`: None without steps; without
    token texts, {"unavailable": why}; else {"texts", "ids", "stats", "shown", "total"}.

    `stats` lists the `STEP_STATISTICS` the record has, each with its values to 4 significant
    digits (enough to shade and read; the page stays small) and non-finite values as None
    (no shading). Tokens are kept while their texts fit in `text_limit`
    characters, every array cut at the same token so texts and values stay aligned;
    `shown` < `total` says the view was cut.
    """
    if not isinstance(steps, Mapping) or not isinstance(steps.get("token_ids"), list):
        return None
    texts = steps.get("token_texts")
    if not isinstance(texts, list) or len(texts) != len(steps["token_ids"]):
        return {"unavailable": NO_TOKEN_TEXTS}
    shown = _tokens_within(texts, text_limit)
    stats = []
    for stat in STEP_STATISTICS:
        values = steps.get(stat.name)
        # An array of another length could not be matched to the tokens; leave it out.
        if not isinstance(values, list) or len(values) != len(texts):
            continue
        kept = [_finite(v) for v in values[:shown]]
        if any(v is not None for v in kept):
            stats.append({"name": stat.name, "label": stat.label, "centre": stat.centre,
                          "diverging": stat.diverging, "above": stat.above, "below": stat.below, "values": kept})
    return {"texts": texts[:shown], "ids": steps["token_ids"][:shown], "stats": stats, "shown": shown,
            "total": len(texts)}


def _tokens_within(texts: list, limit: int) -> int:
    """How many leading tokens have texts totalling at most `limit` characters."""
    used = 0
    for count, text in enumerate(texts):
        used += len(str(text))
        if used > limit:
            return count
    return len(texts)


def _finite(value) -> float | None:
    return float(f"{value:.4g}") if isinstance(value, int | float) and math.isfinite(value) else None
