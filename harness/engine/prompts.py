"""Turn conversation turns into the exact text and token ids fed to a model."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """Messages -> prompt text ending where the assistant's next turn begins.

    Uses the tokenizer's chat template when it has one; otherwise a plain
    "User: ...\\nAssistant:" transcript, so base models work too.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of rendered prompt text.

    A chat template already writes its special tokens, so none are added then;
    plain prompts get the tokenizer's usual ones (e.g. BOS).
    """
    add_special = not getattr(tokenizer, "chat_template", None)
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]
