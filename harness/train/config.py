"""Training configs for `redumix train grpo`: one YAML file, checked in full before any model loads.

Checked as sweep configs are (`harness.runs.sweep_config`): unknown keys answer with a
did-you-mean, a key given twice is an error, and every error names the key path, the
value and the fix. Environments are built and their problems drawn while checking, so
a config that passes cannot fail on its settings once training has started; the
evaluation problems must not overlap the training problems (`harness.train.problems`).

Example::

    name: rl-discrete
    model: smollm2-135m
    train:
      envs:
        - name: basic_arithmetic
          n: 64
          config: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}
      seeds: [0]
    eval:
      seeds: [100]          # held out: no evaluation problem may be a training problem
    rewards: {score: 1.0, format: 0.5}
    rollout:
      kind: discrete        # or mixture, with mix: different_tokens | dirichlet | gumbel
      max_new_tokens: 48
      temperature: 1.0
    grpo:
      group_size: 4
      prompts_per_step: 2
      max_steps: 30
      lr: 1.0e-5
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.naming import did_you_mean
from harness.runs.record_json import shape_problem
from harness.runs.sweep_config import (
    ConfigError,
    EnvEntry,
    _Checker,
    _int,
    _list,
    _mapping,
    _string,
    _unique,
    read_yaml_config,
)

TOP_KEYS: dict[str, tuple[bool, Any]] = {
    "name": (False, None),
    "out": (False, None),
    "model": (True, None),
    "train": (True, None),
    "eval": (False, None),
    "rewards": (False, {}),
    "rollout": (False, {}),
    "grpo": (False, {}),
    "dtype": (False, "float32"),
    "device": (False, "cpu"),
    "extraction": (False, "strict"),
}
TRAIN_KEYS = {"envs": (True, None), "seeds": (False, [0])}
EVAL_KEYS = {"seeds": (True, None), "n": (False, None)}
REWARD_KEYS = {"score": (False, 1.0), "format": (False, 0.0)}
ROLLOUT_KEYS = {
    "kind": (False, "discrete"),
    "max_new_tokens": (False, 128),
    "temperature": (False, 1.0),
    "top_p": (False, 1.0),
    "top_k": (False, 0),
    "mix": (False, None),
    "config": (False, None),
}
GRPO_KEYS = {
    "group_size": (False, 4),
    "prompts_per_step": (False, 2),
    "grad_accum": (False, 1),
    "max_steps": (False, 50),
    "lr": (False, 1e-5),
    "loss_type": (False, "dapo"),
    "beta": (False, 0.0),
    "epsilon": (False, 0.2),
    "epsilon_high": (False, None),
    "scale_rewards": (False, "group"),
    "num_iterations": (False, 1),
    "mask_truncated_completions": (False, False),
    "save_steps": (False, 50),
    "seed": (False, 0),
    "lora": (False, None),
}
LORA_KEYS = {"r": (False, 16), "alpha": (False, 32)}

ROLLOUT_KINDS = {
    "discrete": "TRL's own generation: every completion token sampled and trained as a token",
    "mixture": "MoT-G: the chain of thought fed as mixtures of token embeddings by one of our soft decoders, "
               "the answer after it discrete",
}
# A mixture's name -> (decoder, fixed decoder settings). Each soft step's log-probability follows from
# how its input was drawn (harness.train.soft_logprobs), so the mix decides it.
MIXES: dict[str, tuple[str, dict]] = {
    "different_tokens": ("soft", {"mode": "different_tokens"}),
    "dirichlet": ("soft", {"mode": "dirichlet"}),
    "gumbel": ("gumbel", {}),
}
LOGPROB_OF_MIX = {"different_tokens": "sampled_ids", "dirichlet": "dirichlet", "gumbel": "gumbel"}
# Set by the rollout's own keys (the same sampling for discrete and mixture rollouts), or by the mix.
MANAGED_DECODER_KEYS = ("mode", "temperature", "top_k", "top_p", "after_thinking_temperature",
                        "after_thinking_top_k", "after_thinking_top_p", "after_thinking_min_p")
# TRL's loss types whose settings are all expressed here (luspo and vespo need settings of their own).
LOSS_TYPES = {
    "dapo": "token-level, normalised by the active tokens of the whole accumulated batch (TRL's default)",
    "grpo": "token-level, each sequence normalised by its length (the original GRPO)",
    "dr_grpo": "token-level, normalised by a constant (max_new_tokens), Dr. GRPO",
    "bnpo": "token-level, normalised by the active tokens of the local batch",
    "cispo": "clipped importance weights times the log-probs (MiniMax-M1)",
    "sapo": "a soft, temperature-controlled gate in place of clipping",
}
SCALE_REWARDS = ("group", "batch", "none")


@dataclass(frozen=True)
class RolloutConfig:
    kind: str
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    mix: str | None = None  # mixture only
    decoder: str | None = None  # the soft decoder a mixture runs ("soft" or "gumbel")
    decoder_config: dict = dataclasses.field(default_factory=dict)  # every parameter, as the decoder resolved it

    @property
    def logprob(self) -> str | None:
        """The soft steps' log-probability definition (None for discrete rollouts)."""
        return LOGPROB_OF_MIX[self.mix] if self.mix else None


