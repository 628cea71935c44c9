"""Entropy along the thinking of models' rollouts: `redumix train entropy CONFIG MODEL... --out DIR`.

Each model decodes the config's held-out problems (its `eval.seeds`) with the config's
rollout (discrete: sampled tokens; mixture: the config's soft decoder, as in training), one
seeded generator per row, so every model meets the same problems with the same seeds. One
forward pass over each prompt and completion, fed exactly as the rollout fed it (tokens, or
`weights @ E` at soft steps), then gives per completion step t, at the position where step
t's input was fed:

- `hidden_entropy`: the energy entropy of the last layer's hidden state (`hidden_entropy.energy_entropy`);
- `token_entropy`: the entropy of the next-token distribution at the rollout's temperature;
- `effective_tokens`: how many tokens step t's input fed in effect (1 for a token).

A step belongs to the thinking when it starts before the end-of-thinking marker in the
completion's text (`</think>` where the tokenizer has it as one token, else `<answer>`).
Written: `thinking_entropy.csv` (one row per step), `thinking_entropy.png` (the means over
the rows still thinking, against the thinking position, one line per model).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.analysis.figure_bytes import png_bytes
from harness.train.hidden_entropy import (
    effective_tokens,
    energy_entropy,
    next_token_entropy,
    position_means,
    thinking_steps,
)

CSV_FILE, FIGURE_FILE = "thinking_entropy.csv", "thinking_entropy.png"
COLUMNS = ("model", "problem", "step", "thinking", "soft", "hidden_entropy", "token_entropy", "effective_tokens")
QUANTITIES = (("hidden_entropy", "hidden-state energy entropy (nats)"),
              ("token_entropy", "next-token entropy (nats)"),
              ("effective_tokens", "effective tokens fed per step"))


@dataclass(frozen=True)
class ProbedModel:
    label: str
    source: str  # what `load_model` was given


def rollout_rows(loaded, config, problems, seed: int) -> list[dict]:
    """Decode `problems` with `config.rollout` on `loaded` and measure every completion step (see the module)."""
    from harness.engine.prompts import encode, render_chat
    from harness.train.soft_rollout import row_generators

    tokenizer = loaded.tokenizer
    prompts = [encode(tokenizer, render_chat(tokenizer, [{"role": "user", "content": p.user_prompt}]))
               for p in problems]
    rngs = row_generators(seed, 0, len(prompts))
    completions, soft = _decode(loaded, config.rollout, prompts, rngs)
    marker = _marker(tokenizer)
    rows = []
    model = loaded.model
    for i, (problem, prompt, completion) in enumerate(zip(problems, prompts, completions, strict=True)):
        if not completion:
            continue
        row_soft = {k: v[i:i + 1, :len(completion)] for k, v in soft.items()} if soft is not None else None
        with torch.no_grad():
            hidden, logits = _forward(model, prompt, completion, row_soft)
        start = len(prompt)  # the position where completion step 0's input was fed
        h = energy_entropy(hidden[start:start + len(completion)])
        e = next_token_entropy(logits[start:start + len(completion)], config.rollout.temperature)
        fed = row_soft["soft_fed"][0] if row_soft is not None else torch.zeros(len(completion), dtype=torch.bool)
        eff = (effective_tokens(row_soft["soft_weights"][0]) if row_soft is not None
               else torch.ones(len(completion)))
        thinking = thinking_steps(_step_texts(tokenizer, completion), marker)
        for t in range(len(completion)):
            rows.append({"problem": problem.key, "step": t, "thinking": t < thinking, "soft": bool(fed[t]),
                         "hidden_entropy": round(float(h[t]), 6), "token_entropy": round(float(e[t]), 6),
                         "effective_tokens": round(float(eff[t]) if bool(fed[t]) else 1.0, 6)})
    return rows


def probe_models(config, models: list[ProbedModel], n: int, seed: int) -> list[dict]:
    """`rollout_rows` of every model on the first `n` held-out problems of `config`, labelled."""
    from harness.engine.models import load_model
    from harness.train.problems import evaluation_problems

    problems = evaluation_problems(config)[:n]
    if not problems:
        raise ValueError("CONFIG has no held-out problems: give it eval.seeds (e.g. eval: {seeds: [100]})")
    out = []
    for probed in models:
        loaded = load_model(probed.source, config.dtype, config.device, batch_invariant=False)
        out.extend({"model": probed.label} | row for row in rollout_rows(loaded, config, problems, seed))
    return out


def rows_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def thinking_means(rows: list[dict], key: str, min_rows: int) -> dict[str, list[tuple[int, float, int]]]:
    """Per model: `position_means` of `key` over its rows' thinking steps."""
    by_model: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row["thinking"]:
            by_model.setdefault(row["model"], {}).setdefault(row["problem"], []).append(float(row[key]))
    return {model: position_means(list(problems.values()), min_rows) for model, problems in by_model.items()}


