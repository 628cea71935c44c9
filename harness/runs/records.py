"""The one place an Attempt becomes a record (a line of samples.jsonl).

Runner and sweep both write these; the fields are the users' interface (README,
harness.runs.record_schema), so they change only together with those.
"""

from __future__ import annotations

from harness.methods.base import Attempt

# The fields `attempt_record` writes on every record.
CORE_FIELDS = frozenset({
    "env", "problem_id", "index", "question", "gold", "decoder", "decoder_config", "variant", "model", "dtype",
    "batch_invariant", "seed", "prompt", "completion", "answer", "score", "correct", "format_ok", "score_error",
    "finish_reason", "prompt_tokens", "new_tokens", "latency_s", "prefill_s", "decode_s",
})
# Fields a method's extras may not set beside those: the ones a sweep adds
# (`harness.runs.executor.sweep_record`) and those only some records carry.
RESERVED_FIELDS = frozenset({"key", "env_label", "decoder_label", "stage_s", "cost_s", "reused_s", "steps"})


def attempt_record(attempt: Attempt, model, seed: int) -> dict:
    """The record of `attempt`, decoded by `model` (a LoadedModel: its name, the dtype it ran in and
    whether it computed batch-invariantly) under `seed`."""
    problem, row, verdict = attempt.problem, attempt.row, attempt.verdict
    record = {
        "env": problem.env,
        "problem_id": problem.problem_id,
        "index": problem.index,
        "question": problem.question,
        "gold": problem.gold,
        "decoder": attempt.method,
        "decoder_config": attempt.method_config,
        "variant": dict(attempt.variant),
        "model": model.name,
        "dtype": model.dtype,
        "batch_invariant": model.batch_invariant,
        "seed": seed,
        "prompt": attempt.prompt,
        "completion": row.text,
        "answer": verdict.answer,
        "score": verdict.score,
        "correct": verdict.correct,
        "format_ok": verdict.format_ok,
        "score_error": verdict.error,
        "finish_reason": row.finish_reason,
        "prompt_tokens": row.prompt_tokens[0],
        "new_tokens": row.new_tokens,
        "latency_s": round(row.prefill_s + row.decode_s, 4),
        "prefill_s": round(row.prefill_s, 4),
        "decode_s": round(row.decode_s, 4),
    }
    if attempt.reused_s:
        record["reused_s"] = round(attempt.reused_s, 4)
    clash = sorted(set(attempt.extras) & (CORE_FIELDS | RESERVED_FIELDS))
    if clash:
        raise ValueError(f"method {attempt.method!r} sets the record field(s) {', '.join(clash)}, which every record "
                         "has with its own meaning; give the method's field another name")
    record |= attempt.extras
    if attempt.steps is not None:
        record["steps"] = attempt.steps
    return record
