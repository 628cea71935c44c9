"""Turn conversation turns into the exact text and token ids fed to a model."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from transformers import PreTrainedTokenizerBase

# Extra variables for the chat template (`--chat-template-option`, a sweep's `chat_template_options`),
# e.g. {"enable_thinking": False} for Qwen3: every `render_chat` inside `chat_template_options(...)`
# passes them to `apply_chat_template`. A context rather than an argument, so every method's prompts
# (its own stages included) render alike without each method passing them on.
_OPTIONS: ContextVar[Mapping[str, Any] | None] = ContextVar("chat_template_options", default=None)


@contextmanager
def chat_template_options(options: Mapping[str, Any] | None) -> Iterator[None]:
    """Render every chat inside the block with `options` passed to the chat template."""
    token = _OPTIONS.set(dict(options) if options else None)
    try:
        yield
    finally:
        _OPTIONS.reset(token)


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """Messages -> prompt text ending where the assistant's next turn begins.

    Uses the tokenizer's chat template when it has one, with the chat template options in
    force (`chat_template_options`); otherwise a plain "User: ...\\nAssistant:" transcript,
    so base models work too.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             **(_OPTIONS.get() or {}))
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of rendered prompt text.

    A chat template already writes its special tokens, so none are added then;
    plain prompts get the tokenizer's usual ones (e.g. BOS).
    """
    add_special = not getattr(tokenizer, "chat_template", None)
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def parse_chat_template_options(items: list[str] | None, flag: str = "--chat-template-option") -> dict[str, Any] | None:
    """['enable_thinking=false'] -> {'enable_thinking': False}: each value read as a JSON literal
    (true, false, null, numbers, quoted strings), else taken as the plain string. None: none given.

    Raises:
        ValueError: an item that is not KEY=VALUE, a key that is not a name, or a key given twice.
    """
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"{flag} {item!r} is not KEY=VALUE with a name as KEY; write e.g. "
                             f"{flag} enable_thinking=false")
        try:
            value = json.loads(text)
        except ValueError:
            value = text.strip()
        if key in options and options[key] != value:
            raise ValueError(f"{flag} gives {key} twice ({key}={options[key]!r} and {key}={value!r}); give it once")
        options[key] = value
    return options or None


def check_chat_template_options(options: Mapping[str, Any] | None, path: str = "chat_template_options") -> None:
    """Refuse options that are not a mapping of names to JSON scalars (what a template can read)."""
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise ValueError(f"{path} (={options!r}) must be a mapping of template variables, e.g. "
                         "{enable_thinking: false}")
    for key, value in options.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"{path} key {key!r} must be a name, e.g. enable_thinking")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError(f"{path}.{key} (={value!r}) must be true, false, a number or a string")


def unread_chat_template_options(tokenizer: PreTrainedTokenizerBase, options: Mapping[str, Any] | None) -> list[str]:
    """The option names `tokenizer`'s chat template never mentions (so they change nothing),
    all of them where it has no template."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # templates by name
        template = " ".join(template.values())
    return [key for key in (options or {}) if key not in template]
