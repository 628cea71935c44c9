"""Answering requests that come without an environment of ours: lm-eval tasks of their own
(`harness.lmeval.model`) and the OpenAI-compatible server (`harness.serve`).

`RequestEnv` is the environment a method sees there; `HumanFeedback` is a first attempt and a
person's feedback on it, sent as a conversation; `sampling_decoder` is a decoder asked by a
request to sample; `answer_fields` is what an answer tells beyond its text (telemetry, the
server's extension object), with what no verifier could say left empty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from decoders import get_decoder
from envs import Problem, Verdict, extract_answer
from harness.methods.base import is_deterministic
from harness.methods.registry import axes_of, contributions_of

NO_VERIFIER = "none (the task has no environment to verify answers)"
HUMAN = "human (the request's last user message)"  # the feedback policy of feedback a person wrote


@dataclass(frozen=True)
class HumanFeedback:
    """A conversation's first attempt (its assistant turn) and a person's feedback on it (the user
    turn after it). A method that builds its own conversations from the user turn (ReDuMix) takes
    them in place of its own first attempt and the environment's feedback."""

    first_attempt: str
    feedback: str


def human_feedback(env, problem) -> HumanFeedback | None:
    """The first attempt and feedback `env` holds for `problem` (a `RequestEnv` of a conversation),
    else None (every environment of ours: the method makes its own)."""
    given = getattr(env, "human_feedback", None)
    return given(problem) if given is not None else None


class RequestEnv:
    """An environment as a method sees it, for requests (an lm-eval request, an API request).

    The user turn is the request's own prompt. With an environment (our tasks) answers
    are graded and feedback given by it; without one nothing is graded and feedback is empty.
    `earlier`: per problem, the first attempt and a person's feedback on it that the request's
    conversation holds (None: the conversation is the user turn alone).
    """

    def __init__(self, inner, user_turn: Callable[[Problem], str], name: str = "lm-eval",
                 earlier: Callable[[Problem], HumanFeedback | None] | None = None) -> None:
        self.inner = inner
        self.user_turn = user_turn  # asked only by methods that build conversations from the user turn
        self.earlier = earlier
        self.name = inner.name if inner is not None else name
        self.has_verifier = inner is not None and inner.has_verifier

    def user_prompt(self, problem) -> str:
        return self.user_turn(problem)

    def human_feedback(self, problem) -> HumanFeedback | None:
        return self.earlier(problem) if self.earlier is not None else None

    def verify(self, problem, completion: str) -> Verdict:
        if self.inner is not None:
            return self.inner.verify(problem, completion)
        answer = extract_answer(completion)
        return Verdict(answer=answer, score=0.0, correct=False, format_ok=answer is not None,
                       error="not graded: the task has no environment")

    def feedback(self, problem, verdict: Verdict, policy: str, templates=None) -> str:
        if self.inner is not None:
            return self.inner.feedback(problem, verdict, policy, templates)
        return ""


def sampling_decoder(decoder, settings: Mapping[str, Any]):
    """`decoder` as a request that asks to sample has it: greedy becomes `sample` with `settings`
    (temperature, top_p, top_k); any other decoder keeps its own rule, taking those of `settings`
    it has as parameters, and its `sample` switch (ReDuMix's stage 4) is turned on."""
    if is_deterministic(decoder):
        return get_decoder("sample", **settings)
    fields = {f.name for f in dataclasses.fields(decoder)}
    changes = {k: v for k, v in settings.items() if k in fields}
    if "sample" in fields:
        changes["sample"] = True
    return dataclasses.replace(decoder, **changes) if changes else decoder


def answer_fields(attempt, verified: bool) -> dict:
    """An answer's telemetry: how it was decoded, how long it took, and the method's own fields
    (stage texts, divergences, samples); the contexts themselves are left out."""
    row = attempt.row
    values = {
        "decoder": attempt.method, "decoder_config": attempt.method_config, "completion": row.text,
        "finish_reason": row.finish_reason, "new_tokens": row.new_tokens, "prompt_tokens": row.prompt_tokens[0],
        # As in run records: latency_s is the final decoding; the stages before it are stage_s.
        "latency_s": round(row.prefill_s + row.decode_s, 4), "stage_s": round(attempt.cost_s - attempt.answer_s, 4),
    } | {k: v for k, v in attempt.extras.items() if k != "contexts"}
    if not verified:  # nothing graded these answers: say so instead of a policy or a verdict
        graded = contributions_of(attempt.method).graded_fields
        values.update({k: None for k in graded if k in values})
        # Feedback a person wrote keeps its policy: nothing was missing.
        values.update({k: v for k, v in unverified_units(attempt.method).items() if k in values and values[k] != HUMAN})
    return values


def unverified_units(method: str) -> dict:
    """The method's unit-axis fields (ReDuMix's feedback policy) as telemetry shows them where no
    verifier exists: the env gave none of them."""
    return {axis.record: NO_VERIFIER for axis in axes_of(method).units}


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """`text` up to (not including) the first stop string, as lm-eval and OpenAI clients expect responses."""
    ends = [text.find(s) for s in stops if s and s in text]
    return text[: min(ends)] if ends else text
