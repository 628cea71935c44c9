"""The request queue and the worker threads that answer requests on the shared engine.

Requests wait in a bounded queue. Each of `batch_size` worker threads takes one request at a
time and answers it through the method's `solve`, as lm-eval requests are answered: no
environment (`Method.without_env`), the prompt's token ids as `given`. The workers' engine
calls go to one `SharedDecoding`: a request that arrives while others decode joins their
batch at the next step boundary (continuous batching), and its rows leave it as they finish,
so it waits for no one's longer answer. A method of several stages (ReDuMix) joins at each
stage. A row's seed comes from the request alone (its prompt ids, its seed and the choice's
index), and the engine decodes a row as it would alone (batch invariance), so an answer does
not depend on what shared its batch. One request's failure answers that request only.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import json
import math
import queue
import sys
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from envs import Problem
from harness.engine.models import LoadedModel
from harness.engine.prompts import encode, render_chat
from harness.engine.shared_decoding import SharedDecoding
from harness.engine.token_stream import streaming
from harness.methods import Generation, MethodCache
from harness.methods.base import role_model_names
from harness.methods.request_env import HumanFeedback, RequestEnv, answer_fields, cut_at_stop
from harness.runs.record_json import finite
from harness.serve.answer_text import AnswerText
from harness.serve.protocol import Answer, ApiError, Ask, Result, finish_reason


class StreamClosed(Exception):
    """The client of a streamed request went away: its rows leave the batch."""


@dataclass
class _Job:
    ask: Ask
    future: concurrent.futures.Future
    on_text: Callable[[int, str], None] | None = None  # (choice, new text) as the answer is written
    rows: list[_Row] | None = None  # per prompt, then per choice; made by the worker
    prompt_tokens: int = 0


@dataclass
class _Row:
    """One choice of one prompt of a job, as a problem for the method."""

    key: str  # the problem id: what the row's seed is drawn from
    ids: list[int]
    user_turn: str | None  # None: the chat is not one a method building its own conversations takes
    turns: int  # messages of the chat (0 for a completion)
    earlier: HumanFeedback | None = None  # a chat [user, assistant, user]: its first attempt and the feedback


class Batcher:
    """Answers `Ask`s on `pool`'s models (see the module docstring).

    Args:
        models: the loaded models by name (those a request's method may use).
        model_name: the served model's name (what roles left open run on).
        seed: the generation seed every row's seed is drawn from, with the row's own key.
        batch_size: rows per engine call.
        max_queue: requests that may wait; one more is refused (429).
        default_max_tokens: new tokens when a request gives no max_tokens (cut to the window).
        context_window: the model's, in tokens.
    """

    def __init__(self, models: Mapping[str, LoadedModel], model_name: str, *, seed: int, batch_size: int,
                 max_queue: int, default_max_tokens: int, context_window: int, debug: bool = False) -> None:
        self.models = dict(models)
        self.model_name = model_name
        self.seed = seed
        self.batch_size = batch_size
        self.default_max_tokens = default_max_tokens
        self.context_window = context_window
        self.debug = debug
        self.answered = 0
        self.failed = 0
        self.calls = 0  # method solves made (one per request)
        self.decoding = SharedDecoding(max_rows=batch_size)
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._max_queue = max_queue
        self._in_flight = 0  # requests a worker is answering
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._last_answer_s = 1.0
        self._working = batch_size  # worker threads not yet stopped
        self._threads = [threading.Thread(target=self._work, name=f"redumix-serve-worker-{i}", daemon=True)
                         for i in range(batch_size)]

    @property
    def tokenizer(self):
        return self.models[self.model_name].tokenizer

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, ask: Ask, on_text: Callable[[int, str], None] | None = None) -> concurrent.futures.Future:
        """Queue `ask`; its future gets a `Result` or an `ApiError`. With `on_text`, each choice's text
        is handed over as it is written, (choice index, new text), from the decoding thread; cancelling
        the future then takes the request's rows out of the batch at the next step.

        Raises:
            ApiError: 429 with Retry-After when the queue is full, 503 once the server is stopping.
        """
        if self._closing.is_set():
            raise ApiError(503, "the server is shutting down; send the request to another server or try again later")
        job = _Job(ask, concurrent.futures.Future(), on_text)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            wait = max(1, math.ceil(self._last_answer_s))
            raise ApiError(429, f"the request queue is full ({self._max_queue} requests waiting, redumix serve "
                                f"--max-queue); retry after {wait} s", code="queue_full",
                           headers={"Retry-After": str(wait)}) from None
        return job.future

    def close(self) -> None:
        """Stop taking requests; those still queued are answered 503. Requests being answered
        run on (the threads are daemons: the process can end without them)."""
        self._closing.set()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._fail(job, ApiError(503, "the server stopped before answering this request; send it again"))
        for _ in self._threads:  # wakes the workers
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break

    def idle(self, timeout: float) -> bool:
        """Wait until no request is being answered (at most `timeout` s); whether none is."""
        with self._changed:
            return self._changed.wait_for(lambda: self._in_flight == 0, timeout=max(timeout, 0.0))

    @property
    def busy(self) -> int:
        """Requests being answered now."""
        return self._in_flight

    # -- the workers ----------------------------------------------------------------

    def _work(self) -> None:
        while not self._closing.is_set():
            try:
                job = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if job is None:
                break
            with self._changed:
                self._in_flight += 1
            began = time.perf_counter()
            try:
                self._answer(job)
            finally:
                self._last_answer_s = time.perf_counter() - began
                with self._changed:
                    self._in_flight -= 1
                    self._changed.notify_all()
        with self._changed:
            self._working -= 1
            if self._working == 0:  # the last worker out stops the decoding thread
                self.decoding.close()

    def _answer(self, job: _Job) -> None:
        if job.future.cancelled():
            return
        try:
            with self.decoding.worker():
                self._prepare(job)
                self._answer_job(job)
        except ApiError as err:
            self._fail(job, err)
        except StreamClosed:
            self.failed += 1  # its client went away: nobody to answer
        except Exception as err:  # noqa: BLE001 (one request's failure must not end the worker)
            self._fail(job, self._api_error(err))

    def _prepare(self, job: _Job) -> None:
        """Render and tokenize the job's prompts, check they fit, and name its rows."""
        ask, tok = job.ask, self.tokenizer
        rows, total = [], 0
        vocab = len(tok)
        for i, prompt in enumerate(ask.prompts):
            where = "messages" if ask.kind == "chat" else ("prompt" if len(ask.prompts) == 1 else f"prompt[{i}]")
            turns, earlier = 0, None
            if ask.kind == "chat":
                ids = encode(tok, render_chat(tok, prompt))
                turns = len(prompt)
                user, earlier = _conversation(prompt)
            elif isinstance(prompt, str):
                ids, user = encode(tok, prompt), prompt
            else:
                bad = [t for t in prompt if not 0 <= t < vocab]
                if bad:
                    raise ApiError(400, f"{where} holds token ids outside the vocabulary (0 to {vocab - 1}): "
                                        f"{bad[:5]}", param=where)
                ids, user = list(prompt), tok.decode(prompt)
            if not ids:  # an empty prompt still needs one input
                ids = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
            max_new = ask.max_tokens or self.default_max_tokens
            if len(ids) + (ask.max_tokens or 1) > self.context_window:
                name = "max_tokens" if ask.max_tokens else where
                raise ApiError(400, f"{where} ({len(ids)} tokens) and max_tokens ({max_new}) exceed the model's "
                                    f"context window of {self.context_window} tokens; shorten {where} or lower "
                                    "max_tokens",
                               param=name, code="context_length_exceeded")
            total += len(ids)
            digest = hashlib.sha256(json.dumps([ids, ask.seed]).encode()).hexdigest()[:20]
            rows += [_Row(key=f"req-{digest}" + (f"#{k}" if k else ""), ids=ids, user_turn=user, turns=turns,
                          earlier=earlier) for k in range(ask.n)]
        job.rows, job.prompt_tokens = rows, total

    def _max_tokens(self, job: _Job) -> int:
        """The request's max_tokens, or the server's default cut to what its longest prompt leaves."""
        if job.ask.max_tokens is not None:
            return job.ask.max_tokens
        longest = max(len(r.ids) for r in job.rows or [])
        return max(1, min(self.default_max_tokens, self.context_window - longest))

    def _answer_job(self, job: _Job) -> None:
        rows = list({row.key: row for row in job.rows or []}.values())
        done: dict[str, object] = {}
        with self._streamed(job):
            for start in range(0, len(rows), self.batch_size):  # engine calls of at most batch_size rows
                done.update(self._solve(job.ask, self._max_tokens(job), rows[start : start + self.batch_size]))
        answers = [self._answer_of(job, done[r.key]) for r in job.rows]
        try:
            job.future.set_result(Result(answers=answers, prompt_tokens=job.prompt_tokens))
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile: the drain ran out of time
            return
        self.answered += 1

    def _streamed(self, job: _Job):
        """A block in which `job`'s answer tokens reach its `on_text` as text (nothing without one)."""
        if job.on_text is None:
            return contextlib.nullcontext()
        texts: dict[str, list[AnswerText]] = defaultdict(list)
        for i, row in enumerate(job.rows):
            texts[row.key].append(AnswerText(self.tokenizer, job.ask.stop, functools.partial(job.on_text, i)))

        def sink(key: str, token: int) -> None:
            if job.future.cancelled():
                raise StreamClosed("the client went away")
            for text in texts[key]:
                text.add(token)

        return streaming(sink)

    def _solve(self, ask: Ask, max_tokens: int, rows: list[_Row]) -> dict[str, object]:
        """One engine call (one method solve) over `rows`: {row key: its Attempt}."""
        method = ask.method
        problems = [Problem(env="serve", problem_id=r.key, index=0, seed=ask.seed, question=r.user_turn or "",
                            gold="", metadata={}) for r in rows]
        by_key = {r.key: r for r in rows}
        env = RequestEnv(None, lambda p: _user_turn(method.name, by_key[p.problem_id]), name="serve",
                         earlier=lambda p: by_key[p.problem_id].earlier)
        names = role_model_names(method, self.model_name)
        models = {role: self.models[name] for role, name in names.items()}
        gen = Generation(max_new_tokens=max_tokens, stop=ask.stop, seed=self.seed)
        self.calls += 1
        attempts = method.solve(env, models, problems, gen, cache=MethodCache(), given={r.key: r.ids for r in rows})
        return {a.problem.problem_id: a for a in attempts}

    def _answer_of(self, job: _Job, attempt) -> Answer:
        fields = answer_fields(attempt, verified=False)
        for key in ("decoder", "decoder_config", "completion"):  # in the response already
            fields.pop(key, None)
        row = attempt.row
        return Answer(text=cut_at_stop(row.text, job.ask.stop), finish_reason=finish_reason(row.finish_reason),
                      completion_tokens=row.new_tokens, fields=finite(fields))

    def _fail(self, job: _Job, err: ApiError) -> None:
        self.failed += 1
        if not job.future.done():
            job.future.set_exception(err)

    def _api_error(self, err: Exception) -> ApiError:
        if isinstance(err, ApiError):
            return err
        if isinstance(err, ValueError):
            return ApiError(400, str(err))
        return self._internal(err)

    def _internal(self, err: Exception) -> ApiError:
        traceback.print_exception(err, file=sys.stderr)
        return ApiError(500, f"internal error: {type(err).__name__}: {err}. This is a bug in redumix; please report "
                             "it with the request and the server's output")


def _conversation(messages: list[dict]) -> tuple[str | None, HumanFeedback | None]:
    """The user turn a method that builds its own conversations (ReDuMix) starts from, and the
    first attempt and feedback after it: one user message, or [user, assistant, user]."""
    roles = [m["role"] for m in messages]
    if roles == ["user"]:
        return messages[0]["content"], None
    if roles == ["user", "assistant", "user"]:
        return messages[0]["content"], HumanFeedback(messages[1]["content"], messages[2]["content"])
    return None, None


def _user_turn(method: str, row: _Row) -> str:
    """The user turn a method that builds its own conversations (ReDuMix) starts from."""
    if row.user_turn is None:
        raise ApiError(400, f"decoder {method!r} builds its own conversation, and this request's {row.turns} "
                            "messages are not one it takes; send the task as one user message (the method makes "
                            "its own first attempt), or [user: the task, assistant: a first attempt, user: feedback "
                            "on it] (the method reflects on that feedback and answers again), with no system "
                            "message", param="messages")
    return row.user_turn
