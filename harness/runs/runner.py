"""One run: an environment's problems answered by one method on one model, each answer
verified and written as one JSON record as soon as its batch finishes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from envs import get_env
from harness.console import note
from harness.engine.lockstep import think_budget
from harness.engine.model_pool import ModelPool
from harness.engine.models import DEFAULT_MODEL, LoadedModel, resolve_device, resolve_dtype
from harness.engine.prefix_cache import DEFAULT_BUDGET_MB, PrefixCache
from harness.engine.prompts import chat_template_options, check_chat_template_options, unread_chat_template_options
from harness.methods import Attempt, Generation, MethodCache, get_method
from harness.methods.base import pending, role_model_names, variant_key
from harness.methods.registry import contributions_of
from harness.runs.folder_claim import claim_and_read
from harness.runs.folder_lock import folder_locked
from harness.runs.invariance_mode import mode_to_run
from harness.runs.limits import MAX_PROBLEMS
from harness.runs.output_paths import prepare_folder
from harness.runs.record_grid import by_position, own_problem_ids, record_variant, run_grid, run_record_identity
from harness.runs.record_json import shape_problem
from harness.runs.records import attempt_record
from harness.runs.run_dtype import dtype_to_run
from harness.runs.store import RunDir


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
    # "auto": what the machine runs fastest on the device (bfloat16 where it computes in bf16 natively,
    # else float32), or the dtype a folder being resumed was written in; `run` resolves it before
    # anything is written, so spec.json and the records name the dtype that ran.
    dtype: str = "auto"
    device: str = "cpu"
    extraction: str = "strict"  # answer extraction: "strict" (<answer> tags only) or "flexible"
    save_steps: bool = False  # keep per-step arrays (token ids, log-probs, mixture statistics) in each record
    # Rows decode as they would alone (see harness.engine.batch_invariance); None: on, or the mode a
    # folder being resumed was written in (`run` resolves it before anything is written).
    batch_invariant: bool | None = None
    # Variables for the chat template (Qwen3's {"enable_thinking": False}); None: the template's defaults.
    chat_template_options: dict | None = None
    # Budget forcing (s1): a row that has thought this many new tokens gets the end of thinking forced
    # in (`</think>`, or `<answer>` on a model without it) and answers; None: no budget.
    think_budget: int | None = None

    def __post_init__(self) -> None:
        for name in ("n", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} (={value!r}) must be a positive integer")
        if self.n > MAX_PROBLEMS:
            raise ValueError(f"n (={self.n}) must be at most {MAX_PROBLEMS:,} problems")
        check_chat_template_options(self.chat_template_options, "--chat-template-option")
        if self.chat_template_options == {}:
            self.chat_template_options = None  # none given: identified as runs before the setting
        check_think_budget(self.think_budget, self.max_new_tokens)
        if self.think_budget == 0:
            self.think_budget = None


def check_think_budget(budget, max_new_tokens: int, flag: str = "--think-budget") -> None:
    """Refuse a thinking budget that is not a whole number, or leaves no room for the answer."""
    if budget is None:
        return
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"{flag} (={budget!r}) must be a whole number of tokens >= 1 (0: no budget)")
    if budget >= max_new_tokens:
        raise ValueError(f"{flag} (={budget}) leaves no room for the answer within max_new_tokens "
                         f"(={max_new_tokens}); lower it or raise max_new_tokens")


@dataclass
class RunSummary:
    out: Path
    n: int
    correct: int
    new_tokens: int
    decode_s: float
    skipped: int
    # Methods with variants: "lambda=0.5" / "n=4" -> (correct, records) of this call's records.
    by_variant: dict[str, tuple[int, int]] | None = None
    notes: list[str] = field(default_factory=list)  # the method's own summary lines (`Contributions.run_lines`)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s else 0.0


def run(spec: RunSpec, out: str | Path, loaded: LoadedModel | None = None, progress: bool = True,
        models: Mapping[str, LoadedModel] | None = None, prefix_cache_mb: int = DEFAULT_BUDGET_MB) -> RunSummary:
    """Decode spec.n problems and append one record per (problem, variant) to `out`/samples.jsonl.

    Re-running the same spec on the same folder resumes: problems already recorded
    are skipped. A folder holding a different run is refused, so nothing is lost.
    `spec.dtype` "auto" resumes a folder in the dtype it was written in (see harness.runs.run_dtype),
    and `spec.batch_invariant` None in the mode it was written in (harness.runs.invariance_mode).

    Args:
        loaded: `spec.model`, already loaded.
        models: other models the method's roles name (DeRa's aligned model), already loaded, by name.
        prefix_cache_mb: MiB of decoded prompts' KV caches kept so that later prompts starting
            the same way (ReDuMix's stages) prefill only what is new; 0 turns it off.
    """
    prefix_cache = PrefixCache.of_megabytes(prefix_cache_mb, "--prefix-cache-mb")
    # Device and dtype first: nothing is built, read or loaded for a setting that cannot run.
    device = resolve_device(spec.device, flag="--device")
    resolve_dtype(spec.dtype, device, flag="--dtype")
    env = get_env(spec.env, extraction=spec.extraction, **spec.env_config)
    method = get_method(spec.decoder, **spec.decoder_config)
    method.check_env(env)
    method.check_settings(spec.max_new_tokens)
    # NaN and infinities cannot be written to spec.json as JSON (nor compared with it on a resume).
    problem = shape_problem({"decoder_config": method.config(), "env_config": env.config()})
    if problem is not None:
        raise ValueError(f"{problem}; give a finite value (--decoder-config, --env-config)")

    def identity(dtype: str) -> dict:
        resolved = {"run": dataclasses.asdict(spec) | {"dtype": dtype, "decoder_config": method.config(),
                                                        "env_config": env.config()}}
        # As JSON stores it (tuples become lists), so a resumed run compares equal to its spec.json.
        return json.loads(json.dumps(resolved))

    run_dir = RunDir(prepare_folder(out, "out"))
    with folder_locked(run_dir.path, note=note):
        invariant, kept_mode = mode_to_run(spec.batch_invariant, run_dir, "run")
        spec = dataclasses.replace(spec, batch_invariant=invariant)
        dtype, adopted = dtype_to_run(spec.dtype, device, run_dir, "run", lambda d: identity(d)["run"],
                                      preloaded=[loaded, *(models or {}).values()])
        adopted = "\n".join(line for line in (kept_mode, adopted) if line) or None
        spec = dataclasses.replace(spec, dtype=dtype)
        resolved = identity(dtype)
        problems = by_position(env.problems(spec.n, spec.seed), run_dir.read_spec())
        problem_ids = own_problem_ids({(spec.env, spec.seed): problems}).get(spec.env, {}).get(str(spec.seed))
        grid = run_grid(resolved["run"], method.variants(), problem_ids)
        contents = claim_and_read(run_dir, "run", resolved["run"], grid, adopted=adopted, note=note,
                                  questions=lambda: {run_record_identity(p.problem_id, v): p.question
                                                     for p in problems for v in method.variants()})
        # One record per (problem, variant); a problem is to do while any variant is missing.
        done = {(r["problem_id"], variant_key(record_variant(r))) for r in contents.records}
        todo = pending(problems, done, method.variants())
        pool = ModelPool(spec.dtype, spec.device, dict(models or {}) | ({spec.model: loaded} if loaded else {}),
                         prefix_cache=prefix_cache, batch_invariant=spec.batch_invariant)
        names = role_model_names(method, spec.model)
        by_role = pool.by_role(names)
        # The model of the method's first role names the run's records (DeRa: the reference model).
        described = {"model": next(iter(by_role.values())).describe()}
        if len(names) > 1:  # which model played which role
            described["models"] = {role: model.describe() for role, model in by_role.items()}
        run_dir.write_spec(resolved | {"variants": method.variants()} | described
                           | ({"problem_ids": problem_ids} if problem_ids else {}))
        unread = unread_options_note(next(iter(by_role.values())), spec.chat_template_options)
        if unread:
            note(unread)
        return _decode_into(spec, env, method, by_role, run_dir, problems, todo, done, progress)


def _decode_into(spec, env, method, models, run_dir, problems, todo, done, progress) -> RunSummary:
    """Decode `todo`, appending each batch to `run_dir` as it finishes."""
    n = correct = new_tokens = 0
    decode_s = 0.0
    by_variant: dict[str, tuple[int, int]] = {}
    written: list[dict] = []
    bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc=f"{spec.env} x {spec.decoder}",
               unit="problem", disable=not progress)
    try:
        for attempts in iter_attempt_batches(spec, env, method, models, todo, done, MethodCache()):
            first = next(iter(models.values()))
            records = [attempt_record(a, first, spec.seed) for a in attempts]
            run_dir.append(records)
            n += len(records)
            correct += sum(r["correct"] for r in records)
            new_tokens += sum(a.tokens for a in attempts)
            decode_s += sum(a.answer_s for a in attempts)  # throughput counts the final decoding only
            for a, r in zip(attempts, records, strict=True):
                if a.variant:
                    label = variant_label(a.variant)
                    right, seen = by_variant.get(label, (0, 0))
                    by_variant[label] = (right + r["correct"], seen + 1)
            written.extend(records)
            bar.update(len({r["problem_id"] for r in records}))
            bar.set_postfix(acc=f"{correct / max(1, n):.2f}")
    finally:  # closed before any message about an interrupt
        bar.close()
    has_variants = any(method.variants())
    lines = contributions_of(method.name).run_lines
    return RunSummary(out=run_dir.path, n=n, correct=correct, new_tokens=new_tokens, decode_s=decode_s,
                      skipped=len(done), by_variant=_by_value(by_variant) if has_variants else None,
                      notes=lines(written) if lines is not None and written else [])


def variant_label(variant: dict) -> str:
    """A variant for people: "lambda=0.5", "n=4"."""
    (name, value), = variant.items()
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"


def _by_value(tallies: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Tallies in the order of their variants' values (lambda=0.25 before lambda=1)."""
    def value(label: str):
        text = label.partition("=")[2]
        try:
            return (0, float(text), text)
        except ValueError:
            return (1, 0.0, text)

    return dict(sorted(tallies.items(), key=lambda item: value(item[0])))


def iter_attempt_batches(spec: RunSpec, env, method, models: Mapping[str, LoadedModel], todo: list,
                         done: set | frozenset = frozenset(),
                         cache: MethodCache | None = None) -> Iterator[list[Attempt]]:
    """Answer the problems `todo` with `method` under `spec`, yielding each batch's attempts as it finishes.

    `models`: the method's models by role ({"policy": ...} for most methods).

    Writes nothing: the caller decides where records go (a sweep keeps one samples.jsonl
    for many such units). `done` holds the (problem_id, variant key) pairs to skip;
    `cache` is shared by the methods of one model (a greedy unit's answers become a later
    ReDuMix unit's first attempts there).
    """
    gen = Generation(max_new_tokens=spec.max_new_tokens, stop=tuple(spec.stop), seed=spec.seed,
                     save_steps=spec.save_steps)
    for start in range(0, len(todo), spec.batch_size):
        batch = todo[start : start + spec.batch_size]
        # Every prompt the method renders and every decode it runs (its own stages too) take these.
        with chat_template_options(spec.chat_template_options), think_budget(spec.think_budget):
            attempts = method.solve(env, models, batch, gen, skip=done, cache=cache)
        yield attempts


def unread_options_note(model, options) -> str | None:
    """A note naming the chat template options `model`'s template never reads (None: it reads all)."""
    unread = unread_chat_template_options(model.tokenizer, options)
    if not unread:
        return None
    where = "has no chat template" if not getattr(model.tokenizer, "chat_template", None) \
        else "never reads " + ", ".join(unread)
    return f"the chat template of {model.name} {where}; its prompts render as without those options"
