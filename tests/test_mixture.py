"""Property tests of the shared mixture function and the divergence statistics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.base import Step
from decoders.divergence import entropy, js, kl, log_ratio_at, top1_agree
from decoders.mixture import mix_logprobs
from harness.engine import lockstep
from harness.methods.mixture_stats import MixtureStats

V = 6
logit_rows = st.lists(st.floats(-20, 20, allow_nan=False), min_size=V, max_size=V)
masks = st.lists(st.booleans(), min_size=V, max_size=V)
lams = st.floats(0.0, 1.0)


def _lp(logits, mask=None):
    z = torch.tensor(logits, dtype=torch.float64)
    if mask is not None and not all(mask):
        z = z.masked_fill(~torch.tensor(mask), -math.inf)
    return torch.log_softmax(z, -1)


def _sources(a, b, mask_a=None, mask_b=None):
    return torch.stack([_lp(a, mask_a), _lp(b, mask_b)])[:, None, :]  # (K=2, B=1, V)


@settings(max_examples=200, deadline=None)
@given(logit_rows, logit_rows, lams)
def test_mixture_is_normalised_and_in_the_hull(a, b, lam):
    src = _sources(a, b)
    mixed = mix_logprobs(src, [lam, 1 - lam])[0]
    assert not torch.isnan(mixed).any()
    assert math.isclose(float(mixed.exp().sum()), 1.0, rel_tol=1e-9)
    # Before renormalisation the mixture lies between the sources token by token.
    unnormalised = lam * src[0, 0] + (1 - lam) * src[1, 0]
    shift = torch.logsumexp(unnormalised, -1)
    lo, hi = torch.minimum(src[0, 0], src[1, 0]), torch.maximum(src[0, 0], src[1, 0])
    assert ((mixed + shift) >= lo - 1e-9).all() and ((mixed + shift) <= hi + 1e-9).all()


@settings(max_examples=200, deadline=None)
@given(logit_rows, logit_rows, lams)
def test_mixture_symmetric_under_swap(a, b, lam):
    one = mix_logprobs(_sources(a, b), [lam, 1 - lam])
    other = mix_logprobs(_sources(b, a), [1 - lam, lam])
    assert torch.allclose(one, other, atol=1e-10)


@settings(max_examples=200, deadline=None)
@given(logit_rows, logit_rows, masks, masks, lams)
def test_mixture_with_impossible_tokens(a, b, mask_a, mask_b, lam):
    mask_a[0] = mask_b[0] = True  # each source keeps at least one possible token
    src = _sources(a, b, mask_a, mask_b)
    mixed = mix_logprobs(src, [lam, 1 - lam])[0]
    assert not torch.isnan(mixed).any()
    assert math.isclose(float(mixed.exp().sum()), 1.0, rel_tol=1e-9)
    for k, w in ((0, lam), (1, 1 - lam)):
        if w > 0:  # impossible under a positive-weight source stays impossible
            assert torch.isneginf(mixed[torch.isneginf(src[k, 0])]).all()


@settings(max_examples=100, deadline=None)
@given(logit_rows, logit_rows, masks)
def test_zero_weight_source_is_ignored_even_where_it_is_minus_inf(a, b, mask_b):
    mask_b[0] = True
    src = _sources(a, b, None, mask_b)
    assert torch.allclose(mix_logprobs(src, [1.0, 0.0])[0], src[0, 0])
    assert torch.allclose(mix_logprobs(src, [0.0, 1.0])[0], src[1, 0])


def test_disjoint_supports_fall_back_to_the_heavier_source():
    a = _lp([1, 2, 3, 4, 5, 6], [True, True, True, False, False, False])
    b = _lp([1, 2, 3, 4, 5, 6], [False, False, False, True, True, True])
    mixed = mix_logprobs(torch.stack([a, b])[:, None], [0.3, 0.7])[0]
    assert torch.allclose(mixed, b)


def test_extrapolating_weights_keep_masked_tokens_impossible():
    a = _lp([1, 2, 3, 4, 5, 6], [True, True, True, True, True, False])
    b = _lp([6, 5, 4, 3, 2, 1])
    mixed = mix_logprobs(torch.stack([a, b])[:, None], [-1.0, 2.0])[0]  # DeRa with lambda=2
    assert torch.isneginf(mixed[5]) and not torch.isnan(mixed).any()


@settings(max_examples=200, deadline=None)
@given(logit_rows, logit_rows)
def test_divergences(a, b):
    lp, lq = _lp(a), _lp(b)
    assert float(kl(lp, lp)) == 0.0 and float(kl(lp, lq)) >= -1e-12
    assert -1e-12 <= float(js(lp, lq)) <= math.log(2) + 1e-12
    assert math.isclose(float(js(lp, lq)), float(js(lq, lp)), abs_tol=1e-12)
    assert 0.0 <= float(entropy(lp)) <= math.log(V) + 1e-12
    assert float(top1_agree(lp, lp)) == 1.0


def test_kl_handles_zero_probabilities():
    lp = _lp([1, 2, 3, 4, 5, 6], [True, True, False, False, False, False])
    lq = _lp([1, 2, 3, 4, 5, 6])
    assert math.isfinite(float(kl(lp, lq)))
    assert float(kl(lq, lp)) == math.inf
    assert math.isfinite(float(js(lq, lp)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(logit_rows, logit_rows, lams), min_size=1, max_size=4))
def test_per_row_weights_equal_mixing_each_row_alone(rows):
    # Several lambda values share one batch: row b mixed with its own weights.
    src = torch.cat([_sources(a, b) for a, b, _ in rows], dim=1)  # (2, B, V)
    weights = torch.tensor([[lam for *_, lam in rows], [1 - lam for *_, lam in rows]], dtype=torch.float64)
    together = mix_logprobs(src, weights)
    for i, (a, b, lam) in enumerate(rows):
        alone = mix_logprobs(_sources(a, b), [lam, 1 - lam])[0]
        assert torch.equal(together[i], alone)


def test_weights_of_the_wrong_shape_are_rejected():
    src = torch.zeros(2, 3, V)
    for bad in ([0.5, 0.3, 0.2], torch.ones(2, 2)):
        try:
            mix_logprobs(src, bad)
        except ValueError as e:
            assert "2 sources x 3 rows" in str(e)
        else:
            raise AssertionError(f"weights {bad} were accepted")


def test_log_ratio_of_the_chosen_token_by_hand():
    p1 = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]], dtype=torch.float64)
    p2 = torch.tensor([[0.125, 0.125, 0.75], [0.1, 0.2, 0.7]], dtype=torch.float64)
    chosen = torch.tensor([0, 2])
    ratio = log_ratio_at(p1.log(), p2.log(), chosen)
    assert ratio.tolist() == pytest.approx([math.log(4), math.log(3 / 7)])


def test_mixture_stats_record_each_steps_log_ratio_of_the_token_taken():
    # Two rows over three steps of a hand-made pair of distributions; row 1 leaves after step 1.
    p1 = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    p2 = torch.tensor([0.125, 0.125, 0.75], dtype=torch.float64)
    stats = MixtureStats(2, keep_steps=True)
    taken = [[0, 2], [1, 0], [2]]
    for index, tokens in enumerate(taken):
        rows = list(range(len(tokens)))
        logprobs = torch.stack([p1.log().expand(len(rows), 3), p2.log().expand(len(rows), 3)])
        mixed = torch.log_softmax(0.5 * logprobs[0] + 0.5 * logprobs[1], -1)
        stats(lockstep.StepView(index, rows, logprobs, Step(token_ids=torch.tensor(tokens), logprobs=mixed)))
    expected = {0: [math.log(4), math.log(2), math.log(1 / 3)], 1: [math.log(1 / 3), math.log(4)]}
    for row, values in expected.items():
        assert stats.per_step(row)["log_ratio_p1_p2"] == pytest.approx(values, abs=1e-6)
        assert stats.means(row)["log_ratio_p1_p2"] == pytest.approx(sum(values) / len(values))
