"""Continuous batching: concurrent `decode` calls share the engine's batches.

A `SharedDecoding` owns one thread that runs every forward pass of the `decode` calls made
inside its `worker()` blocks, from any number of threads. Calls on the same models (and the
same number of streams) share one `LiveBatch` whatever their decoders: a call that arrives
while a batch is decoding joins it at the next step boundary (its rows prefilled, then
advanced with the others), and its rows leave as they finish. The calling thread waits for
its own rows only.

Methods with several stages (ReDuMix's first attempt, reflection and mixture) and streams of
several models (DeRa) take part as they do in a run: each stage is a `decode` call of its
own, joining whatever batch is running when it starts.

Worker threads take turns: one runs at a time outside the engine (rendering prompts,
tokenizing, grading), and gives its turn up while its rows decode. The code around the engine
therefore never runs concurrently with itself, as in a single-threaded run.

A row computes as it would alone (batch invariance), so sharing never changes a row's tokens.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from harness.engine.live_batch import DecodeCall, LiveBatch
from harness.engine.models import LoadedModel

_CURRENT: ContextVar[SharedDecoding | None] = ContextVar("shared_decoding", default=None)


def current() -> SharedDecoding | None:
    """The sharing the calling thread decodes under (inside a `worker()` block), or None."""
    return _CURRENT.get()


@dataclass(eq=False)
class _Waiting:
    call: DecodeCall
    key: tuple
    models: list[LoadedModel]
    stream_models: list[int]
    split_streams: bool
    vocab_size: int | None
    future: concurrent.futures.Future


class SharedDecoding:
    """The thread that decodes the calls of every `worker()` block (see the module docstring).

    Args:
        max_rows: rows a shared batch takes before later calls wait for rows to leave
            (a call of more rows still starts a batch of its own once none is running).
    """

    def __init__(self, max_rows: int = 64) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows (={max_rows}) must be >= 1")
        self.max_rows = max_rows
        self.steps = 0  # decoding steps run (one per batch per round)
        self.joined = 0  # calls that joined a batch already decoding
        self._cond = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._batches: list[tuple[tuple, LiveBatch]] = []
        self._owner: dict[int, _Waiting] = {}
        self._closed = False
        self._turn = threading.Lock()
        self._holds = threading.local()
        self._thread = threading.Thread(target=self._loop, name="redumix-decoding", daemon=True)
        self._thread.start()

    @contextmanager
    def worker(self) -> Iterator[None]:
        """Run the block as one of the worker threads: its `decode` calls go to the shared
        batches, and it holds the turn except while waiting for them."""
        token = _CURRENT.set(self)
        self._turn.acquire()
        self._holds.turn = True
        try:
            yield
        finally:
            self._holds.turn = False
            self._turn.release()
            _CURRENT.reset(token)

    def run(self, call: DecodeCall, models: Sequence[LoadedModel], stream_models: Sequence[int], *,
            split_streams: bool, vocab_size: int | None) -> None:
        """Decode `call` in a shared batch; return once its rows are done.

        Raises:
            RuntimeError: the sharing was closed first.
            Exception: what the call's decoder (or a forward of its batch) raised.
        """
        key = (tuple(id(m) for m in models), tuple(stream_models), split_streams, vocab_size)
        waiting = _Waiting(call, key, list(models), list(stream_models), split_streams, vocab_size,
                           concurrent.futures.Future())
        with self._cond:
            if self._closed:
                raise RuntimeError("the shared decoding has stopped; no more calls are taken")
            self._waiting.append(waiting)
            self._cond.notify()
        holds = getattr(self._holds, "turn", False)
        if holds:
            self._turn.release()
        try:
            waiting.future.result()
        finally:
            if holds:
                self._turn.acquire()

    def close(self) -> None:
        """Take no more calls; calls not yet started fail, batches decoding run to their end."""
        with self._cond:
            self._closed = True
            waiting, self._waiting = self._waiting, []
            self._cond.notify()
        for item in waiting:
            item.future.set_exception(RuntimeError("the shared decoding stopped before this call started"))

    # -- the decoding thread -----------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._batches and not self._closed:
                    self._cond.wait()
                if self._closed and not self._batches:
                    return
                waiting, self._waiting = self._waiting, []
            left, held_back = [], set()
            for item in waiting:  # first come, first served: a call waits behind an earlier one of its key
                if item.key in held_back or not self._start(item):
                    left.append(item)
                    held_back.add(item.key)
            if left:
                with self._cond:
                    self._waiting[:0] = left
            for key, batch in list(self._batches):
                self._step(key, batch)

    def _start(self, item: _Waiting) -> bool:
        """Admit `item` into a batch of its key with room (or a new one); False: it waits."""
        batch = None
        for key, running in self._batches:
            if key == item.key and running.can_join and running.rows + item.call.num_rows <= self.max_rows:
                batch = running
                break
        if batch is None:
            if any(key == item.key for key, _ in self._batches):
                return False
            batch = LiveBatch(item.models, item.stream_models, split_streams=item.split_streams,
                              vocab_size=item.vocab_size)
            self._batches.append((item.key, batch))
        joining = not batch.empty
        try:
            batch.admit(item.call)
        except Exception as err:  # noqa: BLE001 (one call's failure is that call's only)
            item.future.set_exception(err)
            if batch.empty:
                self._batches = [(k, b) for k, b in self._batches if b is not batch]
            return True
        self.joined += joining
        self._owner[id(item.call)] = item
        return True

    def _step(self, key: tuple, batch: LiveBatch) -> None:
        try:
            finished = batch.step()
        except Exception as err:  # noqa: BLE001 (a failed forward fails the calls of its batch)
            for call in batch.calls:
                self._owner.pop(id(call)).future.set_exception(err)
            finished, batch.calls = [], []
        self.steps += 1
        for call in finished:
            item = self._owner.pop(id(call))
            if call.error is not None:
                item.future.set_exception(call.error)
            else:
                item.future.set_result(None)
        if batch.empty:
            self._batches = [(k, b) for k, b in self._batches if b is not batch]
