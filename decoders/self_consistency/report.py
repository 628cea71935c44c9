"""What self-consistency adds to records and reports: every sample's answer, grade,
log-probability, text and length, and the vote; pass@k and maj@k from the samples, and accuracy
against k (`decoders.sampled_answers`, shared with best-of-N)."""

from __future__ import annotations

from decoders.sampled_answers import SAMPLED_ANSWERS
from harness.methods.contributions import Contributions

SELF_CONSISTENCY = Contributions(
    record_fields={
        "n_samples": int, "sample_answers": list, "sample_correct": list, "sample_logprobs": list,
        "sample_completions": list, "sample_new_tokens": list, "votes": dict, "agreement": (int, float),
    },
    graded_fields=("sample_correct",),
) + SAMPLED_ANSWERS