@dataclass(frozen=True)
class GRPOSettings:
    group_size: int
    prompts_per_step: int
    grad_accum: int
    max_steps: int
    lr: float
    loss_type: str
    beta: float
    epsilon: float
    epsilon_high: float | None
    scale_rewards: str
    num_iterations: int
    mask_truncated_completions: bool
    save_steps: int
    seed: int
    lora_r: int | None  # None: every weight trains
    lora_alpha: float | None


@dataclass(frozen=True)
class GRPOTrainConfig:
    name: str
    out: str | None
    model: str
    envs: tuple[EnvEntry, ...]
    train_seeds: tuple[int, ...]
    eval_seeds: tuple[int, ...]
    eval_n: int | None  # evaluation problems per environment and seed; None: each environment's own n
    reward_weights: dict[str, float]  # {"score": w, "format": w}, zero weights included
    rollout: RolloutConfig
    grpo: GRPOSettings
    dtype: str
    device: str
    extraction: str

    def resolved(self) -> dict:
        """Everything that decides the trained weights, as JSON: checkpoints resume only under the same."""
        data = dataclasses.asdict(self)
        data.pop("out")
        data.pop("name")
        for env in data["envs"]:
            env.pop("config")  # the resolved config says it all
        return json.loads(json.dumps(data))


def load_train_config(path: str | Path) -> GRPOTrainConfig:
    """Read and check a training config file.

    Raises:
        ConfigError: unreadable file, bad YAML, or any invalid setting (the message names the fix).
    """
    path = Path(path)
    data = read_yaml_config(path, "training config", "configs/rl-discrete.yaml")
    return parse_train_config(data, source=str(path), default_name=path.stem)


def parse_train_config(data: Any, source: str = "config", default_name: str = "grpo") -> GRPOTrainConfig:
    """Check a training config mapping (as read from YAML) and resolve it.

    Raises:
        ConfigError: the first problem found, prefixed with `source` and the key path.
    """
    problem = shape_problem(data)
    if problem is not None:
        raise ConfigError(f"{source}: {problem}; give a finite value")
    try:
        config = _parse(data, default_name)
        from harness.train.problems import check_disjoint

        check_disjoint(config)
        return config
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _parse(data: Any, default_name: str) -> GRPOTrainConfig:
    checker = _Checker()
    top = _mapping(data, "the top level", TOP_KEYS)
    name = _string(top["name"] if top["name"] is not None else default_name, "name")
    out = _string(top["out"], "out") if top["out"] is not None else None
    model = _string(top["model"], "model")
    checker._check_model(model, "model")
    dtype = checker._choice(top["dtype"], "dtype", _dtypes())
    device = _string(top["device"], "device")
    checker._check_device_and_dtype(device, dtype)
    from envs.answer import EXTRACTION_MODES

    extraction = checker._choice(top["extraction"], "extraction", EXTRACTION_MODES)

    train = _mapping(top["train"], "train", TRAIN_KEYS)
    envs = tuple(checker._env(e, f"train.envs[{i}]", extraction)
                 for i, e in enumerate(_list(train["envs"], "train.envs")))
    _unique([e.label for e in envs], "train.envs", what="label", fix="give one of them a distinct `label`")
    train_seeds = _seeds(train["seeds"], "train.seeds")
    if top["eval"] is not None:
        held = _mapping(top["eval"], "eval", EVAL_KEYS)
        eval_seeds = _seeds(held["seeds"], "eval.seeds")
        eval_n = _int(held["n"], "eval.n", minimum=1) if held["n"] is not None else None
    else:
        eval_seeds, eval_n = (), None

    weights = _mapping(top["rewards"], "rewards", REWARD_KEYS)
    reward_weights = {key: _number(weights[key], f"rewards.{key}", minimum=0.0) for key in REWARD_KEYS}
    if not any(reward_weights.values()):
        raise ConfigError("rewards: every weight is 0, so every completion scores the same and nothing is learnt; "
                          "give score (the verifier's) or format (answer in <answer> tags) a weight above 0")
    rollout = _rollout(_mapping(top["rollout"], "rollout", ROLLOUT_KEYS))
    grpo = _grpo(_mapping(top["grpo"], "grpo", GRPO_KEYS), rollout)
    return GRPOTrainConfig(name=name, out=out, model=model, envs=envs, train_seeds=train_seeds, eval_seeds=eval_seeds,
                           eval_n=eval_n, reward_weights=reward_weights, rollout=rollout, grpo=grpo, dtype=dtype,
                           device=device, extraction=extraction)


