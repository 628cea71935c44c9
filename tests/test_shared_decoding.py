"""Continuous batching: calls that join a running batch between steps (`LiveBatch`), and
concurrent `decode` calls sharing batches (`SharedDecoding`), decode every row as alone."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading

import pytest
import torch

from decoders import get_decoder
from decoders.base import Step
from decoders.mix_step import MixtureStep
from decoders.sampling import row_generator
from harness.engine.live_batch import DecodeCall, LiveBatch
from harness.engine.lockstep import decode
from harness.engine.prefix_cache import PrefixCache
from harness.engine.shared_decoding import SharedDecoding
from tests.tiny import tiny_model

PROMPTS = ["What is 2+3?", "Hi", "A much longer prompt, so the others need left padding.", "Sort: b, a",
           "What is 2+3? Think.", "x"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def _ids(m, texts):
    return [m.tokenizer(t)["input_ids"] for t in texts]


def _rngs(m, keys):
    return [row_generator(7, key, m.device) for key in keys]


# Each call: (decoder, its rows' prompts, max_new_tokens): greedy, sampling, soft and a two-stream mixture.
def _calls(m):
    return [
        (get_decoder("greedy"), PROMPTS[:3], 24),
        (get_decoder("sample", temperature="0.9"), PROMPTS[3:5], 20),
        (get_decoder("soft", max_topk="3").bind(m.tokenizer), PROMPTS[1:4], 16),
        (get_decoder("greedy"), PROMPTS[5:], 30),
    ]


def _alone(m, decoder, prompts, limit, keys):
    return decode(m, [_ids(m, prompts)], decoder, max_new_tokens=limit, rngs=_rngs(m, keys), return_logprobs=True,
                  eos_token_ids=[])


def _call(m, decoder, prompts, limit, keys):
    return DecodeCall(contexts=[_ids(m, prompts)], decoder=decoder, max_new_tokens=limit, rngs=_rngs(m, keys),
                      eos=frozenset(), return_logprobs=True)


def _same(rows, alone):
    return [(r.token_ids, r.token_logprobs, r.finish_reason) for r in rows] == \
        [(r.token_ids, r.token_logprobs, r.finish_reason) for r in alone]


@pytest.mark.parametrize("cache", [False, True], ids=["no prefix cache", "prefix cache"])
def test_calls_joining_a_running_batch_decode_as_alone(tiny, cache):
    tiny.prefix_cache = PrefixCache() if cache else None
    try:
        specs = _calls(tiny)
        keys = [[f"c{i}r{j}" for j in range(len(p))] for i, (_, p, _) in enumerate(specs)]
        alone = [_alone(tiny, d, p, n, k) for (d, p, n), k in zip(specs, keys, strict=True)]
        batch = LiveBatch([tiny], [0], split_streams=False, vocab_size=None)
        calls = [_call(tiny, d, p, n, k) for (d, p, n), k in zip(specs, keys, strict=True)]
        batch.admit(calls[0])
        for _ in range(3):
            batch.step()
        batch.admit(calls[1])  # joins a batch 3 steps in
        batch.step()
        batch.admit(calls[2])
        batch.admit(calls[3])  # two calls join at one step boundary
        most = batch.rows
        while not batch.empty:
            batch.step()
        assert most == 9
        for call, rows in zip(calls, alone, strict=True):
            assert call.done and _same(call.results(tiny.tokenizer), rows)
    finally:
        tiny.prefix_cache = None


def test_two_stream_mixtures_and_two_models_join_as_alone(tiny):
    other = tiny_model(seed=1)
    mix = MixtureStep(weights=(0.3, 0.7))
    x, x2 = _ids(tiny, PROMPTS[:3]), _ids(tiny, [p + " Again, carefully." for p in PROMPTS[:3]])
    for models, stream_models in (([tiny], [0, 0]), ([tiny, other], [0, 1])):
        alone = [decode(models, [[a], [b]], mix, stream_models=stream_models, max_new_tokens=12 + i,
                        eos_token_ids=[], return_logprobs=True) for i, (a, b) in enumerate(zip(x, x2, strict=True))]
        batch = LiveBatch(models, stream_models, split_streams=False, vocab_size=None)
        calls = [DecodeCall(contexts=[[a], [b]], decoder=mix, max_new_tokens=12 + i, rngs=_rngs(tiny, ["r"]),
                            eos=frozenset(), return_logprobs=True) for i, (a, b) in enumerate(zip(x, x2, strict=True))]
        for call in calls:
            batch.admit(call)
            batch.step()
            batch.step()
        while not batch.empty:
            batch.step()
        for call, rows in zip(calls, alone, strict=True):
            assert _same(call.results(tiny.tokenizer), rows), stream_models


def test_concurrent_decode_calls_share_batches_and_decode_as_alone(tiny):
    specs = _calls(tiny)
    keys = [[f"c{i}r{j}" for j in range(len(p))] for i, (_, p, _) in enumerate(specs)]
    alone = [_alone(tiny, d, p, n, k) for (d, p, n), k in zip(specs, keys, strict=True)]
    sharing = SharedDecoding(max_rows=64)

    def run(i):
        decoder, prompts, limit = specs[i]
        with sharing.worker():
            return _alone(tiny, decoder, prompts, limit, keys[i])

    with concurrent.futures.ThreadPoolExecutor(len(specs)) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(run, i) for i in range(len(specs))]]
    sharing.close()
    assert sharing.joined > 0
    for rows, want in zip(results, alone, strict=True):
        assert _same(rows, want)


@dataclasses.dataclass(frozen=True)
class FailsAtStep:
    """Greedy until its `at`-th step, then raises."""

    at: int
    name: str = "fails"
    num_streams: int = 1

    def init_state(self, num_rows):
        return {"steps": torch.zeros(num_rows, dtype=torch.long)}

    def step(self, logprobs, rngs, state):
        if int(state["steps"].max()) >= self.at:
            raise ValueError("this decoder fails here")
        return Step(token_ids=logprobs[0].argmax(-1), state={"steps": state["steps"] + 1})

    def config(self):
        return {"at": self.at}


def test_a_call_whose_decoder_fails_fails_alone_and_the_others_go_on(tiny):
    sharing = SharedDecoding()
    greedy = get_decoder("greedy")
    want = _alone(tiny, greedy, PROMPTS[:2], 20, ["a", "b"])
    started = threading.Event()

    def failing():
        with sharing.worker():
            started.set()
            return decode(tiny, [_ids(tiny, PROMPTS[2:4])], FailsAtStep(5), max_new_tokens=20, eos_token_ids=[])

    def healthy():
        started.wait(30)
        with sharing.worker():
            return _alone(tiny, greedy, PROMPTS[:2], 20, ["a", "b"])

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        bad, good = pool.submit(failing), pool.submit(healthy)
        with pytest.raises(ValueError, match="this decoder fails here"):
            bad.result(timeout=120)
        assert _same(good.result(timeout=120), want)
    sharing.close()
    # Alone, the same decoder's error reaches the caller as before.
    with pytest.raises(ValueError, match="this decoder fails here"):
        decode(tiny, [_ids(tiny, PROMPTS[2:4])], FailsAtStep(5), max_new_tokens=20)


def test_calls_wait_for_room_and_a_closed_sharing_takes_no_calls(tiny, monkeypatch):
    widths: list[int] = []
    step = LiveBatch.step

    def counted(self):
        widths.append(self.rows)
        return step(self)

    monkeypatch.setattr(LiveBatch, "step", counted)
    sharing = SharedDecoding(max_rows=2)
    greedy = get_decoder("greedy")
    prompts = [[p] for p in PROMPTS[:5]]
    want = [_alone(tiny, greedy, p, 16, ["k"]) for p in prompts]

    def run(p):
        with sharing.worker():
            return _alone(tiny, greedy, p, 16, ["k"])

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        got = [f.result(timeout=120) for f in [pool.submit(run, p) for p in prompts]]
    assert all(_same(rows, w) for rows, w in zip(got, want, strict=True))
    assert max(widths) == 2  # five one-row calls, never more than two rows decoding together
    sharing.close()
    with sharing.worker(), pytest.raises(RuntimeError, match="no more calls"):
        decode(tiny, [_ids(tiny, PROMPTS[:1])], greedy, max_new_tokens=4)
