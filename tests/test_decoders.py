"""Decoder registry, config validation and the sampling math."""

from __future__ import annotations

import math

import pytest
import torch

from decoders import available_decoders, get_decoder
from decoders.registry import parse_key_values
from decoders.sampling import draw, filter_logprobs, row_generator


def test_registry_lists_builtin_decoders():
    assert {"greedy", "sample"} <= set(available_decoders())


def test_unknown_decoder_suggests_closest():
    with pytest.raises(ValueError, match=r"Unknown decoder 'gredy'\. Did you mean: greedy[,?].* Available: "):
        get_decoder("gredy")


def test_unknown_parameter_suggests_closest():
    with pytest.raises(ValueError, match="Unknown parameter 'temprature'.*Did you mean: temperature"):
        get_decoder("sample", temprature=0.5)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"temperature": 0.0}, r"temperature \(=0.0\) must be > 0; for deterministic decoding use decoder 'greedy'"),
        ({"top_p": 1.5}, r"top_p \(=1.5\) must be in \(0, 1\]"),
        ({"top_k": -1}, r"top_k \(=-1\) must be >= 0"),
        ({"min_p": 1.0}, r"min_p \(=1.0\) must be in \[0, 1\)"),
        ({"temperature": "hot"}, r"temperature \(='hot'\) is not a valid float"),
    ],
)
def test_invalid_sampling_config(config, message):
    with pytest.raises(ValueError, match=message):
        get_decoder("sample", **config)


def test_string_values_are_parsed_to_field_types():
    dec = get_decoder("sample", temperature="0.7", top_k="5", top_p="0.9")
    assert dec.config() == {"temperature": 0.7, "top_k": 5, "top_p": 0.9, "min_p": 0.0}


def test_key_value_parsing():
    assert parse_key_values(["a=1,b=x", "c=2"], "--decoder-config") == {"a": "1", "b": "x", "c": "2"}
    assert parse_key_values(["lam=0,0.5,1"], "--decoder-config") == {"lam": "0,0.5,1"}
    with pytest.raises(ValueError, match="not key=value"):
        parse_key_values(["temperature"], "--decoder-config")


LOGPROBS = torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]), dim=-1)


def _kept(lp):
    return (lp[0] > -math.inf).nonzero().flatten().tolist()


def test_top_k_keeps_k_most_likely():
    assert _kept(filter_logprobs(LOGPROBS, top_k=2)) == [0, 1]


def test_top_p_keeps_smallest_set_reaching_p():
    probs = LOGPROBS.exp()[0]
    p = float(probs[0] + probs[1]) - 1e-4  # the first two tokens are needed to reach p
    assert _kept(filter_logprobs(LOGPROBS, top_p=p)) == [0, 1]
    assert _kept(filter_logprobs(LOGPROBS, top_p=float(probs[0]) / 2)) == [0]


def test_min_p_is_relative_to_the_top_token():
    # exp(-1) ~ 0.37 of the top probability for token 1; token 2 is exp(-2) ~ 0.14.
    assert _kept(filter_logprobs(LOGPROBS, min_p=0.2)) == [0, 1]


def test_filtered_rows_are_normalised_and_temperature_sharpens():
    out = filter_logprobs(LOGPROBS, temperature=0.5, top_k=3)
    assert torch.allclose(out.exp().sum(-1), torch.ones(1))
    assert out[0, 0] > torch.log_softmax(LOGPROBS, -1)[0, 0]


# Two rows' draws as the CPU generators gave them before generators could live on the
# logits' device: CPU sampling must stay bit-identical.
PINNED_LOGPROBS = torch.log_softmax(torch.arange(12.0).sin().mul(2).view(2, 6), dim=-1)
PINNED_DRAWS = [[1, 1], [2, 4], [3, 2], [1, 1], [2, 2], [0, 2]]


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_row_generators_on_cpu_give_the_pinned_draws(device):
    extra = () if device is None else (device,)
    rngs = [row_generator(7, "a", *extra), row_generator(7, "b", *extra)]
    assert [draw(PINNED_LOGPROBS, rngs).tolist() for _ in PINNED_DRAWS] == PINNED_DRAWS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_draws_on_cuda_with_row_generators():
    logprobs = PINNED_LOGPROBS.cuda()
    rngs = [row_generator(7, "a", "cuda"), row_generator(7, "b", "cuda")]
    assert all(g.device.type == "cuda" for g in rngs)
    draws = [draw(logprobs, rngs) for _ in range(50)]
    assert all(d.device == logprobs.device for d in draws)
    # One stream per row: row 1 alone draws what it drew next to row 0.
    alone = [row_generator(7, "b", "cuda")]
    assert [draw(logprobs[1:], alone).item() for _ in range(50)] == [int(d[1]) for d in draws]
    # A CPU generator with CUDA logits still draws, on its own device, so CPU streams are kept.
    cpu_rngs = [row_generator(7, "a"), row_generator(7, "b")]
    assert [draw(logprobs, cpu_rngs).tolist() for _ in PINNED_DRAWS] == PINNED_DRAWS


def test_sampler_reports_stream_0_before_filtering():
    """Step.logprobs is the distribution before filtering: for one stream that is the
    stream itself, the default (None)."""
    lp = torch.log_softmax(torch.randn(1, 2, 9), dim=-1)
    step = get_decoder("sample", temperature=0.3, top_k=2).step(lp, [row_generator(0, "a"), row_generator(0, "b")])
    assert step.logprobs is None
    assert step.token_ids.shape == (2,)
