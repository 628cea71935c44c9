"""ReDuMix's config: its settings and the stage-4 rule.

The stage-4 rule mixes the log-probs of the original context x (stream 0, weight lam) and
the reflective context x2 (stream 1, weight 1 - lam) and picks the next token; it is pure
(no model calls). The stages that build x2 (first attempt, feedback, reflection) run the
model and live beside it in `stages.py`.

`lam` may be a tuple of values for a sweep; the pipeline then shares stages 1-3
between them and runs stage 4 once per value (see `for_lambda`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from decoders.base import Step
from decoders.mix_step import MixtureStep
from decoders.registry import get_decoder
from decoders.sampling_settings import SamplingSettings
from envs.feedback import check_policy_name
from harness.naming import unknown_name_message

DEFAULT_REFLECT_PROMPT = (
    "Think back over the attempt above and the feedback on it, and list what needs fixing "
    "before you try again."
)
DEFAULT_REDO_PROMPT = (
    "Solve the task again with your reflection in mind, as though this were your first attempt, "
    "without leaning on anything you learned in this conversation."
)

# What x2 holds of a first attempt's thinking (see ReDuMix.stage1_thinking).
STAGE1_THINKING = ("full", "summary")
QUESTION_FIELD = "{question}"  # in reflect_prompt / redo_prompt: the original user prompt
DEFAULT_SUMMARY_PROMPT = (
    "Summarise the following reasoning in a few sentences, keeping every number and "
    "intermediate result it states:"
)


@dataclass(frozen=True)
class ReDuMix:
    """Config of a ReDuMix run.

    Attributes:
        lam: weight of the original context x (1 - lam goes to the reflective x2);
            a tuple runs one stage 4 per value, sharing stages 1-3.
        feedback: feedback policy of stage 2 (see `envs.feedback`).
        sample / temperature / top_p / top_k / min_p: stage-4 token choice (greedy by default;
            the four settings are `sampling`).
        reflect_prompt: appended after the feedback to ask for the stage-3 reflection.
        redo_prompt: the last user turn of x2. In both prompts "{question}" stands for
            the original user prompt (question plus answer-format instruction).
        reflection_max_new_tokens: length bound of the stage-3 reflection.
        context_budget: longest allowed x2 + max_new_tokens in tokens; 0 uses the
            model's context window. Where x2 would not fit, the earliest part of the
            first attempt is summarised by the model (`summary_prompt`, at most
            `summary_max_new_tokens`) and the record says how many tokens were cut.
        lambdas_per_batch: how many lam values share one stage-4 batch (0: all of them);
            lower it when batch_size x lam values x 2 contexts does not fit in memory.
        stage1_thinking: what x2 (and the reflection prompt) hold of a first attempt that thinks
            (`<think>...</think>`, see `envs.answer.split_thinking`): "full" (the default) the whole
            thinking, as the method's "entire chain-of-thought", written before the answer as plain
            text where the chat template would drop an earlier turn's thinking (Qwen3's and
            DeepSeek-R1's do); "summary" the thinking summarised by the model (`summary_prompt`,
            `summary_max_new_tokens`, greedy) before the answer. A first attempt without thinking is
            placed as it is under both.
        stage1_sample / stage1_temperature / stage1_top_p / stage1_top_k / stage1_min_p: how
            the first attempt is decoded (greedy by default; sampled with a generator per
            problem when set; the four settings are `stage1_sampling`).

    min_p, stage1_top_k and stage1_min_p default to no filtering, which is how ReDuMix
    decoded before it had them.
    """

    lam: float | tuple[float, ...] = 0.5
    # The settings the contract tests run it with on a tiny model (two variants, short prompts).
    contract_config: ClassVar[dict[str, str]] = {"lam": "0,1", "feedback": "binary", "reflect_prompt": "Reflect.",
                                                  "redo_prompt": "Redo.", "reflection_max_new_tokens": "8"}
    feedback: str = "ground_truth"
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    reflect_prompt: str = DEFAULT_REFLECT_PROMPT
    redo_prompt: str = DEFAULT_REDO_PROMPT
    reflection_max_new_tokens: int = 128
    context_budget: int = 0
    summary_prompt: str = DEFAULT_SUMMARY_PROMPT
    summary_max_new_tokens: int = 64
    lambdas_per_batch: int = 0
    stage1_sample: bool = False
    stage1_temperature: float = 1.0
    stage1_top_p: float = 1.0
    stage1_top_k: int = 0
    stage1_min_p: float = 0.0
    stage1_thinking: str = "full"

    num_streams = 2

    def __post_init__(self) -> None:
        lam = self.lam
        if isinstance(lam, list):
            lam = tuple(lam)
            object.__setattr__(self, "lam", lam)
        values = lam if isinstance(lam, tuple) else (lam,)
        if not values:
            raise ValueError(
                f"lam (={lam!r}) is an empty list; give at least one value, e.g. lam=0.5 or lam=0,0.5,1"
            )
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"lam (={value}) must be in [0, 1] for redumix; "
                    "1 keeps only the original context, 0 only the reflective one"
                )
        if isinstance(lam, tuple):
            object.__setattr__(self, "lam", tuple(float(v) for v in lam))
        check_policy_name(self.feedback)
        _ = self.sampling, self.stage1_sampling  # checked here, when the config is made
        if self.reflection_max_new_tokens < 1:
            raise ValueError(f"reflection_max_new_tokens (={self.reflection_max_new_tokens}) must be >= 1")
        if self.summary_max_new_tokens < 1:
            raise ValueError(f"summary_max_new_tokens (={self.summary_max_new_tokens}) must be >= 1")
        if self.lambdas_per_batch < 0:
            raise ValueError(
                f"lambdas_per_batch (={self.lambdas_per_batch}) must be >= 0; 0 puts every lam in one batch"
            )
        if self.stage1_thinking not in STAGE1_THINKING:
            raise ValueError(unknown_name_message("stage1_thinking", self.stage1_thinking, STAGE1_THINKING))
        if self.context_budget < 0:
            raise ValueError(f"context_budget (={self.context_budget}) must be >= 0; 0 uses the model's window")

    @property
    def sampling(self) -> SamplingSettings:
        """Stage 4's temperature / top_k / top_p / min_p as one `SamplingSettings` (used when `sample` is set)."""
        return SamplingSettings.of(self, temperature_fix="use sample=false for greedy")

    @property
    def stage1_sampling(self) -> SamplingSettings:
        """Stage 1's `stage1_*` settings as one `SamplingSettings` (used when `stage1_sample` is set)."""
        return SamplingSettings.of(self, "stage1_", temperature_fix="use stage1_sample=false for greedy")

    @property
    def lambdas(self) -> tuple[float, ...]:
        return self.lam if isinstance(self.lam, tuple) else (float(self.lam),)

    def for_lambda(self, lam: float) -> ReDuMix:
        """This config with a single lam (what one stage-4 engine call uses)."""
        return dataclasses.replace(self, lam=float(lam))

    def first_attempt_decoder(self):
        """The single-context decoder of stage 1."""
        if not self.stage1_sample:
            return get_decoder("greedy")
        return get_decoder("sample", **self.stage1_sampling.fields())

    def reflect_turn(self, question: str) -> str:
        return self.reflect_prompt.replace(QUESTION_FIELD, question)

    def redo_turn(self, question: str) -> str:
        return self.redo_prompt.replace(QUESTION_FIELD, question)

    def mixture(self) -> MixtureStep:
        if isinstance(self.lam, tuple):
            raise ValueError(f"lam (={self.lam}) holds several values; pick one with for_lambda() first")
        return MixtureStep((self.lam, 1.0 - self.lam), sample=self.sample, **self.sampling.fields(), name=self.name)

    def step(self, logprobs: Tensor, rngs: Sequence[torch.Generator]) -> Step:
        return self.mixture().step(logprobs, rngs)

    def config(self) -> dict:
        return dataclasses.asdict(self)
