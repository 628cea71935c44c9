"""Our decoders as an lm-evaluation-harness model named "redumix".

    lm_eval.simple_evaluate(model="redumix",
                            model_args="model=smollm2-135m,decoder=redumix,lam=0.5,feedback=ground_truth",
                            tasks=[...])

Importing this module registers the model. Model arguments: `model` (embedded name,
HF folder or .gguf file), `decoder` (any registered decoder), `dtype` (default auto:
bfloat16 where the hardware runs it natively, else float32; the results' config names the
one that ran), `device`, `seed`, `max_length`, `think_budget` (budget forcing, as `redumix run
--think-budget`), `chat_template.NAME` (a chat template variable, as `redumix run
--chat-template-option NAME=VALUE`: `chat_template.enable_thinking=false`), and every other key
is a parameter of the decoder (`lam`, `feedback`, `temperature`, ...). lm-eval's `batch_size` is
the number of requests decoded together.

Generation runs on the batched engine; rows are seeded from (seed, problem id) for our
environments' tasks, so outputs equal `redumix run` on the same problems, and from
(seed, task, doc id) otherwise. ReDuMix runs its four stages per request: for requests
from our tasks the environment grades the first attempt and gives the feedback; for any
other task there is no verifier, so stage 2 uses the "none" policy, as the telemetry says.

Per-request telemetry (latency, tokens, ReDuMix's stage-1 answer and divergence means)
is kept in `RedumixLM.telemetry`, keyed by (task, doc id) like lm-eval's samples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

# lm-eval imports its built-in models only while its registry is empty; registering ours
# first would hide them ("hf" etc.), so they are imported before ours is registered.
import lm_eval.models  # noqa: F401
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm.auto import tqdm

from decoders import get_decoder
from envs import Problem
from harness.engine.lockstep import think_budget as thinking_budget
from harness.engine.loglikelihood import ContinuationScore, score_continuations, score_rows
from harness.engine.model_pool import ModelPool
from harness.engine.models import DEFAULT_MODEL, LoadedModel, context_window, load_model
from harness.engine.prompts import (
    chat_template_options,
    check_chat_template_options,
    encode,
    parse_chat_template_options,
    render_chat,
)
from harness.lmeval import tasks as lm_eval_tasks
from harness.methods import Generation, MethodCache, method_of
from harness.methods.base import role_model_names
from harness.methods.request_env import NO_VERIFIER, cut_at_stop, sampling_decoder  # noqa: F401 (NO_VERIFIER: for importers)
from harness.methods.request_env import RequestEnv as _RequestEnv
from harness.methods.request_env import answer_fields as _telemetry
from harness.methods.request_env import unverified_units as _unverified_units

MODEL_NAME = "redumix"
TEMPLATE_PREFIX = "chat_template."  # model_args keys naming chat template variables
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's own default when a task sets none

_latest: dict[str, Any] = {"model": None}


def latest_model() -> RedumixLM | None:
    """The most recently built RedumixLM (lm-eval's CLI builds and keeps it out of reach)."""
    return _latest["model"]


@register_model(MODEL_NAME)
class RedumixLM(LM):
    """An lm-eval `LM` backed by the redumix engine and a registered decoder."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        decoder: str = "greedy",
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int | str | None = 8,
        max_batch_size: int | None = None,  # passed by lm-eval; only used with batch_size=auto, unsupported
        seed: int = 0,
        max_length: int | None = None,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        loaded: LoadedModel | None = None,
        think_budget: int | None = None,
        **decoder_config: Any,
    ) -> None:
        """Build the decoder (checking its config) before loading the model.

        Raises:
            ValueError: malformed model_args, an unknown decoder or decoder parameter,
                a bad value, a batch size that is not a positive integer, or a model
                that cannot be loaded; each message names the argument and the fix.
        """
        super().__init__()
        self.chat_template_options = _template_options(decoder_config)
        _check_items(decoder_config)
        self.decoder = get_decoder(str(decoder), **decoder_config)
        variants = method_of(self.decoder).variants()
        if len(variants) != 1:
            raise ValueError(
                f"decoder {self.decoder.name!r} would answer each request {len(variants)} times ({variants}); "
                "lm-eval takes one response per request, so give one value (e.g. lam=0.5) and run once per value"
            )
        self.batch_size = _positive_int("batch_size", batch_size if batch_size is not None else 8)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed (={seed!r}) must be an integer, e.g. seed=0")
        self.seed = seed
        self.max_gen_toks = _positive_int("max_gen_toks", max_gen_toks)
        method_of(self.decoder).check_settings(self.max_gen_toks)
        from harness.runs.runner import check_think_budget

        check_think_budget(think_budget, self.max_gen_toks, flag="think_budget")
        self.think_budget = think_budget or None
        self.loaded = loaded if loaded is not None else load_model(str(model), dtype=dtype, device=device or "cpu")
        # The method's models by role: `model` itself, and any other its config names (DeRa's aligned model),
        # those in the dtype `model` runs in when "auto" chose it.
        pool = ModelPool(self.loaded.dtype if dtype == "auto" else dtype, device or "cpu", {str(model): self.loaded})
        self.by_role = pool.by_role(role_model_names(method_of(self.decoder), str(model)))
        self.max_length = _positive_int("max_length", max_length) if max_length else (
            context_window(self.loaded.model) or 2048
        )
        self.telemetry: dict[tuple[str, int], list[dict]] = defaultdict(list)
        self._chats: dict[str, list[dict[str, str]]] = {}  # rendered prompt -> its messages
        self._cache = MethodCache()  # stage 1-3 results and reusable answers, shared by every request
        _latest["model"] = self

    # -- lm-eval's optional API -----------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        return self.loaded.name.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str:
        return getattr(self.loaded.tokenizer, "chat_template", None) or ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Messages -> prompt text, exactly as `redumix run` renders them."""
        tok = self.loaded.tokenizer
        if add_generation_prompt:
            with chat_template_options(self.chat_template_options):
                text = render_chat(tok, chat_history)
        elif getattr(tok, "chat_template", None):
            # A task's gen_prefix arrives as an unfinished assistant turn to continue.
            text = tok.apply_chat_template(chat_history, tokenize=False, add_generation_prompt=False,
                                           continue_final_message=True, **(self.chat_template_options or {}))
        else:
            text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in chat_history)
        self._chats[text] = [dict(m) for m in chat_history]
        return text

    def get_model_info(self) -> dict:
        """Merged into lm-eval's results["config"], so results say what decoded them."""
        return {"redumix": {"model": self.loaded.describe(), "decoder": self.decoder.name,
                            "decoder_config": self.decoder.config(), "seed": self.seed,
                            "batch_size": self.batch_size, "think_budget": self.think_budget,
                            "chat_template_options": self.chat_template_options}}

    # -- generation -----------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Decode every request; batches share a decoder, stop strings and length bound.

        lm-eval makes one call per request type and evaluation, so that type's telemetry starts afresh.
        """
        self._reset_telemetry("generate_until")
        items = [self._plan(req, repeat, position)
                 for position, (req, repeat) in enumerate(zip(requests, _repeat_numbers(requests), strict=True))]
        groups: dict[tuple, list[_Item]] = defaultdict(list)
        for item in items:
            groups[item.group_key()].append(item)
        outputs: list[str | None] = [None] * len(items)
        bar = tqdm(total=len(items), desc=f"redumix {self.decoder.name}", disable=disable_tqdm)
        for group in groups.values():
            group.sort(key=lambda it: -len(it.ids))
            for start in range(0, len(group), self.batch_size):
                batch = group[start : start + self.batch_size]
                # Every prompt a method renders (ReDuMix's stages) with the options, every decode under the budget.
                with chat_template_options(self.chat_template_options), thinking_budget(self.think_budget):
                    texts = self._method_batch(batch)
                for item, text in zip(batch, texts, strict=True):
                    outputs[item.position] = text
                    self.cache_hook.add_partial("generate_until", item.request.args, text)
                bar.update(len(batch))
        bar.close()
        return outputs  # type: ignore[return-value]

    def _plan(self, request, repeat: int, position: int) -> _Item:
        context, gen_kwargs = request.args
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.pop("until", None)
        stops = [until] if isinstance(until, str) else list(until or [])
        max_new = _positive_int("max_gen_toks", gen_kwargs.pop("max_gen_toks", self.max_gen_toks))
        decoder = self._request_decoder(gen_kwargs)
        doc = request.doc
        ours = lm_eval_tasks.is_env_doc(doc)
        key = doc["problem_id"] if ours else f"{request.task_name}-{request.doc_id}"
        if repeat:
            key = f"{key}#r{repeat}"  # repeats of one document draw different samples
        tok = self.loaded.tokenizer
        # An empty prompt still needs one input: the BOS (or EOS) token, as for scoring.
        ids = encode(tok, context) or [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
        room = self.max_length - max_new
        if room < 1:
            raise ValueError(f"max_gen_toks (={max_new}) leaves no room for a prompt in max_length={self.max_length}")
        cut = max(0, len(ids) - room)
        return _Item(position=position, request=request, context=context, ids=ids[cut:],
                     tokens_cut=cut, stops=stops, max_new=max_new, decoder=decoder, key=key, ours=ours,
                     repeat=repeat)

    def _request_decoder(self, gen_kwargs: dict):
        """The model's decoder, adjusted to a request's sampling settings.

        Greedy follows the task: do_sample=true (with temperature > 0) samples. A decoder
        chosen in model_args keeps its own rule, taking the request's temperature / top_p /
        top_k only when the request asks to sample.
        """
        temperature = gen_kwargs.get("temperature")
        do_sample = bool(gen_kwargs.get("do_sample", False)) and (temperature is None or float(temperature) > 0)
        if not do_sample:
            return self.decoder
        settings = {k: gen_kwargs[k] for k in ("temperature", "top_p", "top_k") if gen_kwargs.get(k) is not None}
        return sampling_decoder(self.decoder, settings)

    def _method_batch(self, batch: list[_Item]) -> list[str]:
        """One batch through the decoder's method; requests of one task share an environment."""
        by_env: dict[Any, list[_Item]] = defaultdict(list)
        for item in batch:
            by_env[lm_eval_tasks.doc_env(item.request.doc) if item.ours else None].append(item)
        texts: dict[int, str] = {}
        for env, items in by_env.items():
            method = self._method_for(items[0].decoder, env)
            problems = [self._problem(item, env) for item in items]
            by_id = {p.problem_id: item for p, item in zip(problems, items, strict=True)}
            request_env = _RequestEnv(env, lambda p, by_id=by_id: self._user_turn(by_id[p.problem_id]))
            gen = Generation(max_new_tokens=items[0].max_new, stop=tuple(items[0].stops), seed=self.seed)
            attempts = method.solve(request_env, self.by_role, problems, gen, cache=self._cache,
                                    given={p.problem_id: by_id[p.problem_id].ids for p in problems})
            for attempt in attempts:
                item = by_id[attempt.problem.problem_id]
                self._record(item, _telemetry(attempt, verified=env is not None))
                row = attempt.row
                texts[item.position] = lm_eval_tasks.Response(cut_at_stop(row.text, item.stops),
                                                              row.finish_reason == "stop")
        return [texts[item.position] for item in batch]

    def _method_for(self, decoder, env):
        """The decoder's method; on a task without an environment, the method as it runs with no
        verifier (`Method.without_env`: ReDuMix gives no feedback there)."""
        method = method_of(decoder)
        if env is None:
            return method.without_env()
        method.check_env(env)
        return method

    def _problem(self, item: _Item, env):
        if env is not None:
            problem = lm_eval_tasks.doc_problem(item.request.doc)
            return dataclasses.replace(problem, problem_id=item.key)
        return Problem(env=str(item.request.task_name), problem_id=item.key, index=int(item.request.doc_id or 0),
                       seed=self.seed, question=item.context, gold="", metadata={})

    def _user_turn(self, item: _Item) -> str:
        return self._context_user_turn(item.context, item.request.task_name)

    def _context_user_turn(self, context: str, task_name: str | None) -> str:
        """The user message ReDuMix builds its conversations from.

        A prompt lm-eval rendered through `apply_chat_template` is one user turn; a raw
        prompt (no --apply_chat_template) is taken whole as the user turn.
        """
        chat = self._chats.get(context)
        if chat is None:
            return context
        if len(chat) != 1 or chat[0].get("role") != "user":
            roles = [m.get("role") for m in chat]
            raise ValueError(
                f"decoder {self.decoder.name!r} builds its own conversation from one user turn, but task "
                f"{task_name!r} sent {len(chat)} messages ({', '.join(map(str, roles))}); "
                "run it without --system_instruction and with num_fewshot=0 or --fewshot_as_multiturn false"
            )
        return chat[0]["content"]

    def _record(self, item: _Item, values: dict) -> None:
        entry = {"task": item.request.task_name, "doc_id": item.request.doc_id, "request_type": "generate_until",
                 "repeat": item.repeat,
                 "problem_id": item.request.doc.get("problem_id") if item.ours else None,
                 "tokens_cut": item.tokens_cut, **values}
        self.telemetry[(item.request.task_name, item.request.doc_id)].append(entry)

    def _reset_telemetry(self, request_type: str) -> None:
        for key in list(self.telemetry):
            kept = [e for e in self.telemetry[key] if e["request_type"] != request_type]
            if kept:
                self.telemetry[key] = kept
            else:
                del self.telemetry[key]

    def write_telemetry(self, path: str | Path, task: str | None = None) -> Path:
        """Write the telemetry (of one task, or all) as JSONL, one line per response."""
        from harness.runs.output_paths import write_atomically
        from harness.runs.record_json import finite

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [e for (name, _), entries in sorted(self.telemetry.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
                if task is None or name == task for e in entries]
        # Whole or not at all, and without NaN or infinities (JSON has neither).
        write_atomically(path, "".join(json.dumps(finite(row), default=str, allow_nan=False) + "\n" for row in rows))
        return path

    # -- log-likelihood -------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """log P(continuation | context) and whether greedy decoding would produce it.

        Under ReDuMix, P is the mixture of the original context x and the reflective x2
        that stages 1-3 build from the request's context (feedback "none": no verifier
        reaches these requests), and greedy means the mixture's argmax.
        """
        method = self._method_for(self.decoder, None)
        if hasattr(method, "teacher_logprobs"):
            scores = self._teacher_scores(method, requests)
        else:
            self._check_scoring("loglikelihood")
            pairs = [self._encode_pair(*req.args) for req in requests]
            scores = score_continuations(self.loaded, pairs, batch_size=self.batch_size, max_length=self.max_length)
        out = [(s.logprob, s.is_greedy) for s in scores]
        for req, result in zip(requests, out, strict=True):
            self.cache_hook.add_partial("loglikelihood", req.args, result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Total log-likelihood of each text, scored in disjoint windows of max_length tokens."""
        self._check_scoring("loglikelihood_rolling")
        tok = self.loaded.tokenizer
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        pairs, owner = [], []
        for i, req in enumerate(requests):
            ids = tok(req.args[0], add_special_tokens=False)["input_ids"]
            for window in get_rolling_token_windows(ids, prefix, self.max_length, 1):
                pairs.append(make_disjoint_window(window))
                owner.append(i)
        scores = score_continuations(self.loaded, pairs, batch_size=self.batch_size, max_length=self.max_length)
        totals = [0.0] * len(requests)
        for i, score in zip(owner, scores, strict=True):
            totals[i] += score.logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def _check_scoring(self, what: str) -> None:
        if what == "loglikelihood_rolling" and hasattr(method_of(self.decoder), "teacher_logprobs"):
            raise NotImplementedError(
                f"decoder {self.decoder.name!r} has no loglikelihood_rolling: it scores text under a distribution "
                "it builds from a prompt (ReDuMix: by attempting, reflecting on and redoing it), and a perplexity "
                "text has no prompt; use decoder=greedy for perplexity tasks"
            )
        if self.decoder.num_streams != 1:
            raise NotImplementedError(
                f"decoder {self.decoder.name!r} has no {what}; use decoder=greedy for log-likelihood tasks"
            )

    def _teacher_scores(self, method, requests) -> list[ContinuationScore]:
        """Each continuation scored token by token under the method's own distribution."""
        self._reset_telemetry("loglikelihood")
        tasks = {req.args[0]: req.task_name for req in requests}
        problems = {
            context: Problem(env="lm-eval", problem_id="context-" + hashlib.sha256(context.encode()).hexdigest()[:16],
                             index=i, seed=self.seed, question=context, gold="", metadata={})
            for i, context in enumerate(tasks)
        }
        users = {p.problem_id: self._context_user_turn(p.question, tasks[p.question]) for p in problems.values()}
        teachers = method.teacher_logprobs(
            _RequestEnv(None, lambda p: users[p.problem_id]), {"policy": self.loaded},
            [(problems[req.args[0]], req.args[1]) for req in requests], first_attempt_tokens=self.max_gen_toks,
            max_length=self.max_length, batch_size=self.batch_size, seed=self.seed, cache=self._cache,
        )
        scores = []
        for req, teacher in zip(requests, teachers, strict=True):
            score = score_rows(teacher.logprobs, teacher.target)
            scores.append(score)
            self.telemetry[(req.task_name, req.doc_id)].append({
                "task": req.task_name, "doc_id": req.doc_id, "request_type": "loglikelihood",
                "continuation": req.args[1], "logprob": score.logprob, "is_greedy": score.is_greedy,
                **_unverified_units(method.name), **teacher.extras,
            })
        return scores

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # As lm-eval's own models: trailing spaces of the context belong to the continuation.
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        tok = self.loaded.tokenizer
        if not context:
            prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            return [prefix], tok(continuation, add_special_tokens=False)["input_ids"]
        whole = encode(tok, context + continuation)
        context_ids = encode(tok, context)
        return context_ids, whole[len(context_ids) :]


