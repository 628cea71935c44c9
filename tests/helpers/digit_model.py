"""A tiny model with a planted pattern: it answers with the one digit its conversation holds,
and "?" when it holds none.

Trained in-process (300 steps of the 2-layer tiny model, seeded, one thread; 100% on held-out chats) on chats
of one, three or five turns of digit-free words where at most one digit (repeated or not)
appears in a user turn. So a first attempt at "What is two plus three?" is "?", and a redo
after the feedback "No, it is 5." is "5": a redo that follows the feedback shows it.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

import torch

from harness.engine.prompts import encode, render_chat
from tests.tiny import tiny_model

UNKNOWN = "?"
_LETTERS = string.ascii_letters
LR = 1e-2


def _words(rng: random.Random, digit: str | None) -> str:
    words = [rng.choice("+-=?.,") if rng.random() < 0.1 else
             "".join(rng.choice(_LETTERS) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 4))]
    if digit is not None:
        words.insert(rng.randint(0, len(words)), digit)
    text = " ".join(words) + (rng.choice(".?!") if rng.random() < 0.5 else "")
    # A turn of two paragraphs, as ReDuMix's feedback turn (feedback, then the reflect prompt) is.
    return text + "\n\n" + _words(rng, None) if rng.random() < 0.2 else text


def _example(rng: random.Random, tokenizer) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): a chat with at most one digit, and that digit (or "?") then EOS."""
    turns = rng.choice([1, 3, 5])
    digit = str(rng.randint(0, 9)) if rng.random() < 0.6 else None
    holder = rng.randrange(0, turns, 2)  # a user turn
    chat = [{"role": "user" if i % 2 == 0 else "assistant",
             "content": _words(rng, digit if i == holder else None)} for i in range(turns)]
    answer = tokenizer(digit or UNKNOWN, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return encode(tokenizer, render_chat(tokenizer, chat)), answer


def train_digit_model(folder: Path, steps: int = 300, batch: int = 32, seed: int = 1) -> Path:
    """Train the pattern into the tiny model and save it (model and tokenizer) in `folder`."""
    loaded = tiny_model(seed=seed, init_std=0.02)
    model, tok = loaded.model, loaded.tokenizer
    rng = random.Random(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    try:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=LR)
        for _ in range(steps):
            examples = [_example(rng, tok) for _ in range(batch)]
            width = max(len(p) + len(a) for p, a in examples)
            ids = torch.full((batch, width), tok.pad_token_id)
            labels = torch.full((batch, width), -100)
            mask = torch.zeros((batch, width), dtype=torch.long)
            for b, (prompt, answer) in enumerate(examples):
                row = prompt + answer
                ids[b, : len(row)] = torch.tensor(row)
                mask[b, : len(row)] = 1
                labels[b, len(prompt) : len(row)] = torch.tensor(answer)  # the answer alone is learnt
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
