"""The four ReDuMix stages on top of the engine, for one batch of problems.

1. first attempt y1: decoding of x, the env's user prompt (greedy unless the decoder
   asks to sample it);
2. feedback r on y1 under the decoder's feedback policy;
3. reflection c: greedy decoding of [user x, assistant y1, user r + reflect prompt];
4. dual-context mixture decoding of x and x2 = [... , assistant c, user redo prompt]
   with weights (lam, 1 - lam): both contexts of every (problem, lam) row in one batch.

Stages 1-3 do not depend on lam, so they run once per problem and are shared by
every lam of a sweep (see `Stage13Cache`). A problem given a first attempt and a person's
feedback on it (`given`, a conversation sent to the server) skips stages 1-2: the reflection
and the mixture start from those.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from decoders import get_decoder
from decoders.redumix import compress
from decoders.redumix.config import ReDuMix
from decoders.sampling import row_generator
from envs.answer import THINK_CLOSE, THINK_OPEN, split_thinking, with_open_thinking
from envs.base import Problem, Verdict
from harness.engine import lockstep
from harness.engine.models import LoadedModel, context_window
from harness.engine.prompts import encode, render_chat
from harness.engine.token_stream import answer_rows
from harness.methods.base import answer_key, is_deterministic, step_tokens, variant_key
from harness.methods.mixture_stats import STAT_NAMES, MixtureStats  # noqa: F401 (STAT_NAMES: importable here)
from harness.methods.request_env import HumanFeedback


@dataclass(frozen=True)
class Stage13:
    """What stages 1-3 produced for one problem (independent of lam)."""

    x: str  # rendered original context
    stage1_completion: str
    stage1_answer: str | None
    stage1_correct: bool
    feedback: str
    reflection: str
    x2: str  # rendered reflective context
    stage1_s: float
    feedback_s: float
    reflection_s: float
    compressed: bool = False  # the earliest part of y1 was summarised to fit the budget
    tokens_cut: int = 0  # tokens of y1 replaced by the summary
    summary: str = ""
    compress_s: float = 0.0
    stage1_reused: bool = False  # y1 is a greedy answer decoded elsewhere; stage1_s is that decode's share
    thinking_summary: str | None = None  # under stage1_thinking=summary, the summary of y1's thinking x2 holds
    human: bool = False  # y1 and the feedback came with the request (a conversation), not from stages 1-2


@dataclass
class Stage13Cache:
    """In-memory stage 1-3 results keyed by (model, env, problem, stage config, policy)."""

    entries: dict[tuple, Stage13] = field(default_factory=dict)
    stage1_calls: int = 0  # problems that went through stage 1 (for tests and logs)
    # Deterministic answers decoded elsewhere (a greedy unit of the same sweep) by answer key,
    # with the seconds each took: a greedy first attempt is exactly that, so it is not decoded again.
    greedy_attempts: dict[tuple, tuple[str, float]] = field(default_factory=dict)



@dataclass(frozen=True)
class MixedAnswer:
    """Stage 4's answer to one problem at one lambda, as the method turns it into an Attempt.

    Attributes:
        problem, lam: what was answered, at which weight of the original context.
        row: the stage-4 engine row (harness.engine.lockstep.RowResult).
        verdict: the env's grade of its text.
        stage: the problem's stages 1-3 (`Stage13`).
        stats: the row's mean per-step mixture statistics (`MixtureStats.means`).
        mix_s: seconds of stage 4 for this answer, batching amortised.
        steps: with `save_steps`, the chosen tokens and every statistic per decoding step.
    """

    problem: Problem
    lam: float
    row: Any
    verdict: Verdict
    stage: Stage13
    stats: dict
    mix_s: float
    steps: dict | None = None

def first_attempt_key(loaded: LoadedModel, user_prompt: str, max_new_tokens: int, stop: Sequence[str],
                      decoder) -> tuple:
    """What a first attempt decoded by `decoder` depends on (the method cache's answer key)."""
    return answer_key(loaded.name, user_prompt, max_new_tokens, stop, decoder)


def stage_key(loaded: LoadedModel, problem: Problem, decoder: ReDuMix, max_new_tokens: int,
              stop: Sequence[str], seed: int = 0, given: HumanFeedback | None = None) -> tuple:
    return (
        loaded.name, problem.env, problem.problem_id, problem.question,
        max_new_tokens, tuple(stop), decoder.reflect_prompt, decoder.redo_prompt,
        decoder.reflection_max_new_tokens, decoder.feedback, decoder.summary_prompt,
        decoder.summary_max_new_tokens, decoder.context_budget, decoder.stage1_thinking,
        # A sampled first attempt depends on the seed; a greedy one does not.
        (decoder.stage1_sampling, seed) if decoder.stage1_sample else None,
    ) + ((given,) if given is not None else ())


def solve_batch(
    env,
    loaded: LoadedModel,
    decoder: ReDuMix,
    problems: Sequence[Problem],
    *,
    max_new_tokens: int,
    stop: Sequence[str],
    seed: int,
    lambdas: Sequence[float] | None = None,
    skip: set[tuple[str, str]] | frozenset = frozenset(),
    cache: Stage13Cache | None = None,
    save_steps: bool = False,
    given: Mapping[str, HumanFeedback] | None = None,
) -> list[MixedAnswer]:
    """Run the pipeline on `problems`; one `MixedAnswer` per (problem, lam) not in `skip`.

    `given`: by problem id, a first attempt and the feedback on it; those problems run stages 3-4
    only (the reflection on that feedback, then the mixture).

    Raises:
        ValueError: a reflective context x2 that, with max_new_tokens, does not fit
            the model's context window (or `decoder.context_budget`).
    """
    cache = cache if cache is not None else Stage13Cache()
    lambdas = list(lambdas) if lambdas is not None else list(decoder.lambdas)
    stages = _stages_1_to_3(env, loaded, decoder, problems, max_new_tokens, stop, cache, seed=seed, given=given)
    for problem, stage in zip(problems, stages, strict=True):
        _check_fits(loaded, decoder, problem, "the reflective context x2", stage.x2, max_new_tokens)

    # The (problem, lam) rows still to do, decoded `lambdas_per_batch` lam values at a time
    # (all at once by default): each row mixes with its own lam.
    todo = [(i, lam) for lam in lambdas for i, p in enumerate(problems)
            if (p.problem_id, variant_key({"lambda": lam})) not in skip]
    group = decoder.lambdas_per_batch or len(lambdas)
    results = []
    for start in range(0, len(lambdas), group):
        chunk = set(lambdas[start : start + group])
        rows = [(i, lam) for i, lam in todo if lam in chunk]
        if rows:
            results += _stage_4(env, loaded, decoder, problems, stages, rows, max_new_tokens, stop, seed, save_steps)
    return results


def _stage_4(env, loaded, decoder, problems, stages, rows, max_new_tokens, stop, seed, save_steps
             ) -> list[MixedAnswer]:
    """One engine call over `rows`, (problem index, lam) pairs, both contexts of each in one batch."""
    lams = torch.tensor([lam for _, lam in rows], dtype=torch.float64)
    mix = dataclasses.replace(decoder.for_lambda(rows[0][1]).mixture(), weights=torch.stack([lams, 1 - lams]))
    contexts = [
        [encode(loaded.tokenizer, stages[i].x) for i, _ in rows],
        [encode(loaded.tokenizer, stages[i].x2) for i, _ in rows],
    ]
    stats = MixtureStats(len(rows), keep_steps=save_steps)
    began = time.perf_counter()
    with answer_rows([problems[i].problem_id for i, _ in rows]):
        outs = lockstep.decode(
            loaded, contexts, mix, max_new_tokens=max_new_tokens, stop_strings=stop,
            rngs=[row_generator(seed, problems[i].problem_id, loaded.device) for i, _ in rows], on_step=stats,
        )
    # Batch wall time split evenly over its rows (rows of one batch share every step).
    mix_s = (time.perf_counter() - began) / len(rows)
    results = []
    for j, ((i, lam), row) in enumerate(zip(rows, outs, strict=True)):
        problem = problems[i]
        results.append(MixedAnswer(
            problem=problem, lam=lam, row=row, verdict=env.verify(problem, with_open_thinking(stages[i].x, row.text)),
            stage=stages[i],
            stats=stats.means(j), mix_s=mix_s,
            steps=step_tokens(row, loaded.tokenizer) | stats.per_step(j) if save_steps else None))
    return results


def first_stages(env, loaded: LoadedModel, decoder: ReDuMix, problems: Sequence[Problem], *, max_new_tokens: int,
                 stop: Sequence[str], cache: Stage13Cache | None = None, seed: int = 0) -> list[Stage13]:
    """Stages 1-3 alone (x and x2 of each problem), for callers that score continuations
    under the mixture instead of decoding stage 4."""
    return _stages_1_to_3(env, loaded, decoder, problems, max_new_tokens, stop,
                          cache if cache is not None else Stage13Cache(), seed=seed)


def _stages_1_to_3(env, loaded, decoder, problems, max_new_tokens, stop, cache, *, seed: int = 0,
                   given: Mapping[str, HumanFeedback] | None = None) -> list[Stage13]:
    given = given or {}
    keys = [stage_key(loaded, p, decoder, max_new_tokens, stop, seed, given.get(p.problem_id)) for p in problems]
    missing = [i for i, k in enumerate(keys) if k not in cache.entries]
    if missing:
        todo = [problems[i] for i in missing]
        greedy = get_decoder("greedy")
        tok = loaded.tokenizer
        # Timings: each stage's batch wall time is split evenly over the batch's rows.
        users = [env.user_prompt(p) for p in todo]
        xs = [render_chat(tok, [{"role": "user", "content": u}]) for u in users]
        human = [given.get(p.problem_id) for p in todo]
        first, stage1_s, reused = _given_or_first_attempts(loaded, decoder, todo, users, xs, human, max_new_tokens,
                                                           stop, cache, seed)

        began = time.perf_counter()
        # Graded on what follows the thinking (a `<think>` the prompt opened included), as every answer is.
        verdicts = [env.verify(p, with_open_thinking(x, y1)) for p, x, y1 in zip(todo, xs, first, strict=True)]
        feedbacks = [h.feedback if h is not None else env.feedback(p, v, decoder.feedback)
                     for p, v, h in zip(todo, verdicts, human, strict=True)]
        feedback_s = (time.perf_counter() - began) / len(todo)

        began = time.perf_counter()
        placed, thinking_summaries = _placed_first_attempts(loaded, decoder, todo, xs, first)
        fitted = _fit_first_attempts(loaded, decoder, todo, users, placed, feedbacks,
                                     max_new_tokens)
        compress_s = (time.perf_counter() - began) / len(todo)

        began = time.perf_counter()
        turns = [
            [{"role": "user", "content": u}, {"role": "assistant", "content": y1},
             {"role": "user", "content": _join(fb, decoder.reflect_turn(u))}]
            for u, (y1, _, _), fb in zip(users, fitted, feedbacks, strict=True)
        ]
        for p, t in zip(todo, turns, strict=True):
            _check_fits(loaded, decoder, p, "the reflection prompt", render_chat(tok, t),
                        decoder.reflection_max_new_tokens, "reflection_max_new_tokens")
        reflections = lockstep.decode(loaded, [[encode(tok, render_chat(tok, t)) for t in turns]], greedy,
                                    max_new_tokens=decoder.reflection_max_new_tokens)
        reflection_s = (time.perf_counter() - began) / len(todo)

        for n, i in enumerate(missing):
            x2 = render_chat(tok, [*turns[n], {"role": "assistant", "content": reflections[n].text},
                                   {"role": "user", "content": decoder.redo_turn(users[n])}])
            _, tokens_cut, summary = fitted[n]
            cache.entries[keys[i]] = Stage13(
                x=xs[n], stage1_completion=first[n], stage1_answer=verdicts[n].answer,
                stage1_correct=verdicts[n].correct, feedback=feedbacks[n], reflection=reflections[n].text,
                x2=x2, stage1_s=stage1_s[n], feedback_s=feedback_s, reflection_s=reflection_s,
                compressed=tokens_cut > 0, tokens_cut=tokens_cut, summary=summary, compress_s=compress_s,
                stage1_reused=reused[n], thinking_summary=thinking_summaries[n], human=human[n] is not None,
            )
    return [cache.entries[k] for k in keys]


def _given_or_first_attempts(loaded, decoder, problems, users, xs, human, max_new_tokens, stop, cache, seed):
    """`_first_attempts` for the problems without a given first attempt; the given ones as they came."""
    texts = [h.first_attempt if h is not None else "" for h in human]
    seconds, reused = [0.0] * len(problems), [False] * len(problems)
    open_rows = [n for n, h in enumerate(human) if h is None]
    if open_rows:
        done = _first_attempts(loaded, decoder, [problems[n] for n in open_rows], [users[n] for n in open_rows],
                               [xs[n] for n in open_rows], max_new_tokens, stop, cache, seed)
        for n, text, took, was_reused in zip(open_rows, *done, strict=True):
            texts[n], seconds[n], reused[n] = text, took, was_reused
    return texts, seconds, reused


def _first_attempts(loaded, decoder, problems, users, xs, max_new_tokens, stop, cache, seed):
    """(y1 texts, seconds each, whether each was reused) for `problems`; greedy ones already
    decoded elsewhere are reused."""
    texts: list[str] = [""] * len(problems)
    seconds = [0.0] * len(problems)
    reused = [False] * len(problems)
    to_decode = []
    first = decoder.first_attempt_decoder()
    for n, user in enumerate(users):
        known = cache.greedy_attempts.get(first_attempt_key(loaded, user, max_new_tokens, stop, first)) \
            if is_deterministic(first) else None
        if known is None:
            to_decode.append(n)
        else:
            texts[n], seconds[n] = known
            reused[n] = True
    if to_decode:
        began = time.perf_counter()
        rows = lockstep.decode(loaded, [[encode(loaded.tokenizer, xs[n]) for n in to_decode]],
                             decoder.first_attempt_decoder(), max_new_tokens=max_new_tokens, stop_strings=stop,
                             rngs=[row_generator(seed, f"{problems[n].problem_id}:stage1", loaded.device)
                                   for n in to_decode])
        share = (time.perf_counter() - began) / len(to_decode)
        for n, row in zip(to_decode, rows, strict=True):
            texts[n], seconds[n] = row.text, share
        cache.stage1_calls += len(to_decode)
    return texts, seconds, reused


def _placed_first_attempts(loaded, decoder, problems, xs, y1s) -> tuple[list[str], list[str | None]]:
    """Per first attempt (y1 as the reflection prompt and x2 hold it, the summary of its thinking
    or None), under `decoder.stage1_thinking`. A first attempt without thinking is placed as it is.

    "full": the thinking as the model wrote it where the chat template keeps an earlier assistant
    turn's thinking; where it drops it (Qwen3's and DeepSeek-R1's templates keep only what follows
    `</think>`), the thinking as plain text before the answer, so x2 still holds all of it.
    "summary": the thinking summarised by the model (greedy), then the answer.
    """
    tok = loaded.tokenizer
    texts = [with_open_thinking(x, y1) for x, y1 in zip(xs, y1s, strict=True)]
    splits = [split_thinking(text) for text in texts]
    placed, summaries = list(y1s), [None] * len(y1s)
    rows = [n for n, t in enumerate(splits) if t is not None]
    if not rows:
        return placed, summaries
    if decoder.stage1_thinking == "full":
        keeps = _template_keeps_thinking(tok)
        for n in rows:
            thinking = splits[n]
            placed[n] = texts[n] if keeps and thinking.closed else _joined(thinking.text, thinking.answer)
        return placed, summaries
    prompts = [render_chat(tok, [{"role": "user", "content": f"{decoder.summary_prompt}\n\n{splits[n].text}"}])
               for n in rows]
    for n, prompt in zip(rows, prompts, strict=True):
        _check_fits(loaded, decoder, problems[n], "the summary prompt for the first attempt's thinking", prompt,
                    decoder.summary_max_new_tokens, "summary_max_new_tokens")
    outs = lockstep.decode(loaded, [[encode(tok, p) for p in prompts]], get_decoder("greedy"),
                           max_new_tokens=decoder.summary_max_new_tokens)
    for n, prompt, out in zip(rows, prompts, outs, strict=True):
        # The summariser may think too: its summary is what follows its thinking, or the thinking
        # itself where nothing follows (it never closed, or the length ran out right after).
        said = split_thinking(with_open_thinking(prompt, out.text))
        summary = (out.text if said is None else said.answer.strip() or said.text).strip()
        summaries[n] = summary
        placed[n] = compress.splice_summary(summary, splits[n].answer.strip())
    return placed, summaries


def _template_keeps_thinking(tokenizer) -> bool:
    """Whether the chat template keeps the thinking of an earlier assistant turn."""
    probe = "q8Zx thinking probe"
    turns = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": f"{THINK_OPEN}\n{probe}\n"
             f"{THINK_CLOSE}\n\nA"}, {"role": "user", "content": "R"}]
    return probe in render_chat(tokenizer, turns)


