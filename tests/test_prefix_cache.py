"""The prefix cache (reusing decoded prompts' caches changes no token, stays in its budget,
never serves one model's cache to another) and streams advanced as separate batches."""

from __future__ import annotations

import gc

import pytest
import torch

from decoders import get_decoder
from decoders.redumix import stages as redumix_pipeline
from envs import get_env
from harness.engine import lockstep
from harness.engine.lockstep import should_split_streams
from harness.engine.prefix_cache import PrefixCache, common_prefix_length
from harness.engine.prompts import encode
from harness.methods.mixture_stats import MixtureStats
from tests.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

LAMBDAS = [0.0, 0.25, 0.5, 0.75, 1.0]
PROMPTS = ["What is 12 + 30?", "Name three colours of the rainbow, please.", "2*3=?"]


@pytest.fixture()
def tiny():
    return tiny_model()


def _ids(loaded, text):
    return encode(loaded.tokenizer, text)


def _stage4(loaded, xs, x2s, eos):
    """Stage 4 over every (problem, lambda) row: tokens, finish steps and per-row statistics."""
    rows = [(i, lam) for lam in LAMBDAS for i in range(len(xs))]
    lams = torch.tensor([lam for _, lam in rows], dtype=torch.float64)
    mix = get_decoder("redumix", lam=0.5).mixture()
    mix = type(mix)(**{**mix.__dict__, "weights": torch.stack([lams, 1 - lams])})
    stats = MixtureStats(len(rows), keep_steps=True)
    out = lockstep.decode(loaded, [[xs[i] for i, _ in rows], [x2s[i] for i, _ in rows]], mix, max_new_tokens=24,
                          eos_token_ids=eos, on_step=stats)
    return [r.token_ids for r in out], [stats.per_step(j) for j in range(len(rows))]


def _pipeline(loaded, eos):
    """Stages 1 and 3 (greedy) then stage 4, as ReDuMix chains them: each prompt extends the last."""
    greedy = get_decoder("greedy")
    xs = [_ids(loaded, p) for p in PROMPTS]
    first = lockstep.decode(loaded, [xs], greedy, max_new_tokens=16, eos_token_ids=eos)
    stage3 = [x + r.token_ids + _ids(loaded, " Feedback: wrong. Reflect.") for x, r in zip(xs, first, strict=True)]
    reflections = lockstep.decode(loaded, [stage3], greedy, max_new_tokens=16, eos_token_ids=eos)
    x2s = [s + r.token_ids + _ids(loaded, " Redo.") for s, r in zip(stage3, reflections, strict=True)]
    return _stage4(loaded, xs, x2s, eos)


def _common_tokens(loaded):
    """Token ids the random model emits often, used as EOS so rows end at different steps."""
    row = lockstep.decode(loaded, [[_ids(loaded, p) for p in PROMPTS]], get_decoder("greedy"), max_new_tokens=24,
                          eos_token_ids=[])
    counts = torch.bincount(torch.tensor([t for r in row for t in r.token_ids]))
    return counts.argsort(descending=True)[:2].tolist()


def test_reusing_prefixes_changes_no_stage4_token_or_statistic(tiny):
    eos = _common_tokens(tiny)
    tokens_off, stats_off = _pipeline(tiny, eos)
    tiny.prefix_cache = PrefixCache()
    tokens_on, stats_on = _pipeline(tiny, eos)
    cache = tiny.prefix_cache.stats
    # Stage 3 reused stage 1's prompt and answer; stage 4 reused x and x2's start.
    assert cache.hits >= 2 * len(PROMPTS) and cache.reused_tokens > 0
    assert len({len(t) for t in tokens_off}) > 1  # rows finished at different steps
    assert tokens_on == tokens_off
    for on, off in zip(stats_on, stats_off, strict=True):
        assert on.keys() == off.keys()
        for name in on:
            # Reused keys and values come from forwards of other shapes: equal up to float rounding.
            torch.testing.assert_close(torch.tensor(on[name]), torch.tensor(off[name]), rtol=1e-4, atol=1e-5)


