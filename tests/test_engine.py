"""The engine against transformers' own generate, and its stopping rules."""

from __future__ import annotations

import pytest
import torch

from decoders import get_decoder
from decoders.sampling import row_generator
from harness.engine.lockstep import decode
from harness.engine.stream_batch import length_buckets
from tests.tiny import tiny_model

PROMPTS = ["What is 2+3?", "Hi", "A much longer prompt, so the others need left padding."]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def _ids(tiny, texts):
    return [tiny.tokenizer(t)["input_ids"] for t in texts]


def _generate(tiny, texts, max_new_tokens):
    enc = tiny.tokenizer(texts, return_tensors="pt", padding=True)
    out = tiny.model.generate(
        **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tiny.tokenizer.pad_token_id
    )
    rows = []
    for row in out[:, enc["input_ids"].shape[1] :].tolist():
        # generate pads finished rows; keep tokens up to and including the first EOS
        eos = tiny.tokenizer.eos_token_id
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


def test_greedy_matches_generate_single_prompt(tiny):
    ours = decode(tiny, [_ids(tiny, PROMPTS[:1])], get_decoder("greedy"), max_new_tokens=40)
    assert ours[0].token_ids == _generate(tiny, PROMPTS[:1], 40)[0]


def test_greedy_matches_generate_batch_with_left_padding(tiny):
    ours = decode(tiny, [_ids(tiny, PROMPTS)], get_decoder("greedy"), max_new_tokens=40)
    theirs = _generate(tiny, PROMPTS, 40)
    assert [r.token_ids for r in ours] == theirs


def test_batch_does_not_change_any_rows_result(tiny):
    batched = decode(tiny, [_ids(tiny, PROMPTS)], get_decoder("greedy"), max_new_tokens=30)
    for i, prompt in enumerate(PROMPTS):
        alone = decode(tiny, [_ids(tiny, [prompt])], get_decoder("greedy"), max_new_tokens=30)
        assert alone[0].token_ids == batched[i].token_ids


def test_rows_stop_at_eos_and_keep_others_going():
    # A model whose EOS is made likely finishes some rows early; the rest must match
    # what they produce alone.
    tiny = tiny_model(seed=3)
    eos = tiny.tokenizer.eos_token_id
    with torch.no_grad():
        tiny.model.model.embed_tokens.weight[eos] *= 4.0
    prompts = _ids(tiny, PROMPTS)
    batched = decode(tiny, [prompts], get_decoder("greedy"), max_new_tokens=60)
    reasons = {r.finish_reason for r in batched}
    assert "eos" in reasons, "the test model should end at least one row with EOS"
    for i, p in enumerate(prompts):
        alone = decode(tiny, [[p]], get_decoder("greedy"), max_new_tokens=60)[0]
        assert alone.token_ids == batched[i].token_ids
        if batched[i].finish_reason == "eos":
            assert batched[i].token_ids[-1] == eos
            assert "</s>" not in batched[i].text


def test_stop_string_ends_row_and_cuts_text(tiny):
    free = decode(tiny, [_ids(tiny, PROMPTS[:1])], get_decoder("greedy"), max_new_tokens=40)[0]
    stop = free.text[5:7]
    assert len(stop) == 2
    cut = decode(tiny, [_ids(tiny, PROMPTS[:1])], get_decoder("greedy"), max_new_tokens=40, stop_strings=[stop])[0]
    assert cut.finish_reason == "stop" and cut.stop == stop
    assert cut.text.endswith(stop) and free.text.startswith(cut.text)
    assert stop not in cut.text[:-len(stop)]


def test_max_new_tokens_and_result_fields(tiny):
    out = decode(tiny, [_ids(tiny, PROMPTS)], get_decoder("greedy"), max_new_tokens=7, eos_token_ids=[])
    for row, prompt in zip(out, _ids(tiny, PROMPTS), strict=True):
        assert row.finish_reason == "length" and row.new_tokens == 7
        assert row.prompt_tokens == [len(prompt)]
        assert row.prefill_s > 0 and row.decode_s > 0


def test_sampling_same_seed_same_output_different_seed_differs():
    flat = tiny_model(init_std=0.02)  # near-uniform: sampling has plenty of entropy
    prompts = [_ids(flat, PROMPTS)]
    sampler = get_decoder("sample", temperature=1.0)

    def run(seed):
        rngs = [row_generator(seed, f"row{i}") for i in range(len(PROMPTS))]
        return [r.token_ids for r in decode(flat, prompts, sampler, max_new_tokens=20, rngs=rngs, eos_token_ids=[])]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_sampled_row_does_not_depend_on_its_batch():
    flat = tiny_model(init_std=0.02)
    sampler = get_decoder("sample")
    prompts = _ids(flat, PROMPTS)
    rngs = [row_generator(0, f"p{i}") for i in range(3)]
    together = decode(flat, [prompts], sampler, max_new_tokens=15, rngs=rngs, eos_token_ids=[])
    alone = decode(flat, [prompts[2:]], sampler, max_new_tokens=15, rngs=[row_generator(0, "p2")], eos_token_ids=[])
    assert together[2].token_ids == alone[0].token_ids


