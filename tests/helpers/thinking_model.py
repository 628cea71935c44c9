"""A tiny thinking model: `tests.tiny`'s character-level tokenizer with `<think>` and `</think>` as
one token each (added, not special: decoding keeps them, as Qwen3's and DeepSeek-R1's tokenizers
do), a chat template that reads `enable_thinking`, and a random 2-layer Llama over that vocabulary
that never writes either marker of itself.

The template, like DeepSeek-R1's and QwQ's, opens `<think>` in the generation prompt (so every row
thinks from its first token), and with `enable_thinking=false` writes an empty, closed
`<think></think>` there instead, as Qwen3's does. Like theirs, it leaves the thinking out of earlier
assistant turns (the text up to their `</think>`)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.engine.models import LoadedModel
from tests.tiny import tiny_tokenizer

THINKING_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: "
    "{% if m['role'] == 'assistant' %}{{ m['content'].split('</think>')[-1].lstrip() }}"
    "{% else %}{{ m['content'] }}{% endif %}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: "
    "{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% else %}<think>{% endif %}"
    "{% endif %}"
)


def thinking_tokenizer():
    """`tests.tiny.tiny_tokenizer` with `<think>` and `</think>` as single tokens and `THINKING_TEMPLATE`."""
    tok = tiny_tokenizer()
    tok.add_tokens(["<think>", "</think>"])  # not special: decoded text keeps them
    tok.chat_template = THINKING_TEMPLATE
    return tok


def thinking_model(seed: int = 0, init_std: float = 0.3) -> LoadedModel:
    """A random 2-layer Llama over `thinking_tokenizer()`'s vocabulary, in float32 on the CPU."""
    tok = thinking_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, initializer_range=init_std,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    # A random model would write the markers now and then; a thinking model writes them where it
    # means to. This one never does of itself: only what forces them (a budget, a test) puts them in.
    head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tok.convert_tokens_to_ids(["<think>", "</think>"])] = -30.0
    model.lm_head = head
    model.config.tie_word_embeddings = False
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedModel(name="tiny-thinking", model=model, tokenizer=tok, source="in-process", dtype="float32",
                       device="cpu", load_s=0.0, batch_invariant=True)
