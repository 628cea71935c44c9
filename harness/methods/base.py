"""The one interface every way of answering implements: a method.

A method turns a batch of problems into verified answers (`Attempt`s). It is handed
the loaded models by role and the generation settings, and never owns a model or a
file: the runner and the sweep decide where its answers go (`harness.runs.records` turns
an Attempt into the record they write). Per-step decoders (greedy, sample, ...) are
methods through `SinglePass`; multi-stage methods (ReDuMix) run several engine calls.

Variants are the grid axis a method shares work across (its `axes()`, see
`harness.methods.axes`): ReDuMix's lambda values share stages 1-3, so one call decodes every
lambda of a problem; self-consistency's sample counts share their samples (N=4 votes over
the first 4 of N=8's). A variant is a dict of at most one axis ({"lambda": 0.5}, {"n": 4});
a method without such an axis has one variant, `{}`. Stores key a variant by `variant_key`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from envs.base import Problem, Verdict
from harness.engine.token_texts import token_texts
from harness.methods.axes import Axes
from harness.methods.axes import variant_key as axes_variant_key


@dataclass(frozen=True)
class Generation:
    """Settings every method's final decoding shares (bar the method's own config)."""

    max_new_tokens: int
    stop: tuple[str, ...]
    seed: int
    save_steps: bool = False


@dataclass
class Attempt:
    """One verified answer of a method to one problem, under one variant.

    Attributes:
        problem: the problem answered.
        variant: the variant it was decoded under ({} or e.g. {"lambda": 0.5}).
        method: the name recorded as the record's `decoder`.
        method_config: the method's resolved config for this variant.
        prompt: the exact text the final decoding started from.
        row: the engine's row of the final decoding.
        verdict: the environment's grade of `row.text`.
        answer_s: seconds of the final decoding, batching amortised.
        cost_s: seconds of compute this answer took, every stage included, batching amortised.
        extras: method-specific record fields (stage texts, step statistics, stage times).
        steps: per-step arrays, when asked for (`Generation.save_steps`).
        decoded_tokens: tokens the final decoding produced for this answer, over every row it
            took (N samples for self-consistency); None: the row's own new tokens.
        reused_s: seconds of `cost_s` that were taken from work another unit already did (and
            counted), such as a first attempt reused from a greedy unit.
    """

    problem: Problem
    variant: dict
    method: str
    method_config: dict
    prompt: str
    row: Any  # harness.engine.lockstep.RowResult
    verdict: Verdict
    answer_s: float
    cost_s: float
    extras: dict = field(default_factory=dict)
    steps: dict | None = None
    decoded_tokens: int | None = None
    reused_s: float = 0.0

    @property
    def tokens(self) -> int:
        """Tokens decoded for this answer's final decoding (throughput counts these)."""
        return self.row.new_tokens if self.decoded_tokens is None else self.decoded_tokens

    @property
    def variant_key(self) -> str:
        """The variant as stores key it (see `variant_key`)."""
        return variant_key(self.variant)


@dataclass
class TeacherRows:
    """A continuation as a method scores (or distils) it: its token ids and the (n, V) log-probs
    the method gives at each of its n positions, plus method-specific details for telemetry."""

    target: list[int]
    logprobs: Any  # torch.Tensor (n, V)
    extras: dict = field(default_factory=dict)


class Method(Protocol):
    """A way of answering problems (see the module docstring)."""

    name: str

    def config(self) -> dict:
        """The resolved configuration, as recorded next to every answer."""
        ...

    def roles(self) -> tuple[str, ...]:
        """The models it needs, by role: ("policy",) for most, ("ref", "aligned") for DeRa."""
        ...

    def role_models(self) -> dict[str, str | None]:
        """The model each role runs on, by name (as `--model` takes it); None: the run's own model."""
        ...

    def variants(self) -> list[dict]:
        """The variants one call decodes: [{}] for a method without a grid axis."""
        ...

    # Optional: `teacher_logprobs(env, models, requests, ...) -> list[TeacherRows]`, the distribution a
    # method scores a continuation under when it is not the model's own (ReDuMix's mixture).

    @classmethod
    def axes(cls, config: type) -> Axes:
        """The method's grid parameters for its config class `config` (see `harness.methods.axes`):
        the variants it decodes together and the parameters that make one unit per value."""
        ...

    def without_env(self) -> Method:
        """This method for requests that come with no environment (lm-eval tasks of their own):
        nothing verifies an answer there, so e.g. ReDuMix gives no feedback."""
        ...

    def check_env(self, env) -> None:
        """Raise ValueError when the method cannot run on `env` (e.g. feedback it cannot give)."""
        ...

    def check_settings(self, max_new_tokens: int) -> None:
        """Raise ValueError when the method's config cannot work with these generation settings
        (a thinking budget longer than max_new_tokens, say); called before anything loads."""
        ...

    def solve(self, env, models: Mapping[str, Any], problems: Sequence[Problem], gen: Generation, *,
              skip: frozenset | set = frozenset(), cache: MethodCache | None = None,
              given: Mapping[str, list[int]] | None = None) -> list[Attempt]:
        """Answer `problems` under every variant, except the (problem id, variant key) pairs in `skip`.

        `given`: token ids to start from, by problem id, instead of the env's rendered user turn
        (lm-eval hands prompts already rendered and cut to its max_length). A method that builds
        its own conversations from the user turn (ReDuMix) uses the env's user turn regardless.
        """
        ...