def _joined(thinking: str, answer: str) -> str:
    return f"{thinking}\n\n{answer.strip()}".strip()


def _fit_first_attempts(loaded, decoder, problems, users, y1s, feedbacks, max_new_tokens):
    """Per problem (y1 as placed in x2, tokens of y1 summarised away, summary text).

    x2 must hold, with the reflection and the final answer still to come, inside the
    budget; where it would not, the earliest part of y1 is summarised (see `decoders.redumix.compress`).
    """
    budget = decoder.context_budget or context_window(loaded.model)
    fitted = [(y1, 0, "") for y1 in y1s]
    if not budget:
        return fitted
    tok = loaded.tokenizer
    wrapper = len(tok(compress.wrapper_text(), add_special_tokens=False)["input_ids"])
    plans = []
    for problem, user, y1, fb in zip(problems, users, y1s, feedbacks, strict=True):
        skeleton = render_chat(tok, [
            {"role": "user", "content": user}, {"role": "assistant", "content": y1},
            {"role": "user", "content": _join(fb, decoder.reflect_turn(user))}, {"role": "assistant", "content": ""},
            {"role": "user", "content": decoder.redo_turn(user)},
        ])
        needed = len(encode(tok, skeleton)) + decoder.reflection_max_new_tokens + max_new_tokens
        y1_ids = tok(y1, add_special_tokens=False)["input_ids"]
        try:
            plan = compress.plan_cut(needed, budget, len(y1_ids), decoder.summary_max_new_tokens, wrapper)
        except ValueError as e:
            raise ValueError(f"problem {problem.problem_id!r}: {e}") from None
        plans.append((plan, y1_ids))
    cut_rows = [n for n, (plan, _) in enumerate(plans) if plan.cut]
    if not cut_rows:
        return fitted
    heads = [tok.decode(plans[n][1][: plans[n][0].cut]) for n in cut_rows]
    prompts = [render_chat(tok, [{"role": "user", "content": f"{decoder.summary_prompt}\n\n{head}"}]) for head in heads]
    for n, prompt in zip(cut_rows, prompts, strict=True):
        _check_fits(loaded, decoder, problems[n], "the summary prompt for the first attempt", prompt,
                    decoder.summary_max_new_tokens, "summary_max_new_tokens")
    summaries = lockstep.decode(loaded, [[encode(tok, p) for p in prompts]], get_decoder("greedy"),
                              max_new_tokens=decoder.summary_max_new_tokens)
    for n, summary in zip(cut_rows, summaries, strict=True):
        plan, y1_ids = plans[n]
        tail = tok.decode(y1_ids[plan.cut :])
        fitted[n] = (compress.splice_summary(summary.text, tail), plan.cut, summary.text.strip())
    return fitted


def _join(feedback: str, prompt: str) -> str:
    # Under the "none" policy the feedback is empty: the turn is then the prompt alone.
    return f"{feedback}\n\n{prompt}" if feedback else prompt


def _check_fits(loaded, decoder, problem, what, text, new_tokens, new_name="max_new_tokens") -> None:
    """Refuse (never truncate) a context that, with its new tokens, exceeds the budget."""
    budget = decoder.context_budget or context_window(loaded.model)
    if not budget:
        return
    length = len(encode(loaded.tokenizer, text))
    if length + new_tokens > budget:
        raise ValueError(
            f"problem {problem.problem_id!r}: {what} has {length} tokens, and with {new_name}={new_tokens} "
            f"needs {length + new_tokens} > the context budget of {budget}; lower --max-new-tokens or "
            "reflection_max_new_tokens, shorten reflect_prompt / redo_prompt, or raise context_budget"
        )
