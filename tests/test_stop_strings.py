"""Stop strings found on a decoded tail window give what the full text gives."""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from decoders import get_decoder
from harness.engine.lockstep import decode
from harness.engine.row_end import TAIL_MARGIN, end_of_row
from tests.tiny import tiny_model, tiny_tokenizer

ALPHABET = "ab .?\n答案🙂é"
CORPUS = ["The answer is 42. Question: what is the answer?\n\n", "Let's think step by step. So x = 7, y = -3."]


def _reference(ids, eos, stop_strings, tokenizer, max_new_tokens):
    """The rule before the tail window: search the whole decoded row every step."""
    if ids[-1] in eos:
        return "eos", None, None
    if stop_strings:
        text = tokenizer.decode(ids, skip_special_tokens=True)
        hits = [(text.find(s) + len(s), s) for s in stop_strings if s in text]
        if hits:
            end, stop = min(hits)
            return "stop", stop, text[:end]
    if len(ids) >= max_new_tokens:
        return "length", None, None
    return None


def _assert_same_walk(ids, stops, tokenizer, eos=frozenset()):
    """Feed `ids` one token at a time, as the engine does, until the reference ends the row."""
    for n in range(1, len(ids) + 1):
        want = _reference(ids[:n], eos, stops, tokenizer, len(ids))
        assert end_of_row(ids[:n], eos, stops, tokenizer, len(ids)) == want, (n, ids, stops)
        if want is not None:
            return want
    raise AssertionError("the reference always ends the row by max_new_tokens")


@functools.cache
def byte_level_tokenizer(cleanup: bool = False) -> PreTrainedTokenizerFast:
    """GPT-2 style byte-level BPE trained on English only, so other scripts and emoji
    come out one byte per token."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<pad>", "</s>"], show_progress=False,
    )
    core.train_from_iterator(CORPUS * 5, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", clean_up_tokenization_spaces=cleanup
    )


@functools.cache
def sentencepiece_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-2 style decoding: "▁" pieces, <0xNN> byte fallback, the first space stripped,
    and transformers' clean-up of spaces before punctuation."""
    pieces = ["▁", "▁the", "▁answer", "▁is", "▁Question", ":", ".", "?", "'s", "4", "2", "an", "s", "wer", "\n"]
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", clean_up_tokenization_spaces=True
    )


def _tiny_pool():
    # Few characters, so random rows hit random stop strings often; specials decode to "".
    tok = tiny_tokenizer()
    return tok, [tok.convert_tokens_to_ids(c) for c in "ab .\n"] + [0, 1]


TOKENIZERS = {
    "char": _tiny_pool,
    "byte-level": lambda: (byte_level_tokenizer(), list(range(len(byte_level_tokenizer())))),
    "byte-level+cleanup": lambda: (byte_level_tokenizer(True), list(range(len(byte_level_tokenizer(True))))),
    "sentencepiece": lambda: (sentencepiece_tokenizer(), list(range(len(sentencepiece_tokenizer())))),
}


