"""Batch invariance: a problem decodes to the same tokens and numbers whatever shares its batch.

Every registered method and decoder is decoded in a batch of 16 problems of mixed lengths,
each problem alone, with a warm prefix cache (in reverse order), with 1 and 2 threads, and
split over threads whose calls join each other's running batches (continuous batching);
tokens, per-step statistics and every stage's text must be identical. The seeds' identities
(ReDuMix at lambda 1 and 0, DeRa of a model with itself, a one-hot soft token, self-consistency
with one sample) hold token for token. The integration tests run the same on the embedded model
in bfloat16 (the default dtype here) and float32.

`REDUMIX_TEST_DEVICE=cuda` runs the embedded model's tests on a GPU (bench/gpu_check.sh);
`REDUMIX_TEST_BATCH_INVARIANT=off` runs these tests with invariance switched off, where they
are expected to fail: that is how one sees they can.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from decoders import available_decoders, get_decoder
from decoders.registry import contract_config
from envs.registry import get_env
from harness.engine.batch_invariance import batch_invariance
from harness.engine.lockstep import decode, eos_ids
from harness.engine.models import load_model
from harness.engine.prefix_cache import PrefixCache
from harness.engine.prompts import encode
from harness.engine.shared_decoding import SharedDecoding
from harness.methods import Generation, get_method
from harness.methods.base import variant_key
from tests.tiny import tiny_model

INVARIANT = os.environ.get("REDUMIX_TEST_BATCH_INVARIANT", "on") != "off"
# The embedded model's device (bench/gpu_check.sh runs these tests on "cuda").
DEVICE = os.environ.get("REDUMIX_TEST_DEVICE", "cpu")
# One to four terms of one to three digits: prompts of different lengths share each batch.
MIXED = {"min_terms": 1, "max_terms": 4, "min_digits": 1, "max_digits": 3}
SHORT = {"reflect_prompt": "Reflect.", "redo_prompt": "Redo the task.", "reflection_max_new_tokens": "8"}


@contextmanager
def threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _solve(loaded, method, env, problems, gen, *, thread_count: int, cache: PrefixCache | None) -> dict:
    """{(problem id, variant key): what the attempt computed, timings aside}."""
    loaded.prefix_cache = cache
    with threads(thread_count):
        attempts = method.solve(env, dict.fromkeys(method.roles(), loaded), problems, gen)
    return {(a.problem.problem_id, variant_key(a.variant)): _numbers(a) for a in attempts}


def _solve_shared(loaded, method, env, problems, gen, parts: int = 4) -> dict:
    """`_solve`'s numbers with the problems solved by `parts` threads sharing the engine's batches,
    each started once the one before has decoded a few steps: their calls join running batches."""
    loaded.prefix_cache = None
    sharing = SharedDecoding(max_rows=64)
    found: dict = {}

    def solve(part):
        with sharing.worker():
            attempts = method.solve(env, dict.fromkeys(method.roles(), loaded), part, gen)
        found.update({(a.problem.problem_id, variant_key(a.variant)): _numbers(a) for a in attempts})

    with threads(2), concurrent.futures.ThreadPoolExecutor(parts) as pool:
        started = []
        for i in range(parts):
            steps = sharing.steps
            while started and sharing.steps < steps + 3 and not started[-1].done():
                time.sleep(0.001)
            started.append(pool.submit(solve, problems[i::parts]))
        for future in started:
            future.result()
    sharing.close()
    assert sharing.joined > 0  # calls joined batches already decoding
    return found


def _numbers(attempt) -> dict:
    extras = {k: v for k, v in attempt.extras.items() if not k.endswith("_s") and k != "stage1_reused"}
    return {"tokens": attempt.row.token_ids, "text": attempt.row.text, "steps": attempt.steps, "extras": extras}


def _differences(a: dict, b: dict) -> dict:
    """{field: (a's, b's)} where the two attempts' numbers differ (extras field by field)."""
    out = {k: (a[k], b[k]) for k in ("tokens", "text", "steps") if a[k] != b[k]}
    for k in set(a["extras"]) | set(b["extras"]):
        if a["extras"].get(k) != b["extras"].get(k):
            out[k] = (a["extras"].get(k), b["extras"].get(k))
    return out


