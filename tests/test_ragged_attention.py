"""Decode steps attend per group of similar-length rows: the same attention as masked SDPA
over the padded batch, the same tokens from the engine, and rows without holes after a
prefill that reused cached prefixes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from decoders import get_decoder
from harness.engine import lockstep, ragged_attention
from harness.engine.prefix_cache import PrefixCache
from harness.engine.prompts import encode
from harness.engine.ragged_attention import RowGroup, ragged_rows, ragged_sdpa_attention, row_layout
from harness.engine.stream_batch import StreamBatch
from tests.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rows_are_grouped_by_length_and_masked_only_where_padding_remains():
    # x (96 real columns) beside x2 (581): two groups, each reading only its own columns.
    layout = ragged_rows([485, 0], [False, False], 581)
    assert layout.groups == (RowGroup(0, 1, 485, False), RowGroup(1, 2, 0, False))
    # Rows of similar length share a group; their different starts need the mask.
    assert ragged_rows([10, 0, 5], [False] * 3, 100).groups == (RowGroup(0, 3, 0, True),)
    # Equal starts need none, unless a row has a hole.
    assert ragged_rows([4, 4], [False, False], 50).groups == (RowGroup(0, 2, 4, False),)
    assert ragged_rows([4, 4], [False, True], 50).groups == (RowGroup(0, 2, 4, True),)
    # Only consecutive rows are grouped (a group is a slice of the batch).
    assert len(ragged_rows([0, 480, 0], [False] * 3, 500).groups) == 3


def test_row_layout_reads_starts_and_holes_from_the_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 0, 1]])
    assert row_layout(mask) == ([2, 0, 1], [False, False, True])


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_ragged_attention_equals_masked_sdpa_over_the_padded_batch(kv_heads):
    torch.manual_seed(0)
    heads, dim, width = 4, 8, 40
    starts, holes = [30, 28, 0, 3], [False, False, False, True]
    mask2d = torch.ones(len(starts), width, dtype=torch.long)
    for row, start in enumerate(starts):
        mask2d[row, :start] = 0
    mask2d[3, 10:14] = 0  # a hole: padding between a reused prefix and its rest
    assert row_layout(mask2d) == (starts, holes)
    query = torch.randn(len(starts), heads, 1, dim)
    key, value = torch.randn(2, len(starts), kv_heads, width, dim)
    mask4d = mask2d.bool()[:, None, None, :]
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True)
    expected, _ = sdpa_attention_forward(module, query, key, value, mask4d, scaling=dim**-0.5)
    layout = ragged_rows(starts, holes, width)
    assert len(layout.groups) == 2  # the short rows and the long ones
    got, _ = ragged_sdpa_attention(module, query, key, value, mask4d, scaling=dim**-0.5, ragged_rows=layout)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # A prefill (several query positions) or a call without the layout is transformers' SDPA.
    plain, _ = ragged_sdpa_attention(module, query, key, value, mask4d, scaling=dim**-0.5)
    assert torch.equal(plain, expected)


def _contexts(loaded):
    short = ["What is 12 + 30?", "2*3=?"]
    longer = [s + " Feedback: that was wrong; look again at each step before answering. " * 4 for s in short]
    return [[encode(loaded.tokenizer, t) for t in short], [encode(loaded.tokenizer, t) for t in longer]]


def _stage4(loaded, contexts, eos=()):
    out = lockstep.decode(loaded, contexts, get_decoder("redumix", lam=0.5), max_new_tokens=24,
                          eos_token_ids=list(eos), return_logprobs=True, split_streams=False)
    return [r.token_ids for r in out], [r.token_logprobs for r in out]


def test_the_engine_decodes_the_same_tokens_with_ragged_attention(monkeypatch):
    tiny = tiny_model(batch_invariant=False)
    contexts = _contexts(tiny)
    # Tokens the model emits often end rows at different steps, so groups change as rows leave.
    common = torch.bincount(torch.tensor([t for row in _stage4(tiny, contexts)[0] for t in row]))
    eos = common.argsort(descending=True)[:1].tolist()
    tokens_on, logprobs_on = _stage4(tiny, contexts, eos)
    assert tiny.model.config._attn_implementation == ragged_attention.NAME
    monkeypatch.setattr(ragged_attention, "install", lambda model: False)
    tokens_off, logprobs_off = _stage4(tiny, contexts, eos)
    assert len({len(t) for t in tokens_off}) > 1
    assert tokens_on == tokens_off
    torch.testing.assert_close(torch.tensor(sum(logprobs_on, [])), torch.tensor(sum(logprobs_off, [])))


def test_models_without_sdpa_keep_their_attention():
    tiny = tiny_model(batch_invariant=False)
    tiny.model.set_attn_implementation("eager")
    batch = StreamBatch(tiny.model, tiny.tokenizer.pad_token_id)
    assert not batch.ragged and tiny.model.config._attn_implementation == "eager"


def test_prefixes_from_the_cache_leave_no_padding_inside_a_row():
    tiny = tiny_model(batch_invariant=False)
    tiny.prefix_cache = PrefixCache()
    xs, x2s = _contexts(tiny)
    # Cache every prompt but its last few tokens; the rests differ in length (1 and 9 tokens)
    # and are prefilled in one forward, which pads the shorter between its prefix and its rest.
    cut = [len(xs[0]) - 1, len(x2s[1]) - 9]
    lockstep.decode(tiny, [[xs[0][: cut[0]], x2s[1][: cut[1]]]], get_decoder("greedy"), max_new_tokens=1,
                    eos_token_ids=[])
    rows = [xs[0], x2s[1]]
    warm = StreamBatch(tiny.model, tiny.tokenizer.pad_token_id, tiny.prefix_cache)
    cold = StreamBatch(tiny.model, tiny.tokenizer.pad_token_id)
    logits_warm, logits_cold = warm.prefill(rows), cold.prefill(rows)
    assert tiny.prefix_cache.stats.reused_tokens >= sum(cut) - 2
    starts, holes = row_layout(warm.mask)
    assert not any(holes)
    assert [warm.mask.shape[1] - s for s in starts] == [len(r) for r in rows]
    torch.testing.assert_close(logits_warm, logits_cold, rtol=1e-4, atol=1e-5)
    token = logits_cold.argmax(-1)
    for _ in range(3):
        step_warm, step_cold = warm.advance(token_ids=token), cold.advance(token_ids=token)
        torch.testing.assert_close(step_warm, step_cold, rtol=1e-4, atol=1e-5)
        token = step_cold.argmax(-1)
