"""`redumix train grpo` configs: checked like sweep configs, held-out problems disjoint from the
training ones, and the reward functions TRL calls."""

from __future__ import annotations

import copy

import pytest

from harness.runs.sweep_config import ConfigError
from harness.train.config import load_train_config, parse_train_config
from harness.train.problems import dataset_rows, evaluation_problems, training_problems
from harness.train.rewards import reward_functions
from tests.tiny import tiny_tokenizer

TWO_DIGITS = {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2}
BASE = {
    "model": "smollm2-135m",
    "train": {"envs": [{"name": "basic_arithmetic", "n": 6, "config": TWO_DIGITS}], "seeds": [0]},
    "eval": {"seeds": [1]},
}


def with_(**changes) -> dict:
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def refused(data) -> str:
    with pytest.raises(ConfigError) as err:
        parse_train_config(data)
    return str(err.value)


def test_a_good_config_resolves_every_default():
    config = parse_train_config(BASE)
    assert config.rollout.kind == "discrete" and config.rollout.logprob is None
    assert config.reward_weights == {"score": 1.0, "format": 0.0}
    assert config.grpo.loss_type == "dapo" and config.grpo.group_size == 4 and config.grpo.lora_r is None
    resolved = config.resolved()
    assert resolved["envs"][0]["resolved_config"]["min_digits"] == 2 and "out" not in resolved


def test_mixture_rollouts_name_their_mix_and_its_log_prob():
    config = parse_train_config(with_(rollout={"kind": "mixture", "mix": "dirichlet", "temperature": 0.8,
                                               "config": {"alpha": 2.0, "max_topk": 5}}))
    assert config.rollout.decoder == "soft" and config.rollout.logprob == "dirichlet"
    decoder = config.rollout.decoder_config
    assert decoder["mode"] == "dirichlet" and decoder["alpha"] == 2.0 and decoder["max_topk"] == 5
    # The thinking and the answer after it sample with the rollout's own settings.
    assert decoder["temperature"] == decoder["after_thinking_temperature"] == 0.8
    gumbel = parse_train_config(with_(rollout={"kind": "mixture", "mix": "gumbel", "config": {"tau": 0.1}}))
    assert gumbel.rollout.decoder == "gumbel" and gumbel.rollout.logprob == "gumbel"
    tokens = parse_train_config(with_(rollout={"kind": "mixture", "mix": "different_tokens"}))
    assert tokens.rollout.logprob == "sampled_ids" and tokens.rollout.decoder_config["num_tokens"] == 2


@pytest.mark.parametrize(("data", "expected"), [
    (with_(grop={}), "grop: unknown key at the top level. Did you mean: grpo?"),
    (with_(grpo__group_sise=4), "grpo.group_sise: unknown key. Did you mean: group_size?"),
    (with_(grpo__group_size=1), "grpo.group_size (=1) must be an integer >= 2"),
    (with_(grpo__loss_type="drgrpo"), "Did you mean: dr_grpo"),
    (with_(grpo__lora="yes"), "grpo.lora (='yes') must be true, false or a mapping"),
    (with_(grpo__lora={"r": 0}), "grpo.lora.r (=0) must be an integer >= 1"),
    (with_(grpo__epsilon=1.5), "grpo.epsilon (=1.5) must be in (0, 1)"),
    (with_(rollout__temperature=0), "rollout.temperature (=0) must be above 0"),
    (with_(rollout__kind="soft"), "rollout.kind (='soft') is not one of discrete, mixture"),
    (with_(rollout__mix="gumbel"), "rollout.mix (='gumbel') sets a mixture rollout"),
    (with_(rollout={"kind": "mixture"}), "rollout.mix is missing"),
    (with_(rollout={"kind": "mixture", "mix": "dirichlet", "config": {"mode": "probs"}}),
     "rollout.config.mode (='probs') is set by rollout.mix"),
    (with_(rollout={"kind": "mixture", "mix": "gumbel", "config": {"taus": 0.5}}), "Did you mean: tau?"),
    (with_(rollout={"kind": "mixture", "mix": "gumbel", "config": {"tau": [0.1, 1]}}), "give a single value"),
    (with_(rollout={"kind": "mixture", "mix": "dirichlet", "config": {"alpha": -1}}), "alpha (=-1) must be > 0"),
    (with_(rewards={"score": 0}), "every weight is 0"),
    (with_(rewards={"scores": 1}), "rewards.scores: unknown key. Did you mean: score?"),
    (with_(train__envs=[{"name": "basic_arithmetc"}]),
     "train.envs[0].name (='basic_arithmetc') is not an environment. Did you mean: basic_arithmetic"),
    (with_(model="no/such/model"), "model"),
    (with_(eval={"seeds": [1, 1]}), "eval.seeds[1] repeats the entry 1"),
])
def test_bad_configs_are_refused_naming_the_key_and_the_fix(data, expected):
    assert expected in refused(data)


def test_evaluation_problems_overlapping_training_ones_are_refused_naming_one():
    message = refused(with_(eval={"seeds": [0]}))
    assert ("evaluation problem basic_arithmetic-s0-0 of 'basic_arithmetic' is training problem "
            "basic_arithmetic-s0-0") in message
    # Different seeds can still draw the same question from a small task: compared by prompt, not seed.
    one_digit = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    message = refused(with_(train={"envs": [{"name": "basic_arithmetic", "n": 8, "config": one_digit}], "seeds": [0]}))
    assert "evaluation problem basic_arithmetic-s1-" in message and "training problem basic_arithmetic-s0-" in message
    assert "the same question" in message


def test_duplicate_keys_and_missing_files_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: smollm2-135m\nmodel: other\ntrain: {envs: [{name: basic_arithmetic}]}\n")
    with pytest.raises(ConfigError, match="key 'model' is given twice"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")


def test_problems_rows_and_rewards():
    config = parse_train_config(with_(eval={"seeds": [1], "n": 3}, rewards={"score": 1.0, "format": 0.5}))
    train, held = training_problems(config), evaluation_problems(config)
    assert len(train) == 6 and len(held) == 3 and {p.problem.seed for p in held} == {1}
    rows = dataset_rows(train, tiny_tokenizer())
    assert rows[0]["problem_key"] == "basic_arithmetic|basic_arithmetic-s0-0"
    assert rows[0]["prompt"].startswith("<s>user: ") and train[0].problem.question in rows[0]["prompt"]
    funcs, weights = reward_functions(config.reward_weights, train)
    assert [f.__name__ for f in funcs] == ["score", "format"] and weights == [1.0, 0.5]
    gold = train[0].problem.gold
    completions = [f"<answer>{gold}</answer>", gold, "<answer>wrong</answer>"]
    keys = [rows[0]["problem_key"]] * 3
    assert funcs[0](prompts=[""] * 3, completions=completions, problem_key=keys) == [1.0, 0.0, 0.0]
    assert funcs[1](prompts=[""] * 3, completions=completions, problem_key=keys) == [1.0, 0.0, 1.0]
