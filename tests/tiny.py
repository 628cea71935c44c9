"""A tiny random-weight Llama model and a character-level tokenizer, built in-process."""

from __future__ import annotations

import string

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.engine.models import LoadedModel

SPECIALS = ["<pad>", "<s>", "</s>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"


def tiny_tokenizer(chars: str = CHARS) -> PreTrainedTokenizerFast:
    """One token per character of `chars` (ids in that order, after the special tokens)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(chars))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tok.add_special_tokens({"additional_special_tokens": []})
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def tiny_model(
    seed: int = 0, dtype: torch.dtype = torch.float32, init_std: float = 0.3, chars: str = CHARS,
    batch_invariant: bool = True,
) -> LoadedModel:
    """A 2-layer Llama over `tiny_tokenizer(chars)`'s vocabulary; `init_std` sets how peaked it is."""
    tok = tiny_tokenizer(chars)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=init_std,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedModel(
        name="tiny", model=model, tokenizer=tok, source="in-process", dtype=str(dtype).removeprefix("torch."),
        device="cpu", load_s=0.0, batch_invariant=batch_invariant,
    )