@pytest.mark.parametrize("name", list(TOKENIZERS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_tail_window_matches_full_text(name, data):
    tokenizer, pool = TOKENIZERS[name]()
    tokens = st.lists(st.sampled_from(pool), min_size=1, max_size=80)
    # Encoded text splits multi-byte characters over tokens the way models emit them.
    encoded = st.text(alphabet=ALPHABET, min_size=1, max_size=40).map(tokenizer.encode).filter(bool)
    ids = data.draw(st.one_of(tokens, encoded, st.tuples(encoded, tokens).map(lambda p: p[0] + p[1])), label="ids")
    text = tokenizer.decode(ids, skip_special_tokens=True)
    stops = []
    for _ in range(data.draw(st.integers(1, 3), label="stops")):
        if text and data.draw(st.booleans()):
            # A piece of the row's own text, so rows do end on stop strings.
            start = data.draw(st.integers(0, len(text) - 1))
            stops.append(text[start : data.draw(st.integers(start + 1, min(len(text), start + 14)))])
        else:
            stops.append(data.draw(st.text(alphabet=ALPHABET + "\ufffd", min_size=1, max_size=6)))
    _assert_same_walk(ids, stops, tokenizer, eos=frozenset({tokenizer.eos_token_id}))


def test_stop_string_split_over_byte_tokens_ends_on_its_last_byte():
    tok = byte_level_tokenizer()
    ids = tok.encode("Let's think. 答案：42 and more text after it")
    stop = "答案："  # nine one-byte tokens here
    last_byte = len(tok.encode("Let's think. 答案："))
    assert all(tok.decode(ids[:n]).count(stop) == 0 for n in range(1, last_byte))
    ended = _assert_same_walk(ids, [stop, "zzz"], tok)
    assert ended == ("stop", stop, "Let's think. 答案：")
    assert end_of_row(ids[:last_byte], set(), [stop], tok, 100) == ended


def test_long_stop_string_ends_an_engine_row_where_the_full_text_does():
    # The tiny tokenizer is character-level: a 12-character stop spans 12 tokens, far into the row.
    tiny = tiny_model()
    prompt = [tiny.tokenizer("What is 2+3?")["input_ids"]]
    free = decode(tiny, [prompt], get_decoder("greedy"), max_new_tokens=60, eos_token_ids=[])[0]
    assert len(free.text) >= 45
    stop = free.text[30:42]
    cut = decode(
        tiny, [prompt], get_decoder("greedy"), max_new_tokens=60, eos_token_ids=[], stop_strings=["~~", stop]
    )[0]
    end = free.text.find(stop) + len(stop)
    assert (cut.finish_reason, cut.stop, cut.text) == ("stop", stop, free.text[:end])
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)]
    assert stop not in tiny.tokenizer.decode(cut.token_ids[:-1], skip_special_tokens=True)


class _CountingTokenizer:
    def __init__(self, tokenizer):
        self.tokenizer, self.sizes = tokenizer, []

    def decode(self, ids, **kwargs):
        self.sizes.append(len(ids))
        return self.tokenizer.decode(ids, **kwargs)


def test_stop_check_decodes_a_bounded_window_not_the_row():
    tok = _CountingTokenizer(tiny_tokenizer())
    ids = tiny_tokenizer().encode("abc " * 150)
    for n in range(1, len(ids) + 1):
        assert end_of_row(ids[:n], set(), ["zzzz", "qq"], tok, 10_000) is None
    assert max(tok.sizes) == len("zzzz") + TAIL_MARGIN + 1


def test_window_grows_over_tokens_that_decode_to_nothing():
    # Skipped special tokens add no text: the window must reach back past them.
    tok = tiny_tokenizer()
    ids = tok.encode("stop") + [tok.pad_token_id] * 40 + tok.encode("x")
    assert _assert_same_walk(ids, ["stopx"], tok) == ("stop", "stopx", "stopx")


@pytest.mark.integration
def test_tail_window_matches_full_text_on_smollm2():
    from harness.engine.models import embedded_model_path, load_model

    try:
        embedded_model_path("smollm2-135m")
    except ValueError as err:
        pytest.skip(str(err))
    tok = load_model("smollm2-135m").tokenizer
    rng = random.Random(0)
    texts = [*CORPUS, "答案：四十二 🙂👍🏽 naïve café — “quoted” …\n\n", "def f(x):\n    return x ** 2  # ok\n"]
    vocab = len(tok)
    for trial in range(300):
        if trial % 2:
            ids = rng.choices(range(vocab), k=rng.randint(1, 100))
        else:
            # Real text with random tokens spliced in, so stop strings of real words occur.
            ids = tok.encode(rng.choice(texts) + rng.choice(texts))
            for _ in range(rng.randint(0, 5)):
                ids.insert(rng.randint(0, len(ids)), rng.randrange(vocab))
        # Stop strings late in the row or absent from it, so most steps search a window.
        text = tok.decode(ids, skip_special_tokens=True)
        start = rng.randrange(len(text) // 2, len(text)) if text else 0
        late = text[start : start + rng.randint(1, 12)] if trial % 3 else ""
        stops = [late or "never said", rng.choice(["👍🏽 na", "四十二", "x ** 2", "é"])]
        _assert_same_walk(ids, stops, tok, eos=frozenset({tok.eos_token_id}))
