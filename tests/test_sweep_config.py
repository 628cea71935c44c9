"""Sweep configs: what a valid config resolves to, and that every mistake is caught
before anything runs, with the key path, the value and a fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.runs.sweep import plan, record_key
from harness.runs.sweep_config import ConfigError, load_config, parse_config

EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+", "-"]}


def _config(**top):
    data = {
        "models": ["smollm2-135m"],
        "seeds": [0, 1],
        "max_new_tokens": 10,
        "envs": [{"name": "basic_arithmetic", "n": 3, "config": dict(EASY)}],
        "decoders": [
            {"name": "greedy"},
            {"name": "redumix", "lambdas": [0, 0.5, 1], "feedback": ["binary", "ground_truth"]},
        ],
    }
    data.update(top)
    return data


def test_valid_config_resolves_defaults_and_expands_to_units():
    config = parse_config(_config())
    assert config.batch_size == 8 and config.stop == ("</answer>",) and config.extraction == "strict"
    redumix = config.decoders[1]
    assert redumix.listed == {"lambdas": (0.0, 0.5, 1.0), "feedback": ("binary", "ground_truth")}
    assert redumix.resolved_config["reflection_max_new_tokens"] == 128  # the decoder's default, filled in
    assert config.decoders[0].listed == {}  # greedy lists no grid
    units = plan(config)
    # 2 seeds x (greedy + redumix under 2 policies); each redumix unit holds the whole lambda grid.
    assert len(units) == 6
    assert sorted({u.fields["feedback_policy"] for u in units if u.decoder.name == "redumix"}) == ["binary",
                                                                                                  "ground_truth"]
    assert all(u.variants == ({"lambda": 0.0}, {"lambda": 0.5}, {"lambda": 1.0})
               for u in units if u.decoder.name == "redumix")


def test_non_redumix_mixing_grid_and_defaults():
    # Without `lambdas`, redumix runs its default lam under its default policy.
    config = parse_config(_config(decoders=[{"name": "redumix"}]))
    assert config.decoders[0].listed == {"lambdas": (0.5,), "feedback": ("ground_truth",)}


def test_resolved_config_ignores_key_order_name_and_out_but_not_settings():
    a = parse_config(_config(out="results/a", name="a"))
    b = parse_config(dict(reversed(list(_config(out="results/b", name="b").items()))))
    assert a.resolved() == b.resolved()
    assert parse_config(_config(seeds=[0])).resolved() != a.resolved()


def test_record_keys_name_every_part_of_the_config():
    key = record_key("smollm2-135m", "basic_arithmetic", "basic_arithmetic-s0-3", "redumix", {"lambda": 0.5}, 0,
                     "binary")
    assert key == "smollm2-135m|basic_arithmetic|basic_arithmetic-s0-3|redumix|0.5|0|binary"
    assert record_key("m", "e", "p", "greedy", {}, 1, None) == "m|e|p|greedy|-|1|-"
    assert record_key("m", "e", "p", "d", {"lambda": 0}, 1, None) == record_key("m", "e", "p", "d", {"lambda": 0.0}, 1,
                                                                                 None)
    assert record_key("m", "e", "p", "sc", {"n": 4}, 1, None) == "m|e|p|sc|n=4|1|-"


def _broken(edit):
    data = _config()
    edit(data)
    return data


def _set(path, value):
    def edit(data):
        target = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set(["seed"], [0]), ["seed: unknown key at the top level", "Did you mean: seeds?"]),
        (_set(["envs", 0, "nn"], 3), ["envs[0].nn: unknown key", "Did you mean: n?"]),
        (_set(["decoders", 1, "lambda"], [0.5]), ["decoders[1].lambda: unknown key", "Did you mean: lambdas"]),
        (_set(["decoders", 1, "lambdas"], [0, 1.5]), ["decoders[1].lambdas[1] (=1.5)", "must be in [0, 1]"]),
        (_set(["decoders", 1, "lambdas"], [0, "half"]), ["decoders[1].lambdas[1] (='half') is not a number"]),
        (_set(["envs", 0, "name"], "basic_arithmetc"),
         ["envs[0].name (='basic_arithmetc') is not an environment", "Did you mean: basic_arithmetic"]),
        (_set(["envs", 0, "config", "max_term"], 2), ["envs[0].config", "max_term", "max_terms"]),
        (_set(["decoders", 1, "name"], "redumx"), ["decoders[1].name (='redumx')", "Did you mean: redumix"]),
        (_set(["decoders", 0, "lambdas"], [0.5]), ["decoders[0].lambdas", "'greedy' takes no `lambdas`"]),
        (_set(["decoders", 1, "feedback"], ["ground_truht"]),
         ["decoders[1].feedback[0] (='ground_truht')", "Did you mean: ground_truth?"]),
        (_set(["decoders", 1, "config"], {"lam": 0.5}), ["decoders[1].config.lam (=0.5)", "lambdas: [...]"]),
        (_set(["decoders", 1, "config"], {"temprature": 0.5}), ["decoders[1].config", "Did you mean: temperature"]),
        (_set(["decoders", 1, "config"], {"temperature": 0}), ["decoders[1].config", "temperature (=0)"]),
        (_set(["envs", 0, "n"], 0), ["envs[0].n (=0) must be an integer >= 1"]),
        (_set(["seeds"], 0), ["seeds (=0) must be a list", "seeds: [0]"]),
        (_set(["seeds"], [0, 0]), ["seeds[1] repeats the entry 0 of seeds[0]"]),
        (_set(["max_new_tokens"], "ten"), ["max_new_tokens (='ten') must be an integer >= 1"]),
        (_set(["dtype"], "float23"), ["dtype (='float23')", "Did you mean: float32"]),
        (_set(["models"], ["smollm3"]), ["models[0]", "Unknown model 'smollm3'", "smollm2-135m"]),
        (_set(["decoders"], [{"name": "greedy"}, {"name": "greedy"}]),
         ["decoders[1] repeats the label 'greedy'", "distinct `label`"]),
        (lambda d: d.pop("envs"), ["envs is missing"]),
        (_set(["envs"], []), ["envs is empty"]),
    ],
)
def test_config_errors_name_key_path_value_and_fix(edit, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(_broken(edit), source="my.yaml")
    message = str(err.value)
    assert message.startswith("my.yaml: ")
    for part in expected:
        assert part in message


def test_same_decoder_twice_with_labels_is_fine():
    decoders = [{"name": "sample", "label": "hot", "config": {"temperature": 1.5}},
                {"name": "sample", "label": "cool", "config": {"temperature": 0.5}}]
    config = parse_config(_config(decoders=decoders))
    assert [d.label for d in config.decoders] == ["hot", "cool"]


def test_bad_yaml_and_missing_file_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("envs: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set(["decoders", 1, "lambdas"], [0, 1.5]), "decoders[1].lambdas[1] (=1.5)"),
        (_set(["envs", 0, "name"], "basic_arithmetc"), "Did you mean: basic_arithmetic"),
        (_set(["decoders", 1, "lambda"], [0.5]), "Did you mean: lambdas"),
    ],
)
def test_cli_refuses_a_bad_config_and_writes_nothing(tmp_path, capsys, edit, expected):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_broken(edit)))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("redumix sweep: error: ") and expected in err and str(path) in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_shipped_configs_are_valid():
    quick = load_config("configs/quick.yaml")
    full = load_config("configs/full.yaml")
    assert quick.models == ("smollm2-135m",)
    assert {d.name for d in quick.decoders} >= {"greedy", "redumix"}
    from decoders import available_decoders
    from harness.methods import get_method

    # Every decoder that runs on the sweep's model alone (DeRa's second model is a distilled one: see
    # configs/loop-eval.yaml).
    one_model = {name for name in available_decoders() if get_method(name).roles() == ("policy",)}
    assert {d.name for d in full.decoders} == one_model, "configs/full.yaml lists every one-model decoder"
    redumix = next(d for d in full.decoders if d.name == "redumix")
    assert redumix.listed["lambdas"] == (0.0, 0.25, 0.5, 0.75, 1.0) and len(full.seeds) == 3 and len(full.envs) >= 3
    assert copy.deepcopy(quick.resolved()) == load_config("configs/quick.yaml").resolved()
    soft = load_config("configs/soft.yaml")
    assert {d.name for d in soft.decoders} == {"greedy", "sample", "soft", "gumbel"} and len(soft.envs) == 3


def test_the_loop_configs_are_valid_once_the_distilled_model_exists(tiny_model_dir):
    harvest = load_config("configs/loop-harvest.yaml")
    assert {d.name for d in harvest.decoders} == {"greedy", "redumix"}
    text = Path("configs/loop-eval.yaml").read_text()
    with pytest.raises(ConfigError, match=r"models.policy: model \(='not/distilled/yet'\): no such file"):
        parse_config(yaml.safe_load(text.replace("results/loop/distilled", "not/distilled/yet")))
    evaluation = parse_config(yaml.safe_load(text.replace("results/loop/distilled", str(tiny_model_dir))))
    assert set(harvest.seeds).isdisjoint(evaluation.seeds)  # evaluated on held-out problems
    dera = next(d for d in evaluation.decoders if d.name == "dera")
    assert dera.listed["lambdas"] == (0.0, 0.5, 1.0, 1.5, 2.0) and dera.config["aligned"] == str(tiny_model_dir)
    assert evaluation.reference == "greedy"


def test_reference_defaults_to_the_first_single_pass_decoder_and_can_be_named():
    base = {"models": ["smollm2-135m"], "envs": [{"name": "chain_sum", "n": 2}],
            "decoders": [{"name": "redumix"}, {"name": "self_consistency", "config": {"n": 2}},
                         {"name": "sample", "label": "s"}, {"name": "greedy"}]}
    assert parse_config(base).reference == "s"  # not redumix, not self-consistency: the first single pass
    assert parse_config(base | {"reference": "greedy"}).reference == "greedy"
    # Where costs are compared is not part of what the sweep records: same identity either way.
    assert parse_config(base | {"reference": "greedy"}).resolved() == parse_config(base).resolved()
    with pytest.raises(ConfigError, match=r"reference \(='gredy'\) is not a decoder label.*Did you mean: greedy"):
        parse_config(base | {"reference": "gredy"})