def _rollout(r: dict) -> RolloutConfig:
    kind = _string(r["kind"], "rollout.kind")
    if kind not in ROLLOUT_KINDS:
        hint = did_you_mean(kind, ROLLOUT_KINDS)
        raise ConfigError(f"rollout.kind (={kind!r}) is not one of {', '.join(ROLLOUT_KINDS)}.{hint}")
    max_new_tokens = _int(r["max_new_tokens"], "rollout.max_new_tokens", minimum=1)
    temperature = _number(r["temperature"], "rollout.temperature", minimum=0.0)
    if temperature <= 0:
        raise ConfigError(f"rollout.temperature (={temperature:g}) must be above 0: GRPO learns from sampled "
                          "completions, and greedy ones have no sampling probability; e.g. temperature: 1.0")
    top_p = _number(r["top_p"], "rollout.top_p", minimum=0.0)
    if not 0 < top_p <= 1:
        raise ConfigError(f"rollout.top_p (={top_p:g}) must be in (0, 1]; 1 keeps every token")
    top_k = _int(r["top_k"], "rollout.top_k", minimum=0)
    if kind == "discrete":
        for key in ("mix", "config"):
            if r[key] is not None:
                raise ConfigError(f"rollout.{key} (={r[key]!r}) sets a mixture rollout; remove it, or write "
                                  "kind: mixture")
        return RolloutConfig(kind=kind, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             top_k=top_k)
    if r["mix"] is None:
        raise ConfigError(f"rollout.mix is missing: a mixture rollout needs one of {', '.join(MIXES)}")
    mix = _string(r["mix"], "rollout.mix")
    if mix not in MIXES:
        hint = did_you_mean(mix, MIXES)
        raise ConfigError(f"rollout.mix (={mix!r}) is not one of {', '.join(MIXES)}.{hint}")
    decoder, fixed = MIXES[mix]
    given = dict(_mapping(r["config"], "rollout.config")) if r["config"] is not None else {}
    for key in MANAGED_DECODER_KEYS:
        if key in given:
            where = "rollout.mix" if key == "mode" else f"rollout.{key.removeprefix('after_thinking_')}"
            raise ConfigError(f"rollout.config.{key} (={given[key]!r}) is set by {where} (the thinking and the "
                              f"answer after it sample alike); remove it from rollout.config")
    if isinstance(given.get("tau"), list):
        raise ConfigError(f"rollout.config.tau (={given['tau']!r}): a rollout uses one Gumbel-softmax temperature; "
                          "give a single value, e.g. tau: 0.5")
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "after_thinking_temperature": temperature,
                "after_thinking_top_p": top_p, "after_thinking_top_k": top_k}
    from decoders import get_decoder
    from decoders.registry import decoder_class

    fields = {f.name for f in dataclasses.fields(decoder_class(decoder)) if not f.name.startswith("_")}
    for key in given:
        if key not in fields:
            hint = did_you_mean(key, sorted(fields - set(MANAGED_DECODER_KEYS)))
            raise ConfigError(f"rollout.config.{key}: decoder {decoder!r} (mix {mix}) has no parameter {key!r}.{hint}")
    try:
        built = get_decoder(decoder, **(given | fixed | sampling))
        built.check_settings(max_new_tokens)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"rollout.config: {err}") from None
    return RolloutConfig(kind=kind, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                         mix=mix, decoder=decoder, decoder_config=json.loads(json.dumps(built.config())))


