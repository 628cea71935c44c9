"""Dual-context mixture decoding on the tiny model: limits and batching exactness."""

from __future__ import annotations

import pytest
import torch

from decoders import get_decoder
from decoders.mix_step import MixtureStep
from harness.engine.lockstep import decode
from tests.tiny import tiny_model

X = ["What is 2+3?", "Sort: b, a", "Count the r in strawberry."]
X2 = [x + " You said 6. That is wrong; the answer is 5. Reflect, then redo the task." for x in X]


@pytest.fixture(scope="module")
def tiny64():
    return tiny_model(dtype=torch.float64)


def _ids(m, texts):
    return [m.tokenizer(t)["input_ids"] for t in texts]


def _greedy(m, texts, n=30):
    return [r.token_ids for r in decode(m, [_ids(m, texts)], get_decoder("greedy"), max_new_tokens=n)]


def _mixed(m, lam, n=30):
    rows = decode(m, [_ids(m, X), _ids(m, X2)], MixtureStep((lam, 1 - lam)), max_new_tokens=n)
    return [r.token_ids for r in rows]


def test_lambda_one_reproduces_greedy_on_x(tiny64):
    assert _mixed(tiny64, 1.0) == _greedy(tiny64, X)


def test_lambda_zero_reproduces_greedy_on_x2(tiny64):
    assert _mixed(tiny64, 0.0) == _greedy(tiny64, X2)


def test_intermediate_lambda_differs_from_both_ends(tiny64):
    half = _mixed(tiny64, 0.5)
    assert half != _greedy(tiny64, X) or half != _greedy(tiny64, X2)


def test_batched_dual_step_equals_separate_unbatched_forwards(tiny64):
    """Reference: each row and each context run alone with a plain forward per step."""
    lam, n = 0.4, 20
    batched = _mixed(tiny64, lam, n)
    eos = tiny64.tokenizer.eos_token_id
    for row, (x, x2) in enumerate(zip(_ids(tiny64, X), _ids(tiny64, X2), strict=True)):
        contexts, out = [list(x), list(x2)], []
        with torch.no_grad():
            for _ in range(n):
                lps = [torch.log_softmax(tiny64.model(torch.tensor([c])).logits[0, -1], -1) for c in contexts]
                token = int((lam * lps[0] + (1 - lam) * lps[1]).argmax())
                out.append(token)
                if token == eos:
                    break
                for c in contexts:
                    c.append(token)
        assert batched[row] == out


def test_mixture_logprobs_are_traced_per_stream(tiny64):
    rows = decode(tiny64, [_ids(tiny64, X), _ids(tiny64, X2)], MixtureStep((0.5, 0.5)), max_new_tokens=5,
                  return_logprobs=True)
    assert all(len(step) == 3 for step in rows[0].token_logprobs)  # stream 1, stream 2, mixture


def test_sampled_mixture_reports_the_mixture_before_filtering():
    """Step.logprobs means the decoder's distribution before temperature and truncation."""
    lp = torch.log_softmax(torch.randn(2, 3, 11, dtype=torch.float64), dim=-1)
    step = MixtureStep((0.3, 0.7), sample=True, temperature=0.5, top_k=2).step(lp, [torch.Generator()] * 3)
    assert torch.allclose(step.logprobs, torch.log_softmax(0.3 * lp[0] + 0.7 * lp[1], dim=-1))
    assert torch.isfinite(step.logprobs).all()  # full support, so KL statistics stay finite


def test_per_row_weights_are_per_row_state():
    lp = torch.log_softmax(torch.randn(2, 3, 11, dtype=torch.float64), dim=-1)
    weights = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]], dtype=torch.float64)
    mix = MixtureStep(weights)
    state = mix.init_state(3)
    assert torch.equal(state["weights"], weights.T)  # rows first, as the engine compacts them
    kept = {"weights": state["weights"][[2, 0]]}
    assert torch.equal(mix.step(lp[:, [2, 0]], [torch.Generator()] * 2, kept).token_ids, lp[[1, 0], [2, 0]].argmax(-1))
    assert MixtureStep((0.5, 0.5)).init_state(3) == {}
    with pytest.raises(ValueError, match=r"do not fit 4 rows"):
        mix.init_state(4)
