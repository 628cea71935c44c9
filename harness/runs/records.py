"""The one place an Attempt becomes a record (a line of samples.jsonl).

Runner and sweep both write these; the fields are the users' interface (README,
harness.runs.record_schema), so they change only together with those.
"""

from __future__ import annotations

from envs.answer import THINK_CLOSE, split_thinking, with_open_thinking
from harness.methods.base import Attempt

# The fields `attempt_record` writes on every record.
CORE_FIELDS = frozenset({
    "env", "problem_id", "index", "question", "gold", "decoder", "decoder_config", "variant", "model", "dtype",
    "batch_invariant", "seed", "prompt", "completion", "answer", "score", "correct", "format_ok", "score_error",
    "finish_reason", "prompt_tokens", "new_tokens", "latency_s", "prefill_s", "decode_s",
})
# Fields a method's extras may not set beside those: the ones a sweep adds
# (`harness.runs.executor.sweep_record`) and those only some records carry.
# The thinking of a completion that has one (`envs.answer.split_thinking`): its text, its tokens
# (new tokens before the `</think>` that ends it, or all of them when it never ends) and whether it ended.
THINKING_FIELDS = frozenset({"thinking", "thinking_tokens", "thinking_closed"})
RESERVED_FIELDS = frozenset({"key", "env_label", "decoder_label", "stage_s", "cost_s", "reused_s", "steps",
                             "columns"}) | THINKING_FIELDS
# How thinking ended under a thinking budget (`harness.engine.lockstep.think_budget`), as the soft
# decoders record it; a method that reports them itself (the soft decoders) keeps its own values.
BUDGET_FIELDS = ("think_end", "think_end_step")


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
    if problem.columns:  # a problem file's other columns (envs.file_dataset)
        record["columns"] = dict(problem.columns)
    thinking = split_thinking(with_open_thinking(attempt.prompt, row.text))
    if thinking is not None:
        record |= {"thinking": thinking.text, "thinking_tokens": _thinking_tokens(row, model.tokenizer, thinking),
                   "thinking_closed": thinking.closed}
        if not thinking.closed:  # no answer follows: whatever the method's grading made of the text
            record |= {"answer": None, "score": 0.0, "correct": False, "format_ok": False,
                       "score_error": f"no answer: the thinking never closed with {THINK_CLOSE} (finish_reason "
                                      f"{row.finish_reason}); raise --max-new-tokens or set --think-budget"}
    clash = sorted(set(attempt.extras) & (CORE_FIELDS | RESERVED_FIELDS))
    if clash:
        raise ValueError(f"method {attempt.method!r} sets the record field(s) {', '.join(clash)}, which every record "
                         "has with its own meaning; give the method's field another name")
    record |= attempt.extras
    if getattr(row, "thinking", None) is not None:
        record |= {k: v for k, v in row.thinking.items() if k in BUDGET_FIELDS and k not in attempt.extras}
    if attempt.steps is not None:
        record["steps"] = attempt.steps
    return record


def _thinking_tokens(row, tokenizer, thinking) -> int:
    """New tokens before the `</think>` that ends the thinking (the last one, where the tokenizer
    has it as one token), or all of them (bar an ending EOS) when it never ends."""
    ids = list(row.token_ids)
    if not thinking.closed:
        return len(ids) - (1 if ids and row.finish_reason == "eos" else 0)
    marker = tokenizer.encode(THINK_CLOSE, add_special_tokens=False)
    if len(marker) == 1 and marker[0] in ids:
        return len(ids) - 1 - ids[::-1].index(marker[0])
    head = row.text[: row.text.rfind(THINK_CLOSE)]
    return len(tokenizer.encode(head, add_special_tokens=False))
