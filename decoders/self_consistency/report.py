"""What self-consistency adds to records: every sample's answer, grade, log-probability, text
and length, and the vote."""

from __future__ import annotations

from harness.methods.contributions import Contributions

SELF_CONSISTENCY = Contributions(
    record_fields={
        "n_samples": int, "sample_answers": list, "sample_correct": list, "sample_logprobs": list,
        "sample_completions": list, "sample_new_tokens": list, "votes": dict, "agreement": (int, float),
    },
    graded_fields=("sample_correct",),
)