def test_redumix_pipeline_gives_the_same_answers_with_the_cache(tiny):
    env = get_env("basic_arithmetic", min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    problems = env.problems(3, 0)
    decoder = get_decoder("redumix", lam=LAMBDAS, reflect_prompt="Reflect.", redo_prompt="Redo.",
                          reflection_max_new_tokens=8)

    def answers():
        results = redumix_pipeline.solve_batch(env, tiny, decoder, problems, max_new_tokens=10, stop=[], seed=0)
        return [(r.problem.problem_id, r.lam, r.row.token_ids) for r in results]

    off = answers()
    tiny.prefix_cache = PrefixCache()
    on = answers()
    assert on == off
    assert tiny.prefix_cache.stats.reused_tokens > 0


def test_split_streams_give_the_same_tokens_as_one_padded_batch(tiny):
    eos = _common_tokens(tiny)
    xs = [_ids(tiny, p) for p in PROMPTS]
    x2s = [_ids(tiny, p * 8) for p in PROMPTS]  # several times longer: one batch would pad x to x2
    mix = get_decoder("redumix", lam=0.5)
    joint = lockstep.decode(tiny, [xs, x2s], mix, max_new_tokens=20, eos_token_ids=eos, return_logprobs=True)
    split = lockstep.decode(tiny, [xs, x2s], mix, max_new_tokens=20, eos_token_ids=eos, return_logprobs=True,
                            split_streams=True)
    assert [r.token_ids for r in split] == [r.token_ids for r in joint]
    assert len({r.new_tokens for r in joint}) > 1
    for a, b in zip(split, joint, strict=True):
        torch.testing.assert_close(torch.tensor(a.token_logprobs), torch.tensor(b.token_logprobs),
                                   rtol=1e-4, atol=1e-5)


def test_streams_are_split_only_for_many_rows_of_very_different_lengths():
    assert not should_split_streams(1, [100, 600])
    assert not should_split_streams(16, [100, 600])
    assert should_split_streams(64, [100, 600])
    assert not should_split_streams(64, [500, 600])  # similar lengths: little padding to save
    assert not should_split_streams(64, [600])


def test_a_prefix_is_found_only_for_the_model_that_computed_it(tiny):
    other = tiny_model(seed=1)
    cache = PrefixCache()
    tiny.prefix_cache = other.prefix_cache = cache
    prompt = _ids(tiny, PROMPTS[1])
    lockstep.decode(tiny, [[prompt]], get_decoder("greedy"), max_new_tokens=4)
    assert cache.longest_prefix(tiny.model, prompt)[0] == len(prompt)
    assert cache.longest_prefix(other.model, prompt) == (0, None)
    # Another dtype of the same weights is another model.
    half = tiny_model(dtype=torch.bfloat16)
    assert cache.longest_prefix(half.model, prompt) == (0, None)
    # A model that is gone takes its entries with it (its address may be reused).
    before = len(cache)
    del tiny.model
    gc.collect()
    assert len(cache) == before - 1


def test_the_cache_stays_within_its_budget_evicting_the_least_recently_used(tiny):
    greedy = get_decoder("greedy")
    prompts = [_ids(tiny, f"{i}: " + "abcdefgh"[i] * 40) for i in range(5)]
    probe = PrefixCache()
    tiny.prefix_cache = probe
    lockstep.decode(tiny, [prompts[:1]], greedy, max_new_tokens=1)
    one = probe.nbytes  # one prompt's cache
    cache = PrefixCache(budget_bytes=int(3.5 * one))
    tiny.prefix_cache = cache
    for i, prompt in enumerate(prompts):
        lockstep.decode(tiny, [[prompt]], greedy, max_new_tokens=1)
        assert cache.nbytes <= cache.budget_bytes
        if i == 2:
            cache.longest_prefix(tiny.model, prompts[0])  # prompt 0 is used again: it outlives 1 and 2
    assert cache.stats.evicted == 2 and len(cache) == 3
    kept = [i for i, p in enumerate(prompts) if cache.longest_prefix(tiny.model, p)[0] == len(p)]
    assert kept == [0, 3, 4]


def test_a_budget_of_zero_keeps_nothing_and_a_negative_one_is_refused(tiny):
    tiny.prefix_cache = PrefixCache(budget_bytes=0)
    lockstep.decode(tiny, [[_ids(tiny, PROMPTS[0])]], get_decoder("greedy"), max_new_tokens=3)
    assert len(tiny.prefix_cache) == 0
    with pytest.raises(ValueError, match="budget"):
        PrefixCache(budget_bytes=-1)


def test_soft_inputs_are_never_remembered_as_tokens(tiny):
    tiny.prefix_cache = PrefixCache()
    prompt = _ids(tiny, PROMPTS[0])
    soft = get_decoder("soft", think_end="ab", temperature=1.0).bind(tiny.tokenizer)
    rows = lockstep.decode(tiny, [[prompt]], soft, max_new_tokens=6, eos_token_ids=[])
    assert rows[0].new_tokens == 6
    # Only the prompt (fed as tokens) is remembered; the soft-fed positions are not the tokens' cache.
    assert tiny.prefix_cache.longest_prefix(tiny.model, prompt + rows[0].token_ids)[0] == len(prompt)


def test_a_sequence_extending_a_remembered_one_replaces_it(tiny):
    cache = PrefixCache()
    tiny.prefix_cache = cache
    prompt = _ids(tiny, PROMPTS[2])
    first = lockstep.decode(tiny, [[prompt]], get_decoder("greedy"), max_new_tokens=3, eos_token_ids=[])[0]
    lockstep.decode(tiny, [[prompt + first.token_ids + _ids(tiny, " more")]], get_decoder("greedy"),
                    max_new_tokens=3, eos_token_ids=[])
    assert len(cache) == 1


def test_common_prefix_length():
    a = torch.tensor([1, 2, 3, 4])
    assert common_prefix_length(a, torch.tensor([1, 2, 9])) == 2
    assert common_prefix_length(a, torch.tensor([1, 2])) == 2
    assert common_prefix_length(a, torch.tensor([7])) == 0