def _grpo(g: dict, rollout: RolloutConfig) -> GRPOSettings:
    group_size = _int(g["group_size"], "grpo.group_size", minimum=2)
    loss_type = _string(g["loss_type"], "grpo.loss_type")
    if loss_type not in LOSS_TYPES:
        hint = did_you_mean(loss_type, LOSS_TYPES)
        raise ConfigError(f"grpo.loss_type (={loss_type!r}) is not one of {', '.join(LOSS_TYPES)}.{hint}")
    scale = _string(g["scale_rewards"], "grpo.scale_rewards")
    if scale not in SCALE_REWARDS:
        hint = did_you_mean(scale, SCALE_REWARDS)
        raise ConfigError(f"grpo.scale_rewards (={scale!r}) is not one of {', '.join(SCALE_REWARDS)}.{hint} "
                          "(group: divide by each group's reward std; batch: by the batch's; none: do not)")
    lr = _number(g["lr"], "grpo.lr", minimum=0.0)
    if lr <= 0:
        raise ConfigError(f"grpo.lr (={lr:g}) must be above 0, e.g. 1.0e-5")
    epsilon = _number(g["epsilon"], "grpo.epsilon", minimum=0.0)
    if not 0 < epsilon < 1:
        raise ConfigError(f"grpo.epsilon (={epsilon:g}) must be in (0, 1): the ratio is clipped to 1 +- epsilon; "
                          "e.g. 0.2")
    epsilon_high = None
    if g["epsilon_high"] is not None:
        epsilon_high = _number(g["epsilon_high"], "grpo.epsilon_high", minimum=0.0)
        if epsilon_high <= 0:
            raise ConfigError(f"grpo.epsilon_high (={epsilon_high:g}) must be above 0 (DAPO's clip-higher, e.g. "
                              "0.28); leave it out to clip at 1 + epsilon")
    mask_truncated = g["mask_truncated_completions"]
    if not isinstance(mask_truncated, bool):
        raise ConfigError(f"grpo.mask_truncated_completions (={mask_truncated!r}) must be true or false")
    lora = g["lora"]
    lora_r = lora_alpha = None
    if lora is True or isinstance(lora, dict):
        adapters = _mapping({} if lora is True else lora, "grpo.lora", LORA_KEYS)
        lora_r = _int(adapters["r"], "grpo.lora.r", minimum=1)
        lora_alpha = _number(adapters["alpha"], "grpo.lora.alpha", minimum=0.0)
        if lora_alpha <= 0:
            raise ConfigError(f"grpo.lora.alpha (={lora_alpha:g}) must be above 0 (the adapters' scale, e.g. 32)")
    elif lora is not None and lora is not False:
        raise ConfigError(f"grpo.lora (={lora!r}) must be true, false or a mapping such as {{r: 16, alpha: 32}}")
    return GRPOSettings(
        group_size=group_size, prompts_per_step=_int(g["prompts_per_step"], "grpo.prompts_per_step", minimum=1),
        grad_accum=_int(g["grad_accum"], "grpo.grad_accum", minimum=1),
        max_steps=_int(g["max_steps"], "grpo.max_steps", minimum=1), lr=lr, loss_type=loss_type,
        beta=_number(g["beta"], "grpo.beta", minimum=0.0), epsilon=epsilon, epsilon_high=epsilon_high,
        scale_rewards=scale, num_iterations=_int(g["num_iterations"], "grpo.num_iterations", minimum=1),
        mask_truncated_completions=mask_truncated, save_steps=_int(g["save_steps"], "grpo.save_steps", minimum=1),
        seed=_int(g["seed"], "grpo.seed", minimum=0), lora_r=lora_r, lora_alpha=lora_alpha,
    )


def _seeds(value: Any, path: str) -> tuple[int, ...]:
    seeds = tuple(_int(s, f"{path}[{i}]", minimum=0) for i, s in enumerate(_list(value, path)))
    _unique(seeds, path)
    return seeds


def _number(value: Any, path: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{path} (={value!r}) must be a number >= {minimum:g}")
    return float(value)


def _dtypes() -> list[str]:
    from harness.engine.dtype_choice import DTYPE_CHOICES

    return list(DTYPE_CHOICES)