@dataclasses.dataclass
class _Item:
    """One generate_until request, planned."""

    position: int
    request: Any
    context: str
    ids: list[int]
    tokens_cut: int
    stops: list[str]
    max_new: int
    decoder: Any
    key: str
    ours: bool
    repeat: int

    def group_key(self) -> tuple:
        config = json.dumps(self.decoder.config(), sort_keys=True, default=str)
        return (self.decoder.name, config, tuple(self.stops), self.max_new)


def _repeat_numbers(requests) -> list[int]:
    """0 for a request's first occurrence in the list, 1 for its second, ..."""
    seen: dict[int, int] = defaultdict(int)
    numbers = []
    for req in requests:
        numbers.append(seen[id(req)])
        seen[id(req)] += 1
    return numbers


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        hint = " (automatic batch sizes are not supported)" if str(value).startswith("auto") else ""
        raise ValueError(f"{name} (={value!r}) must be a positive integer{hint}; e.g. {name}=8")
    return value


def _template_options(config: dict) -> dict[str, Any] | None:
    """Take the `chat_template.NAME=VALUE` items out of `config`: the chat template options (None: none).
    lm-eval reads true/false and numbers already; a value still text is read as `--chat-template-option`
    reads it."""
    items = {key: config.pop(key) for key in [k for k in config if k.startswith(TEMPLATE_PREFIX)]}
    options = {}
    for key, value in items.items():
        name = key.removeprefix(TEMPLATE_PREFIX)
        if isinstance(value, str):
            value = (parse_chat_template_options([f"{name}={value}"], flag="model_args chat_template") or {})[name]
        options[name] = value
    check_chat_template_options(options, "model_args chat_template")
    return options or None


def _check_items(config: dict) -> None:
    """Catch what lm-eval's comma splitting makes of malformed model_args ("a=1,oops", "lam=0,0.5")."""
    for key, value in config.items():
        if not key.isidentifier():
            raise ValueError(
                f"model_args item {key!r} is not key=value: lm-eval splits model_args on every comma, "
                "so a parameter takes a single value here (e.g. lam=0.5)"
            )
        if value == "":
            raise ValueError(f"model_args item {key!r} has no value; write it as {key}=VALUE")