def check_contract(loaded, name: str, n: int, max_new_tokens: int) -> None:
    """One problem's numbers alone, in a batch of `n` mixed problems, warm, on 1 or 2 threads, and in
    batches shared with concurrent calls (continuous batching)."""
    env = get_env("basic_arithmetic", **MIXED)
    problems = env.problems(n, 0)
    assert len({len(p.question) for p in problems}) > 2  # the batch mixes prompt lengths
    method = get_method(name, **contract_config(name))
    gen = Generation(max_new_tokens=max_new_tokens, stop=(), seed=0, save_steps=True)
    batched = _solve(loaded, method, env, problems, gen, thread_count=2, cache=None)
    assert len(batched) == n * len(method.variants())
    alone: dict = {}
    for problem in (problems[0], problems[n // 2], problems[-1]):
        alone |= _solve(loaded, method, env, [problem], gen, thread_count=1, cache=None)
    cache = PrefixCache()
    cold = _solve(loaded, method, env, problems, gen, thread_count=2, cache=cache)
    warm = _solve(loaded, method, env, problems[::-1], gen, thread_count=1, cache=cache)
    assert cache.stats.reused_tokens > 0
    shared = _solve_shared(loaded, method, env, problems, gen)
    assert shared.keys() == batched.keys()
    for label, other in (("alone, 1 thread", alone), ("prefix cache on, 2 threads", cold),
                         ("warm prefix cache, reversed batch, 1 thread", warm),
                         ("in batches shared with other threads' calls, joining as they decode", shared)):
        for key, numbers in other.items():
            differ = _differences(numbers, batched[key])
            assert not differ, f"{name}: {key} differs {label} from in a batch of {n}, 2 threads: {differ}"


@pytest.mark.parametrize("name", available_decoders())
def test_a_problem_decodes_the_same_whatever_shares_its_batch(name):
    check_contract(tiny_model(batch_invariant=INVARIANT), name, n=16, max_new_tokens=12)


def test_float32_rows_of_any_batch_size_compute_as_alone():
    # Batch sizes on both sides of the linear layers' edge tiles (1-3, 5-7, 9-11 rows).
    loaded = tiny_model(batch_invariant=INVARIANT)
    env = get_env("basic_arithmetic", **MIXED)
    prompts = [encode(loaded.tokenizer, p.question) for p in env.problems(13, 0)]
    decoder = get_decoder("greedy")
    alone = [decode(loaded, [[p]], decoder, max_new_tokens=10, return_logprobs=True)[0] for p in prompts]
    for size in (2, 3, 5, 6, 9, 13):
        rows = decode(loaded, [prompts[:size]], decoder, max_new_tokens=10, return_logprobs=True)
        for row, single in zip(rows, alone, strict=False):
            assert (row.token_ids, row.token_logprobs) == (single.token_ids, single.token_logprobs), size


# The embedded model: the contract in both dtypes, the identities in the default one.


@pytest.fixture(scope="module", params=["bfloat16", "float32"])
def embedded(request):
    loaded = load_model("smollm2-135m", dtype=request.param, device=DEVICE)
    with batch_invariance(loaded, INVARIANT):
        yield loaded


@pytest.mark.integration
@pytest.mark.parametrize("name", available_decoders())
def test_on_the_embedded_model_a_problem_decodes_the_same_whatever_shares_its_batch(embedded, name):
    check_contract(embedded, name, n=6, max_new_tokens=16)


@pytest.fixture(scope="module")
def default_dtype():
    loaded = load_model("smollm2-135m", device=DEVICE)  # --dtype auto: bfloat16 where it runs natively
    with batch_invariance(loaded, INVARIANT):
        yield loaded


def _tokens(loaded, name: str, config: dict, alone: bool = False, n: int = 12, max_new_tokens: int = 32) -> dict:
    """{(problem id, variant key): attempt} for `n` mixed problems decoded in one batch on 2 threads
    with a prefix cache, or (`alone`) each problem by itself on 1 thread without one: the identities
    compare one of each, so they hold only if the batch changes nothing."""
    env = get_env("basic_arithmetic", **MIXED)
    method = get_method(name, **config)
    gen = Generation(max_new_tokens=max_new_tokens, stop=(), seed=0)
    problems = env.problems(n, 0)
    loaded.prefix_cache = None if alone else PrefixCache()
    with threads(1 if alone else 2):
        attempts = [a for batch in ([[p] for p in problems] if alone else [problems])
                    for a in method.solve(env, dict.fromkeys(method.roles(), loaded), batch, gen)]
    return {(a.problem.problem_id, variant_key(a.variant)): a for a in attempts}


def _greedy_alone(loaded) -> dict:
    return {pid: a.row.token_ids for (pid, _), a in _tokens(loaded, "greedy", {}, alone=True).items()}


@pytest.mark.integration
def test_redumix_at_lambda_1_is_greedy_on_x_and_at_0_greedy_on_x2(default_dtype):
    greedy = _greedy_alone(default_dtype)
    mixed = _tokens(default_dtype, "redumix", {"lam": "0,1", "feedback": "ground_truth", **SHORT})
    x2s = {pid: a.extras["contexts"][1] for (pid, key), a in mixed.items() if a.variant["lambda"] == 0}
    with threads(1):
        on_x2 = {pid: decode(default_dtype, [[encode(default_dtype.tokenizer, x2s[pid])]], get_decoder("greedy"),
                             max_new_tokens=32, eos_token_ids=[])[0] for pid in greedy}
    for (pid, _), attempt in mixed.items():
        if attempt.variant["lambda"] == 1:
            assert attempt.row.token_ids == greedy[pid], pid
        else:
            expected = on_x2[pid].token_ids[: len(attempt.row.token_ids)]
            assert attempt.row.token_ids == expected, pid


@pytest.mark.integration
def test_dera_of_a_model_with_itself_is_greedy_at_any_lambda(default_dtype):
    greedy = _greedy_alone(default_dtype)
    for (pid, _), attempt in _tokens(default_dtype, "dera", {"lam": "0,0.5,1.5"}).items():
        assert attempt.row.token_ids == greedy[pid], (pid, attempt.variant)


@pytest.mark.integration
def test_a_one_hot_soft_token_is_greedy(default_dtype):
    greedy = _greedy_alone(default_dtype)
    eos = eos_ids(default_dtype)
    for (pid, _), attempt in _tokens(default_dtype, "soft", {"top_k": "1", "think_end": "ab"}).items():
        # Where greedy ends on EOS, a thinking row ends its thinking there instead.
        same = greedy[pid][:-1] if greedy[pid] and greedy[pid][-1] in eos else greedy[pid]
        assert attempt.row.token_ids[: len(same)] == same, pid


@pytest.mark.integration
def test_self_consistency_with_one_sample_is_sample(default_dtype):
    sampled = {pid: a.row.token_ids
               for (pid, _), a in _tokens(default_dtype, "sample", {"temperature": "1.0"}, alone=True).items()}
    for (pid, _), attempt in _tokens(default_dtype, "self_consistency", {"n": "1", "temperature": "1.0"}).items():
        assert attempt.row.token_ids == sampled[pid], pid