@dataclass
class MethodCache:
    """Work that methods on one model share within a run or sweep.

    `answers` holds answers of deterministic single-pass decodes keyed by what they
    depend on (model, prompt, generation settings, decoder config), so a method that
    needs the same answer (ReDuMix's greedy first attempt) takes it instead of decoding
    it again: (completion, seconds it took). Reuse gives what decoding again would where a
    row does not depend on the rows batched with it; batch shapes, bf16, GPU kernels and
    reused prefix caches change logits in the last bits, which can flip near-ties.
    """

    answers: dict[tuple, tuple[str, float]] = field(default_factory=dict)
    stages: Any = None  # decoders.redumix.stages.Stage13Cache, made on first use


@dataclass(frozen=True)
class DecoderMethod:
    """Defaults for a method configured by a registered decoder dataclass (`decoder`): its
    name and config are the decoder's; one policy model, one variant, no grids, any env."""

    decoder: Any

    @property
    def name(self) -> str:
        return self.decoder.name

    def config(self) -> dict:
        return self.decoder.config()

    def roles(self) -> tuple[str, ...]:
        return ("policy",)

    def role_models(self) -> dict[str, str | None]:
        return {role: None for role in self.roles()}

    def variants(self) -> list[dict]:
        return [{}]

    @classmethod
    def axes(cls, config: type) -> Axes:
        # A per-step decoder's list-valued parameters (Gumbel's tau) are its variants.
        return Axes(variants=tuple(getattr(config, "variant_axes", ())))

    def without_env(self) -> DecoderMethod:
        return self

    def check_env(self, env) -> None:
        pass

    def check_settings(self, max_new_tokens: int) -> None:
        check = getattr(self.decoder, "check_settings", None)
        if check is not None:
            check(max_new_tokens)


def variant_key(variant: Mapping[str, Any]) -> str:
    """How records and skip sets name a variant: "-" for none, "axis=value" (e.g. "n=4"), or the
    bare number on an axis a registered method declares `bare_key` (ReDuMix's lambdas, as stores
    have always keyed them); see `harness.methods.axes.variant_key`."""
    from harness.methods.registry import bare_variant_names

    return axes_variant_key(variant, bare_variant_names())


def role_model_names(method: Method, run_model: str) -> dict[str, str]:
    """The model name of each of `method`'s roles, roles left open taking the run's `run_model`."""
    named = method.role_models()
    return {role: named.get(role) or run_model for role in method.roles()}


def pending(problems: Sequence[Problem], skip, variants: Sequence[Mapping] = ({},)) -> list[Problem]:
    """The problems with at least one of `variants` not in `skip` ((problem id, variant key) pairs)."""
    keys = [variant_key(v) for v in variants]
    return [p for p in problems if any((p.problem_id, k) not in skip for k in keys)]


def row_steps(row, tokenizer) -> dict[str, list]:
    """A row's per-step arrays for a record: its tokens (`step_tokens`) and each token's log-prob
    under the model (token_logprobs column 0, before any filtering)."""
    return step_tokens(row, tokenizer) | {"logprob": [round(t[0], 6) for t in row.token_logprobs]}


def step_tokens(row, tokenizer) -> dict[str, list]:
    """The per-step arrays every method that saves steps starts from: the row's token ids and
    the text each adds (`token_texts`), so a report can show the answer token by token
    without loading the tokenizer."""
    return {"token_ids": row.token_ids, "token_texts": token_texts(tokenizer, row.token_ids, row.text)}


def start_prompts(loaded, env, problems: Sequence[Problem], given: Mapping[str, list[int]] | None
                  ) -> tuple[list[str] | None, list[str], list[list[int]]]:
    """(user turns, prompt texts, prompt ids) a single-turn method starts from: the env's user
    turns rendered as a chat, or the `given` ids (then no user turns: None)."""
    from harness.engine.prompts import encode, render_chat

    if given is not None:
        ids = [list(given[p.problem_id]) for p in problems]
        return None, [loaded.tokenizer.decode(i) for i in ids], ids
    users = [env.user_prompt(p) for p in problems]
    texts = [render_chat(loaded.tokenizer, [{"role": "user", "content": u}]) for u in users]
    return users, texts, [encode(loaded.tokenizer, t) for t in texts]


def answer_key(model: str, user_prompt: str, max_new_tokens: int, stop: Sequence[str], decoder) -> tuple:
    """What a deterministic answer depends on: model, prompt, length and stop rules, decoder."""
    return (model, user_prompt, max_new_tokens, tuple(stop), decoder.name, repr(sorted(decoder.config().items())))


def is_deterministic(decoder) -> bool:
    """Whether the decoder's answer depends on nothing but its inputs (no random draws)."""
    return bool(getattr(decoder, "deterministic", False))