def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per model: the mean of each quantity over every thinking step, and the thinking steps counted."""
    out: dict[str, dict[str, float]] = {}
    for model in dict.fromkeys(row["model"] for row in rows):
        steps = [row for row in rows if row["model"] == model and row["thinking"]]
        out[model] = {key: (sum(r[key] for r in steps) / len(steps) if steps else math.nan) for key, _ in QUANTITIES}
        out[model]["thinking_steps"] = len(steps)
    return out


def entropy_png(rows: list[dict], title: str, min_rows: int = 3) -> bytes:
    """The quantities' means against the thinking position, one line per model, one panel each
    (positions fewer than `min_rows` rows reach are left out)."""
    figure = Figure(figsize=(4.2 * len(QUANTITIES), 3.6), dpi=100)
    FigureCanvasAgg(figure)
    for i, (key, heading) in enumerate(QUANTITIES):
        ax = figure.add_subplot(1, len(QUANTITIES), i + 1)
        for n, (model, points) in enumerate(thinking_means(rows, key, min_rows).items()):
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", color=f"C{n}", label=model)
        ax.set_title(heading, fontsize=10)
        ax.set_xlabel("thinking position (step)")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel(f"mean over rows still thinking (>= {min_rows})")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    return png_bytes(figure)


def write_probe(rows: list[dict], out: str | Path, title: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CSV_FILE).write_text(rows_csv(rows))
    (out / FIGURE_FILE).write_bytes(entropy_png(rows, title))
    return out


def parse_model(text: str) -> ProbedModel:
    """`LABEL=MODEL` or `MODEL` (labelled by its folder's or its own name)."""
    label, sep, source = text.partition("=")
    if sep and label and source:
        return ProbedModel(label, source)
    if sep:
        raise ValueError(f"MODEL {text!r}: write LABEL=MODEL (e.g. base=smollm2-135m) or just MODEL")
    return ProbedModel(Path(text).name or text, text)


def _decode(loaded, rollout, prompts, rngs):
    """Completion ids per row, and the (rows, T, K) soft records of a mixture rollout (None for discrete)."""
    if rollout.kind == "mixture":
        from harness.train.soft_rollout import rollout_decoder, soft_rollout

        decoder = rollout_decoder(rollout.decoder, rollout.decoder_config, loaded.tokenizer)
        record = soft_rollout(loaded, decoder, prompts, rollout.max_new_tokens, rngs)
        length = max((len(ids) for ids in record.completion_ids), default=0)
        return record.completion_ids, record.padded(length, decoder.max_topk)
    from decoders import get_decoder
    from harness.engine.lockstep import decode

    decoder = get_decoder("sample", temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k)
    results = decode(loaded, [prompts], decoder, max_new_tokens=rollout.max_new_tokens, rngs=rngs)
    return [r.token_ids for r in results], None


def _forward(model, prompt: list[int], completion: list[int], soft):
    """(L, H) last-layer hidden states and (L, V) logits of prompt + completion, fed as the rollout fed it."""
    from harness.train.mixture_trainer import soft_input_embeddings

    device = next(model.parameters()).device
    ids = torch.tensor([prompt + completion], device=device)
    embeds = soft_input_embeddings(model, ids, soft)
    out = model(inputs_embeds=embeds, output_hidden_states=True, use_cache=False)
    return out.hidden_states[-1][0], out.logits[0]


def _step_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each step's share of the completion's text (cumulative decoding, so multi-token characters hold)."""
    texts, before = [], ""
    for t in range(len(ids)):
        now = tokenizer.decode(ids[:t + 1])
        texts.append(now[len(before):] if now.startswith(before) else now)
        before = now
    return texts


def _marker(tokenizer) -> str:
    from decoders.thinking import ANSWER_MARKER, THINK_MARKER, has_think_marker

    return THINK_MARKER if has_think_marker(tokenizer) else ANSWER_MARKER