def test_logprobs_on_request_match_greedy_choice(tiny):
    out = decode(tiny, [_ids(tiny, PROMPTS[:1])], get_decoder("greedy"), max_new_tokens=5, return_logprobs=True)
    trace = out[0].token_logprobs
    assert len(trace) == out[0].new_tokens
    assert all(len(step) == 1 and step[0] <= 0.0 for step in trace)


def test_soft_one_hot_input_equals_token_input(tiny):
    """A decoder that feeds one-hot soft weights must reproduce greedy decoding."""
    from decoders.base import Step

    class OneHotGreedy:
        name, num_streams = "one-hot", 1

        def step(self, logprobs, rngs):
            ids = logprobs[0].argmax(-1)
            return Step(token_ids=ids, soft_weights=torch.nn.functional.one_hot(ids, logprobs.shape[-1]).float())

    prompts = [_ids(tiny, PROMPTS)]
    soft = decode(tiny, prompts, OneHotGreedy(), max_new_tokens=25)
    hard = decode(tiny, prompts, get_decoder("greedy"), max_new_tokens=25)
    assert [r.token_ids for r in soft] == [r.token_ids for r in hard]


def test_stream_count_must_match_decoder(tiny):
    with pytest.raises(ValueError, match="reads 1 stream"):
        decode(tiny, [_ids(tiny, PROMPTS), _ids(tiny, PROMPTS)], get_decoder("greedy"), max_new_tokens=3)


def test_repeated_prompts_are_prefilled_once_and_decode_like_the_others(tiny):
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[0], PROMPTS[0], PROMPTS[2]]
    widths = []
    hook = tiny.model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        repeated = decode(tiny, [_ids(tiny, prompts)], get_decoder("greedy"), max_new_tokens=20)
    finally:
        hook.remove()
    prefills = [shape for shape in widths if shape[1] > 1]
    assert sum(rows for rows, _ in prefills) == 2  # two distinct prompts prefilled
    assert [shape for shape in widths if shape[1] == 1][0][0] == len(prompts)  # every row decodes
    alone = {p: decode(tiny, [_ids(tiny, [p])], get_decoder("greedy"), max_new_tokens=20)[0].token_ids
             for p in set(prompts)}
    assert [r.token_ids for r in repeated] == [alone[p] for p in prompts]


def test_prompts_of_very_different_lengths_are_prefilled_apart(tiny):
    short, long = "Hi there", "A much longer prompt that would make the short one mostly padding. " * 3
    prompts = [long, short, long + "!", short + "?"]
    widths = []
    hook = tiny.model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        together = decode(tiny, [_ids(tiny, prompts)], get_decoder("greedy"), max_new_tokens=20)
    finally:
        hook.remove()
    prefills = sorted(shape for shape in widths if shape[1] > 1)
    assert prefills == [(2, len(_ids(tiny, [short + "?"])[0])), (2, len(_ids(tiny, [long + "!"])[0]))]
    for prompt, row in zip(prompts, together, strict=True):
        alone = decode(tiny, [_ids(tiny, [prompt])], get_decoder("greedy"), max_new_tokens=20)[0]
        assert row.token_ids == alone.token_ids


def test_length_buckets():
    assert length_buckets([100, 600, 110, 580]) == [[0, 2], [3, 1]]
    assert length_buckets([5, 6, 7]) == [[0, 1, 2]]
    # Short rests (prompts mostly served by the prefix cache) share a forward despite the ratio.
    assert length_buckets([1, 12, 30, 33]) == [[0, 1, 2, 3]]
    assert length_buckets([1, 40]) == [[0], [1]]


def test_growing_cache_layer_matches_concatenation():
    from harness.engine.growing_cache import GrowingLayer

    torch.manual_seed(0)
    layer, keys = GrowingLayer(), []
    for length in (5, 1, 1, 70, 1):  # crosses a growth of the buffer
        k = torch.randn(3, 2, length, 4)
        keys.append(k)
        got, _ = layer.update(k, k.clone())
        assert torch.equal(got, torch.cat(keys, dim=-2))
    layer.batch_select_indices(torch.tensor([2, 0, 0]))
    layer.drop_left(3)
    expected = torch.cat(keys, dim=-2)[[2, 0, 0]][..., 3:, :]
    assert torch.equal(layer.keys, expected) and torch.equal(layer.values, expected)
    assert layer.get_seq_length() == expected.shape[-2]
    new = torch.randn(3, 2, 1, 4)
    got, _ = layer.update(new, new)
    assert torch.equal(got, torch.cat([expected, new], dim=-2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sampling_on_cuda_with_row_generators():
    import dataclasses

    flat = tiny_model(init_std=0.02)
    flat = dataclasses.replace(flat, model=flat.model.to("cuda"), device="cuda")
    sampler = get_decoder("sample")
    prompts = _ids(flat, PROMPTS)

    def run(rows, keys):
        rngs = [row_generator(0, key, flat.device) for key in keys]
        return decode(flat, [rows], sampler, max_new_tokens=15, rngs=rngs, eos_token_ids=[])

    together = run(prompts, ["p0", "p1", "p2"])
    assert [r.token_ids for r in together] == [r.token_ids for r in run(prompts, ["p0", "p1", "p2"])]
    assert together[2].token_ids == run(prompts[2:], ["p2"])[0].token_ids
