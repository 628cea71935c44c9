"""Token texts saved with a record's steps (`harness.methods.base.token_texts`) and what the
report's token view makes of a record's steps (`harness.analysis.token_view`)."""

from __future__ import annotations

import json
import math

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from harness.analysis.token_view import NO_TOKEN_TEXTS, STEP_STATISTICS, token_view
from harness.engine.token_texts import _prefix_pieces, token_texts
from tests.tiny import tiny_tokenizer

CORPUS = ["The answer is 42. Ünïcödé text, 数学 and ✓ marks; x <= y & z.", "Step 1: 12 + 30 = 42 ✓"] * 20
TEXT = "Step 7: Ünïcödé ✓ 数学 42 + 1 = 43.\n\n<answer>43</answer> naïve café"


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2 style byte-level BPE, trained here: characters outside its merges are split
    into byte tokens, so one character can take several tokens."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>")


def metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE ("▁" for spaces, the first one dropped when decoding)."""
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace()
    core.decoder = decoders.Metaspace()
    core.train_from_iterator(CORPUS + [TEXT], trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("make", [byte_level_tokenizer, metaspace_tokenizer, tiny_tokenizer])
def test_token_texts_concatenate_to_the_decoded_completion(make):
    tok = make()
    ids = tok.encode(TEXT, add_special_tokens=False) + [tok.eos_token_id]
    completion = tok.decode(ids, skip_special_tokens=True)
    pieces = token_texts(tok, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == completion
    assert pieces[-1] == ""  # EOS adds no text
    assert not any("\ufffd" in piece for piece in pieces)  # a split character goes whole to its last token
    assert pieces == _prefix_pieces(tok, ids)  # the windowed decode agrees with decoding every prefix


def test_a_character_split_over_byte_tokens_goes_to_the_token_that_completes_it():
    tok = byte_level_tokenizer()
    ids = tok.encode("é", add_special_tokens=False) + tok.encode("\U0001f600", add_special_tokens=False)
    pieces = token_texts(tok, ids)
    assert len(ids) > 2 and "".join(pieces) == "é\U0001f600"
    assert [p for p in pieces if p] == ["é", "\U0001f600"]


def test_a_row_cut_inside_a_character_keeps_the_partial_character_in_its_last_token():
    tok = byte_level_tokenizer()
    ids = tok.encode("ok \U0001f600", add_special_tokens=False)[:-1]  # the emoji's last byte never came
    completion = tok.decode(ids, skip_special_tokens=True)
    pieces = token_texts(tok, ids)
    assert completion.endswith("\ufffd") and "".join(pieces) == completion


def test_a_completion_cut_after_a_stop_string_cuts_the_last_pieces():
    tok = tiny_tokenizer()
    ids = tok.encode("x</answer>tail", add_special_tokens=False)
    pieces = token_texts(tok, ids, "x</answer>")
    assert len(pieces) == len(ids) and "".join(pieces) == "x</answer>"
    assert pieces[-4:] == ["", "", "", ""]


class _ShoutingTokenizer:
    """A tokenizer whose decode reads the whole text: a leading "!" makes everything after it
    upper case, further back than the windowed decode looks."""

    vocab = ["!", "a", "b", " "]

    def decode(self, ids, skip_special_tokens=True):
        text = "".join(self.vocab[i] for i in ids)
        return text[:1] + text[1:].upper() if text.startswith("!") else text


def test_a_tokenizer_that_looks_far_back_falls_back_to_decoding_every_prefix():
    ids = [0] + [1, 3, 2, 3] * 5  # "!a b a b ..."
    pieces = token_texts(_ShoutingTokenizer(), ids)
    assert "".join(pieces) == "!" + "A B " * 5
    assert pieces[-4:] == ["A", " ", "B", " "]


def _steps(n: int, **stats) -> dict:
    return {"token_ids": list(range(n)), "token_texts": [f"t{i} " for i in range(n)], **stats}


def test_token_view_offers_the_statistics_the_record_has_in_their_order():
    view = token_view(_steps(3, logprob=[-1.0, -2.0, -0.5], js_p1_p2=[0.1, 0.2, 0.3],
                             log_ratio_p1_p2=[0.5, -0.5, 0.0], kl_mix_p1=[0.0, 0.0, 0.0]), 1000)
    assert [s["name"] for s in view["stats"]] == ["log_ratio_p1_p2", "js_p1_p2", "logprob"]
    assert view["stats"][0]["diverging"] and view["stats"][0]["values"] == [0.5, -0.5, 0.0]
    assert view["texts"] == ["t0 ", "t1 ", "t2 "] and view["ids"] == [0, 1, 2]
    assert view["shown"] == view["total"] == 3


def test_token_view_of_soft_steps_leaves_steps_without_a_value_unshaded():
    view = token_view(_steps(3, entropy=[1.0, 0.5, 0.0], effective_tokens=[2.5, math.nan, None],
                             soft=[1.0, 0.0, 0.0]), 1000)
    assert [s["name"] for s in view["stats"]] == ["entropy", "effective_tokens"]
    effective = view["stats"][1]
    assert effective["values"] == [2.5, None, None] and effective["centre"] == 1.0


def test_token_view_cuts_texts_and_values_at_the_same_token():
    n = 50
    view = token_view(_steps(n, logprob=[-i / n for i in range(n)]), 4 * 10 + 3)  # texts of 3-4 characters
    shown = view["shown"]
    assert shown < view["total"] == n
    assert len("".join(view["texts"])) <= 43 < len("".join(f"t{i} " for i in range(shown + 1)))
    assert len(view["ids"]) == len(view["stats"][0]["values"]) == shown
    assert view["stats"][0]["values"][-1] == -(shown - 1) / n and view["texts"][-1] == f"t{shown - 1} "


def test_token_view_of_records_without_token_texts_or_steps():
    assert token_view(None, 100) is None and token_view(math.nan, 100) is None  # no steps (NaN: a table's gap)
    assert token_view({"token_ids": [1, 2], "logprob": [-1.0, -1.0]}, 100) == {"unavailable": NO_TOKEN_TEXTS}


def test_token_view_leaves_out_values_that_cannot_be_matched_to_tokens_or_shown():
    view = token_view(_steps(3, logprob=[-1.0, -2.0], js_p1_p2=[math.inf, 0.1, -math.inf],
                             entropy=[None, None, None]), 1000)
    assert [s["name"] for s in view["stats"]] == ["js_p1_p2"]  # logprob: 2 values for 3 tokens
    assert view["stats"][0]["values"] == [None, 0.1, None]  # JSON has no infinities


def test_every_step_statistic_says_what_its_colours_mean():
    for stat in STEP_STATISTICS:
        assert stat.above or stat.below, stat.name
        if stat.diverging:
            assert stat.above and stat.below, stat.name


def test_token_view_values_keep_four_significant_digits():
    view = token_view(_steps(2, logprob=[-0.123456789, -12345.678]), 1000)
    assert view["stats"][0]["values"] == [-0.1235, -12350.0]


def test_the_report_page_carries_each_records_token_view_as_escaped_data(tmp_path):
    from harness.analysis.report import write_report
    from tests.helpers.report_folders import synthetic_records, write_sweep_folder

    records = synthetic_records(problems=2)
    texts = ["<b>x</b>", " &amp; ", "</script><script>window.__pwned = 1</script>"]
    records[0]["steps"] = {"token_ids": [5, 6, 7], "token_texts": texts, "logprob": [-0.5, -1.0, -2.0]}
    records[1]["steps"] = {"token_ids": [5, 6, 7], "logprob": [-0.5, -1.0, -2.0]}
    folder = write_sweep_folder(tmp_path / "sweep", records)
    html = write_report(folder).html.read_text()
    assert "<b>x</b>" not in html and "window.__pwned = 1</script>" not in html
    data = html.split('<script type="application/json" id="samples-data">', 1)[1].split("</script>", 1)[0]
    samples = {s["key"]: s for s in json.loads(data)}
    first = samples[records[0]["key"]]["tokens"]
    assert first["texts"] == texts and first["stats"][0]["values"] == [-0.5, -1.0, -2.0]
    assert samples[records[1]["key"]]["tokens"] == {"unavailable": NO_TOKEN_TEXTS}
    assert samples[records[2]["key"]]["tokens"] is None
