"""One run: an environment's problems decoded by one decoder on one model, each
problem verified and written as one JSON record as soon as its batch finishes."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from decoders import get_decoder
from decoders.sampling import row_generator
from envs import check_feedback_policy, get_env
from harness import engine, redumix_pipeline
from harness.console import note
from harness.folder_claim import claim_folder
from harness.folder_lock import folder_locked
from harness.models import DEFAULT_MODEL, LoadedModel, load_model
from harness.output_paths import prepare_folder
from harness.prompts import encode, render_chat
from harness.record_grid import run_grid
from harness.store import RunDir


@dataclass
class RunSpec:
    """Everything that determines a run's records (bar timings)."""

    env: str
    decoder: str = "greedy"
    n: int = 20
    seed: int = 0
    model: str = DEFAULT_MODEL
    env_config: dict = field(default_factory=dict)
    decoder_config: dict = field(default_factory=dict)
    max_new_tokens: int = 256
    batch_size: int = 8
    stop: list[str] = field(default_factory=lambda: ["</answer>"])
    dtype: str = "float32"
    device: str = "cpu"
    extraction: str = "strict"  # answer extraction: "strict" (<answer> tags only) or "flexible"
    save_steps: bool = False  # keep per-step arrays (token ids, log-probs, mixture statistics) in each record

    def __post_init__(self) -> None:
        for name in ("n", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} (={value!r}) must be a positive integer")


@dataclass
class RunSummary:
    out: Path
    n: int
    correct: int
    new_tokens: int
    decode_s: float
    skipped: int
    by_lambda: dict[float, tuple[int, int]] | None = None  # redumix: lambda -> (correct, records)
    first_attempts: tuple[int, int] | None = None  # redumix: (correct, problems) of stage 1

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s else 0.0


def run(spec: RunSpec, out: str | Path, loaded: LoadedModel | None = None, progress: bool = True) -> RunSummary:
    """Decode spec.n problems and append one record per problem to `out`/samples.jsonl.

    Re-running the same spec on the same folder resumes: problems already recorded
    are skipped. A folder holding a different run is refused, so nothing is lost.
    """
    env = get_env(spec.env, extraction=spec.extraction, **spec.env_config)
    decoder = get_decoder(spec.decoder, **spec.decoder_config)
    if _is_redumix(decoder):
        check_feedback_policy(env, decoder.feedback)
    resolved = {
        "run": dataclasses.asdict(spec) | {"decoder_config": decoder.config(), "env_config": env.config()},
    }
    # As JSON stores it (tuples become lists), so a resumed run compares equal to its spec.json.
    resolved = json.loads(json.dumps(resolved))
    grid = run_grid(resolved["run"])
    run_dir = RunDir(prepare_folder(out, "out"))
    with folder_locked(run_dir.path, note=note):
        claim_folder(run_dir, "run", resolved["run"], grid, note=note)
        run_dir.check_writable()
        contents = run_dir.read(grid)
        for line in contents.notes():
            note(line)
        problems = env.problems(spec.n, spec.seed)
        if _is_redumix(decoder):
            # One record per (problem, lambda); a problem is to do while any lambda is missing.
            done = {(r["problem_id"], r["lambda"]) for r in contents.records}
            todo = [p for p in problems if any((p.problem_id, lam) not in done for lam in decoder.lambdas)]
        else:
            done = {r["problem_id"] for r in contents.records}
            todo = [p for p in problems if p.problem_id not in done]
        if loaded is None:
            loaded = load_model(spec.model, dtype=spec.dtype, device=spec.device)
        run_dir.write_spec(resolved | {"model": loaded.describe()})
        return _decode_into(spec, env, decoder, loaded, run_dir, problems, todo, done, progress)


def _decode_into(spec, env, decoder, loaded, run_dir, problems, todo, done, progress) -> RunSummary:
    """Decode `todo`, appending each batch to `run_dir` as it finishes."""
    n = correct = new_tokens = 0
    decode_s = 0.0
    by_lambda: dict[float, tuple[int, int]] = {}
    first_correct: dict[str, bool] = {}
    bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc=f"{spec.env} x {spec.decoder}",
               unit="problem", disable=not progress)
    try:
        cache = redumix_pipeline.Stage13Cache()
        began = time.perf_counter()
        for records in iter_record_batches(spec, env, decoder, loaded, todo, done, cache):
            wall = time.perf_counter() - began
            run_dir.append(records)
            n += len(records)
            correct += sum(r["correct"] for r in records)
            new_tokens += sum(r["new_tokens"] for r in records)
            # Throughput counts decoding of the answers: stage 4 alone for ReDuMix.
            decode_s += sum(r["mix_s"] for r in records) if _is_redumix(decoder) else wall
            for r in records:
                if "lambda" in r:
                    right, seen = by_lambda.get(r["lambda"], (0, 0))
                    by_lambda[r["lambda"]] = (right + r["correct"], seen + 1)
                    first_correct[r["problem_id"]] = r["stage1_correct"]
            bar.update(len({r["problem_id"] for r in records}))
            bar.set_postfix(acc=f"{correct / max(1, n):.2f}")
            began = time.perf_counter()
    finally:  # closed before any message about an interrupt
        bar.close()
    skipped = len(done) if _is_redumix(decoder) else len(problems) - len(todo)
    return RunSummary(out=run_dir.path, n=n, correct=correct, new_tokens=new_tokens, decode_s=decode_s,
                      skipped=skipped, by_lambda=dict(sorted(by_lambda.items())) if _is_redumix(decoder) else None,
                      first_attempts=(sum(first_correct.values()), len(first_correct)) if first_correct else None)


