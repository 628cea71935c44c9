"""Per-row control of the engine: decoder state, soft and token rows in one batch,
rows that may not stop, forced tokens, and several models."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from decoders import get_decoder
from decoders.base import NOT_FORCED, Step
from decoders.mix_step import MixtureStep
from decoders.sampling import row_generator
from harness.engine.lockstep import decode
from tests.tiny import tiny_model, tiny_tokenizer

PROMPTS = ["What is 2+3?", "Hi", "A much longer prompt, so the others need left padding.", "Sort: b, a"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def tiny64():
    return tiny_model(dtype=torch.float64)


def _ids(m, texts):
    return [m.tokenizer(t)["input_ids"] for t in texts]


def _token(m, char: str) -> int:
    return m.tokenizer.convert_tokens_to_ids(char)


# --- test decoders -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EosAfterThinking:
    """Always picks EOS, but row b may not stop during its first think_steps[b] steps."""

    eos: int
    think_steps: tuple[int, ...]
    name = "eos-after-thinking"
    num_streams = 1

    def init_state(self, num_rows):
        return {"left": torch.tensor(self.think_steps), "seen": torch.zeros(num_rows, dtype=torch.long)}

    def step(self, logprobs, rngs, state):
        tokens = torch.full((logprobs.shape[1],), self.eos)
        return Step(token_ids=tokens, no_stop_mask=state["left"] > 0,
                    state={"left": state["left"] - 1, "seen": state["seen"] + 1})


@dataclasses.dataclass(frozen=True)
class Script:
    """Writes `text` character by character; rows may not stop during the first `hold` steps."""

    ids: tuple[int, ...]
    hold: int
    name = "script"
    num_streams = 1

    def init_state(self, num_rows):
        return {"at": torch.zeros(num_rows, dtype=torch.long)}

    def step(self, logprobs, rngs, state):
        at = state["at"]
        tokens = torch.tensor(self.ids)[at.clamp(max=len(self.ids) - 1)]
        return Step(token_ids=tokens, no_stop_mask=at < self.hold, state={"at": at + 1})


@dataclasses.dataclass(frozen=True)
class SoftOrToken:
    """Greedy tokens; rows flagged soft feed the full distribution (weights @ E) instead."""

    soft: tuple[bool, ...]
    name = "soft-or-token"
    num_streams = 1

    def init_state(self, num_rows):
        return {"soft": torch.tensor(self.soft)}

    def step(self, logprobs, rngs, state):
        probs = logprobs[0].exp()
        return Step(token_ids=probs.argmax(-1), soft_weights=probs, soft_mask=state["soft"])


@dataclasses.dataclass(frozen=True)
class GreedyForcing:
    """Greedy, forcing token `token` into row b at step at_step[b] (-1: never)."""

    token: int
    at_step: tuple[int, ...]
    name = "greedy-forcing"
    num_streams = 1

    def init_state(self, num_rows):
        return {"at": torch.tensor(self.at_step), "step": torch.zeros(num_rows, dtype=torch.long)}

    def step(self, logprobs, rngs, state):
        forced = torch.where(state["step"] == state["at"], self.token, NOT_FORCED)
        return Step(token_ids=logprobs[0].argmax(-1), forced_ids=forced,
                    state={"at": state["at"], "step": state["step"] + 1})


def _reference(m, prompt, n, forced=None):
    """Greedy with a plain forward over the whole sequence each step (no cache, no batch)."""
    forced, context, out = forced or {}, list(prompt), []
    with torch.no_grad():
        for t in range(n):
            token = forced.get(t)
            if token is None:
                token = int(m.model(torch.tensor([context])).logits[0, -1].argmax())
            out.append(token)
            context.append(token)
    return out


# --- rows that may not stop --------------------------------------------------------


def test_rows_that_may_not_stop_ignore_eos_then_end_on_it(tiny):
    eos = tiny.tokenizer.eos_token_id
    think = (3, 0, 5, 1)
    rows = decode(tiny, [_ids(tiny, PROMPTS)], EosAfterThinking(eos, think), max_new_tokens=20)
    for row, k in zip(rows, think, strict=True):
        assert row.finish_reason == "eos"
        assert row.token_ids == [eos] * (k + 1)  # k held steps, then the first EOS that may end it


def test_max_new_tokens_still_ends_a_row_that_may_not_stop(tiny):
    eos = tiny.tokenizer.eos_token_id
    [row] = decode(tiny, [_ids(tiny, PROMPTS[:1])], EosAfterThinking(eos, (50,)), max_new_tokens=4)
    assert row.finish_reason == "length" and row.new_tokens == 4


def test_stop_strings_written_while_held_do_not_count_later(tiny):
    text = "ab</x>cd</x>ef"
    script = Script(tuple(_ids(tiny, [text])[0]), hold=len("ab</x>"))
    [row] = decode(tiny, [_ids(tiny, PROMPTS[:1])], script, max_new_tokens=len(text), stop_strings=["</x>"])
    assert row.finish_reason == "stop" and row.text == "ab</x>cd</x>"
    [free] = decode(tiny, [_ids(tiny, PROMPTS[:1])], dataclasses.replace(script, hold=0),
                    max_new_tokens=len(text), stop_strings=["</x>"])
    assert free.text == "ab</x>"


# --- per-row state -------------------------------------------------------------------


def test_per_row_state_follows_its_row_as_others_finish(tiny):
    """Rows finish at different steps; each keeps its own counters, as when decoded alone."""
    eos = tiny.tokenizer.eos_token_id
    think = (4, 0, 7, 2)
    batched = decode(tiny, [_ids(tiny, PROMPTS)], EosAfterThinking(eos, think), max_new_tokens=20)
    for i, k in enumerate(think):
        [alone] = decode(tiny, [_ids(tiny, PROMPTS[i : i + 1])], EosAfterThinking(eos, (k,)), max_new_tokens=20)
        assert batched[i].token_ids == alone.token_ids


def test_per_row_mixing_weights_match_each_row_alone():
    """Rows with their own lambda in one batch, finishing at different steps on EOS."""
    m = tiny_model(seed=3)
    with torch.no_grad():
        m.model.model.embed_tokens.weight[m.tokenizer.eos_token_id] *= 4.0
    x, x2 = _ids(m, PROMPTS), _ids(m, [p + " Try again." for p in PROMPTS])
    lams = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    batched = decode(m, [x, x2], MixtureStep(weights=torch.stack([lams, 1 - lams])), max_new_tokens=60)
    assert len({r.new_tokens for r in batched}) > 1, "rows should finish at different steps"
    assert "eos" in {r.finish_reason for r in batched}
    for i, lam in enumerate(lams.tolist()):
        [alone] = decode(m, [x[i : i + 1], x2[i : i + 1]], MixtureStep((lam, 1 - lam)), max_new_tokens=60)
        assert batched[i].token_ids == alone.token_ids


def test_state_with_the_wrong_number_of_rows_is_refused(tiny):
    with pytest.raises(ValueError, match=r"per-row state 'left' must be a tensor with 2 rows"):
        decode(tiny, [_ids(tiny, PROMPTS[:2])], EosAfterThinking(0, (1, 2, 3)), max_new_tokens=3)


def test_a_decoder_with_only_select_rows_is_refused(tiny):
    class Legacy:
        name, num_streams = "legacy", 1

        def select_rows(self, indices):
            return self

        def step(self, logprobs, rngs):
            return Step(token_ids=logprobs[0].argmax(-1))

    with pytest.raises(TypeError, match="select_rows"):
        decode(tiny, [_ids(tiny, PROMPTS[:1])], Legacy(), max_new_tokens=3)


# --- soft and token rows in one batch ------------------------------------------------


def test_soft_and_token_rows_in_one_batch_decode_as_each_alone(tiny):
    modes = (True, False, True, False)
    prompts = _ids(tiny, PROMPTS)
    batched = decode(tiny, [prompts], SoftOrToken(modes), max_new_tokens=20, eos_token_ids=[])
    greedy = decode(tiny, [prompts], get_decoder("greedy"), max_new_tokens=20, eos_token_ids=[])
    for i, soft in enumerate(modes):
        [alone] = decode(tiny, [prompts[i : i + 1]], SoftOrToken((soft,)), max_new_tokens=20, eos_token_ids=[])
        assert batched[i].token_ids == alone.token_ids
        # Soft inputs change what follows (so the row really was fed soft); token rows are greedy.
        assert (batched[i].token_ids != greedy[i].token_ids) == soft


def test_a_forced_token_is_fed_as_a_token_in_a_soft_row(tiny):
    """Forcing row 0 at step 2 equals the decoder itself feeding that token as a token there."""
    token = _token(tiny, "Z")

    class Soft:
        name, num_streams = "soft", 1

        def __init__(self, forced):
            self.forced, self.step_index = forced, 0

        def step(self, logprobs, rngs):
            probs = logprobs[0].exp()
            ids, mask = probs.argmax(-1), torch.ones(probs.shape[0], dtype=torch.bool)
            forced = torch.full_like(ids, NOT_FORCED)
            if self.step_index == 2:
                if self.forced:
                    forced[0] = token
                else:  # the same thing by hand: a token row feeding `token`
                    ids[0], mask[0] = token, False
            self.step_index += 1
            return Step(token_ids=ids, soft_weights=probs, soft_mask=mask, forced_ids=forced)

    prompts = [_ids(tiny, PROMPTS[:2])]
    forced = decode(tiny, prompts, Soft(forced=True), max_new_tokens=12, eos_token_ids=[])
    by_hand = decode(tiny, prompts, Soft(forced=False), max_new_tokens=12, eos_token_ids=[])
    assert forced[0].token_ids[2] == token
    assert [r.token_ids for r in forced] == [r.token_ids for r in by_hand]


# --- forced tokens ---------------------------------------------------------------------


def test_decoder_forced_tokens_are_recorded_and_fed(tiny64):
    token = _token(tiny64, "Z")
    at = (3, -1, 0, 6)
    prompts = _ids(tiny64, PROMPTS)
    rows = decode(tiny64, [prompts], GreedyForcing(token, at), max_new_tokens=12, eos_token_ids=[])
    for row, prompt, t in zip(rows, prompts, at, strict=True):
        assert row.token_ids == _reference(tiny64, prompt, 12, {t: token} if t >= 0 else {})
        if t >= 0:
            assert row.token_ids[t] == token


def test_caller_forced_tokens_are_recorded_and_fed(tiny64):
    z, q = _token(tiny64, "Z"), _token(tiny64, "Q")
    plan = {(0, 3): z, (2, 5): q, (2, 6): q}
    seen = []

    def force(step_index, rows, new_ids):
        seen.append((step_index, list(rows), [len(ids) for ids in new_ids]))
        return {row: token for (row, step), token in plan.items() if step == step_index}

    prompts = _ids(tiny64, PROMPTS[:3])
    rows = decode(tiny64, [prompts], get_decoder("greedy"), max_new_tokens=10, eos_token_ids=[],
                  force_tokens=force, return_logprobs=True)
    assert rows[0].token_ids == _reference(tiny64, prompts[0], 10, {3: z})
    assert rows[1].token_ids == _reference(tiny64, prompts[1], 10)
    assert rows[2].token_ids == _reference(tiny64, prompts[2], 10, {5: q, 6: q})
    assert seen[4] == (4, [0, 1, 2], [4, 4, 4])  # the hook sees each row's tokens so far
    assert len(rows[0].token_logprobs) == 10


def test_caller_forcing_an_inactive_row_is_an_error(tiny):
    with pytest.raises(ValueError, match="row 5"):
        decode(tiny, [_ids(tiny, PROMPTS[:2])], get_decoder("greedy"), max_new_tokens=3,
               force_tokens=lambda step, rows, ids: {5: 7})


# --- log-probs -----------------------------------------------------------------------------


def test_traced_logprob_column_0_is_stream_0_before_filtering(tiny64):
    """What run records save as steps.logprob: the token's log-prob under the model's own
    next-token distribution, whatever temperature the sampler used."""
    prompt = _ids(tiny64, PROMPTS[:1])
    sampler = get_decoder("sample", temperature=0.5, top_k=5)
    [row] = decode(tiny64, [prompt], sampler, max_new_tokens=6, eos_token_ids=[],
                   rngs=[row_generator(0, "a")], return_logprobs=True)
    context = list(prompt[0])
    with torch.no_grad():
        for token, traced in zip(row.token_ids, row.token_logprobs, strict=True):
            expected = torch.log_softmax(tiny64.model(torch.tensor([context])).logits[0, -1], -1)[token]
            assert traced == pytest.approx([float(expected)], abs=1e-9)
            context.append(token)


# --- several models --------------------------------------------------------------------------


def _tokenizer_with(swap: tuple[str, str] | None = None, extra: str | None = None) -> PreTrainedTokenizerFast:
    """tiny_tokenizer's vocabulary with two tokens' ids swapped, or one token added."""
    vocab = dict(tiny_tokenizer().get_vocab())
    if swap:
        vocab[swap[0]], vocab[swap[1]] = vocab[swap[1]], vocab[swap[0]]
    if extra:
        vocab[extra] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def _no_forward(m):
    def refuse(*args, **kwargs):
        raise AssertionError("a forward pass ran before the vocabularies were checked")

    m.model.forward = refuse
    return m


@pytest.mark.parametrize(
    ("tokenizer", "message"),
    [
        (_tokenizer_with(swap=("a", "b")), r"id \d+ is 'a' in m1 and 'b' in m2; id \d+ is 'b' in m1 and 'a' in m2"),
        (_tokenizer_with(extra="<think>"), r"id \d+ is absent in m1 and '<think>' in m2"),
    ],
)
def test_models_with_different_vocabularies_are_refused_before_any_forward(tokenizer, message):
    m1 = _no_forward(dataclasses.replace(tiny_model(seed=0), name="m1"))
    m2 = _no_forward(dataclasses.replace(tiny_model(seed=1), name="m2", tokenizer=tokenizer))
    prompts = _ids(m1, PROMPTS[:2])
    with pytest.raises(ValueError, match="models disagree on the vocabulary") as err:
        decode([m1, m2], [prompts, prompts], MixtureStep((0.5, 0.5)), max_new_tokens=3, stream_models=[0, 1])
    assert err.match(message)


def test_two_models_mix_on_one_vocabulary_and_any_models_eos_ends_a_row(tiny64):
    other = tiny_model(seed=1, dtype=torch.float64)
    prompts = _ids(tiny64, PROMPTS[:2])
    mixed = decode([tiny64, other], [prompts, prompts], MixtureStep((0.5, 0.5)), max_new_tokens=8,
                   stream_models=[0, 1], eos_token_ids=[])
    with torch.no_grad():
        for row, prompt in zip(mixed, prompts, strict=True):
            context, expected = list(prompt), []
            for _ in range(8):
                lps = [torch.log_softmax(m.model(torch.tensor([context])).logits[0, -1], -1) for m in (tiny64, other)]
                expected.append(int((0.5 * lps[0] + 0.5 * lps[1]).argmax()))
                context.append(expected[-1])
            assert row.token_ids == expected
    # The second model's EOS ends rows too.
    stop_at = mixed[0].token_ids[2]
    other.model.generation_config.eos_token_id = stop_at
    rows = decode([tiny64, other], [prompts, prompts], MixtureStep((0.5, 0.5)), max_new_tokens=8,
                  stream_models=[0, 1])
    assert rows[0].finish_reason == "eos" and rows[0].token_ids == mixed[0].token_ids[:3]


def test_output_layers_of_different_sizes_are_cut_to_the_tokenizer(tiny64):
    padded = tiny_model(seed=1, dtype=torch.float64)
    vocab = len(padded.tokenizer)
    padded.model.resize_token_embeddings(vocab + 6)
    prompts = _ids(tiny64, PROMPTS[:2])
    with pytest.warns(UserWarning, match=f"cut to the tokenizer's {vocab} tokens"):
        rows = decode([tiny64, padded], [prompts, prompts], MixtureStep((0.5, 0.5)), max_new_tokens=5,
                      stream_models=[0, 1], eos_token_ids=[], return_logprobs=True)
    assert all(t < vocab for r in rows for t in r.token_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one model: nothing is cut, nothing said
        decode(padded, [prompts], get_decoder("greedy"), max_new_tokens=2)


def test_one_hot_soft_input_equals_the_token_under_a_scaling_embedding_layer():
    """Gemma-style layers scale token embeddings inside the layer; soft inputs get the same scale."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextScaledWordEmbedding

    class OneHot:
        name, num_streams = "one-hot", 1

        def step(self, logprobs, rngs):
            ids = logprobs[0].argmax(-1)
            return Step(token_ids=ids, soft_weights=torch.nn.functional.one_hot(ids, logprobs.shape[-1]).float())

    m = tiny_model(seed=2)
    plain = m.model.model.embed_tokens
    scaled = Gemma3TextScaledWordEmbedding(plain.num_embeddings, plain.embedding_dim, plain.padding_idx, 3.0)
    scaled.weight = plain.weight
    m.model.model.embed_tokens = scaled
    prompts = [_ids(m, PROMPTS[:2])]
    soft = decode(m, prompts, OneHot(), max_new_tokens=15, eos_token_ids=[])
    hard = decode(m, prompts, get_decoder("greedy"), max_new_tokens=15, eos_token_ids=[])
    assert [r.token_ids for r in soft] == [r.token_ids for r in hard]