def iter_record_batches(spec: RunSpec, env, decoder, loaded: LoadedModel, todo: list,
                        done: set | frozenset = frozenset(),
                        cache: redumix_pipeline.Stage13Cache | None = None) -> Iterator[list[dict]]:
    """Decode the problems `todo` under `spec` and yield each batch's records as it finishes.

    Writes nothing: the caller decides where records go (a sweep keeps one samples.jsonl
    for many such units). For redumix, `done` holds the (problem_id, lambda) pairs to skip
    and `cache` the stage 1-3 cache to share between units; greedy fills the cache's
    first attempts, so a later redumix unit does not decode them again.
    """
    for start in range(0, len(todo), spec.batch_size):
        batch = todo[start : start + spec.batch_size]
        if not _is_redumix(decoder):
            began = time.perf_counter()
            records = _decode_batch(spec, env, decoder, loaded, batch)
            if cache is not None and decoder.name == "greedy":
                _remember_greedy_attempts(cache, spec, env, loaded, batch, records, time.perf_counter() - began)
            yield records
            continue
        results = redumix_pipeline.solve_batch(
            env, loaded, decoder, batch, max_new_tokens=spec.max_new_tokens, stop=spec.stop, seed=spec.seed,
            skip=done, cache=cache, save_steps=spec.save_steps,
        )
        yield [_redumix_record(spec, loaded, decoder, res) for res in results]


def _remember_greedy_attempts(cache, spec, env, loaded, batch, records, seconds) -> None:
    # A later ReDuMix unit on the same model takes these as its first attempts instead of redoing them.
    for problem, record in zip(batch, records, strict=True):
        key = redumix_pipeline.first_attempt_key(loaded, env.user_prompt(problem), spec.max_new_tokens, spec.stop)
        cache.greedy_attempts[key] = (record["completion"], seconds / len(batch))


def _decode_batch(spec: RunSpec, env, decoder, loaded: LoadedModel, batch: list) -> list[dict]:
    """One engine call over `batch` with a single-pass decoder -> one verified record per problem."""
    prompts = [render_chat(loaded.tokenizer, [{"role": "user", "content": env.user_prompt(p)}]) for p in batch]
    rows = engine.decode(
        loaded,
        [[encode(loaded.tokenizer, text) for text in prompts]],
        decoder,
        max_new_tokens=spec.max_new_tokens,
        stop_strings=spec.stop,
        rngs=[row_generator(spec.seed, p.problem_id, loaded.device) for p in batch],
        return_logprobs=spec.save_steps,
    )
    return [
        _record(spec, loaded, decoder, problem, prompt, row, env.verify(problem, row.text))
        | ({"steps": _single_stream_steps(row)} if spec.save_steps else {})
        for problem, prompt, row in zip(batch, prompts, rows, strict=True)
    ]


def _single_stream_steps(row) -> dict[str, list]:
    # token_logprobs[t] = [log-prob of the chosen token under the stream, (under the decoder's distribution)]
    return {"token_ids": row.token_ids, "logprob": [round(t[0], 6) for t in row.token_logprobs]}


def _is_redumix(decoder) -> bool:
    return decoder.name == "redumix"


def _redumix_record(spec, loaded, decoder, res) -> dict:
    stage = res["stage"]
    one = decoder.for_lambda(res["lambda"])
    record = _record(spec, loaded, one, res["problem"], stage.x, res["row"], res["verdict"])
    return record | {
        "lambda": res["lambda"],
        "feedback_policy": decoder.feedback,
        "stage1_completion": stage.stage1_completion,
        "stage1_answer": stage.stage1_answer,
        "stage1_correct": stage.stage1_correct,
        "feedback": stage.feedback,
        "reflection": stage.reflection,
        "contexts": [stage.x, stage.x2],
        "context_tokens": res["row"].prompt_tokens,
        "compressed": stage.compressed,
        "tokens_cut": stage.tokens_cut,
        "stage1_summary": stage.summary,
        **res["stats"],
        "stage1_s": round(stage.stage1_s, 4),
        "stage1_reused": stage.stage1_reused,
        "feedback_s": round(stage.feedback_s, 4),
        "reflection_s": round(stage.reflection_s, 4),
        "compress_s": round(stage.compress_s, 4),
        "mix_s": round(res["mix_s"], 4),
    } | ({"steps": res["steps"]} if "steps" in res else {})


def _record(spec, loaded, decoder, problem, prompt, row, verdict) -> dict:
    return {
        "env": problem.env,
        "problem_id": problem.problem_id,
        "index": problem.index,
        "question": problem.question,
        "gold": problem.gold,
        "decoder": decoder.name,
        "decoder_config": decoder.config(),
        "model": loaded.name,
        "seed": spec.seed,
        "prompt": prompt,
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
