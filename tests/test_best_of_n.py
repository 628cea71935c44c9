"""Best-of-N by self-certainty: the choice rules on hand-made distributions, the statistic as the
engine collects it, N=1 as `sample`, the same samples as self-consistency, and its summary
column and figure in a sweep's report."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from decoders.best_of_n.certainty import SelfCertainty
from decoders.best_of_n.selection import borda_choice, borda_weights, kl_uniform, most_certain
from envs import get_env
from harness.methods import Generation, get_method
from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import parse_config
from tests.helpers.sweeps import EASY
from tests.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")
GEN = Generation(max_new_tokens=8, stop=(), seed=0)


def _kl_uniform_by_hand(p: list[float]) -> float:
    v = len(p)
    return sum((1 / v) * math.log((1 / v) / q) for q in p)


def test_self_certainty_is_the_kl_of_uniform_from_the_distribution():
    peaked, flat = [0.7, 0.1, 0.1, 0.1], [0.25] * 4
    for p in (peaked, flat, [0.4, 0.3, 0.2, 0.1]):
        mean_logprob = sum(math.log(q) for q in p) / len(p)
        assert kl_uniform(mean_logprob, len(p)) == pytest.approx(_kl_uniform_by_hand(p))
    assert kl_uniform(math.log(0.25), 4) == pytest.approx(0.0)  # uniform: no certainty at all


def test_the_observer_averages_each_rows_certainty_over_its_own_steps():
    peaked = torch.tensor([0.7, 0.1, 0.1, 0.1]).log()
    flat = torch.tensor([0.25] * 4).log()
    observer = SelfCertainty(3)
    # Step 1: rows 0 and 2 active; step 2: row 0 only (row 2 finished); row 1 never decodes.
    observer(SimpleNamespace(logprobs=torch.stack([peaked, flat])[None], rows=[0, 2]))
    observer(SimpleNamespace(logprobs=flat[None, None], rows=[0]))
    assert observer.mean(0) == pytest.approx(_kl_uniform_by_hand([0.7, 0.1, 0.1, 0.1]) / 2)
    assert observer.mean(2) == pytest.approx(0.0, abs=1e-6)  # float32 log-probs
    assert math.isnan(observer.mean(1))


def test_the_most_certain_sample_is_kept_and_ties_go_to_the_first():
    assert most_certain([0.1, 0.9, 0.3]) == 1
    assert most_certain([0.5, 0.5, 0.2]) == 0
    with pytest.raises(ValueError):
        most_certain([])


def test_borda_weights_fall_with_certainty_rank():
    assert borda_weights([3.0, 1.0, 2.0, 0.0], power=1.0) == [4.0, 2.0, 3.0, 1.0]
    assert borda_weights([3.0, 1.0, 2.0, 0.0], power=0.0) == [1.0] * 4


@pytest.mark.parametrize(("power", "chosen"), [
    (0.0, 2),  # a plain majority: b (two votes), carried by its more certain sample
    (1.0, 2),  # a = 4, b = 3 + 2 = 5, c = 1
    (3.0, 0),  # a = 64 outweighs b = 27 + 8: the most certain sample's answer wins
])
def test_borda_vote_weighted_by_certainty(power, chosen):
    answers, certainty = ["a", "b", "b", "c"], [3.0, 1.0, 2.0, 0.0]
    assert borda_choice(answers, certainty, power) == chosen


def test_borda_ignores_samples_without_an_answer_and_falls_back_to_certainty():
    assert borda_choice([None, "x", None], [5.0, 1.0, 4.0], power=0.5) == 1
    assert borda_choice([None, None], [1.0, 2.0], power=0.5) == 1


@pytest.fixture(scope="module")
def loaded():
    return tiny_model()


@pytest.fixture(scope="module")
def problems():
    env = get_env("basic_arithmetic", **EASY)
    return env, env.problems(3, 0)


@pytest.mark.parametrize("selection", ["self_certainty", "borda"])
def test_one_sample_is_exactly_sample(loaded, problems, selection):
    env, items = problems
    best = get_method("best_of_n", n=1, temperature=1.5, selection=selection).solve(env, {"policy": loaded}, items, GEN)
    sampled = get_method("sample", temperature=1.5).solve(env, {"policy": loaded}, items, GEN)
    assert [a.row.token_ids for a in best] == [a.row.token_ids for a in sampled]
    assert all(a.extras["chosen_index"] == 0 for a in best)


def test_it_draws_self_consistencys_samples_and_keeps_the_most_certain(loaded, problems):
    env, items = problems
    best = get_method("best_of_n", n="2,4", temperature=1.5).solve(env, {"policy": loaded}, items, GEN)
    voted = get_method("self_consistency", n=4, temperature=1.5).solve(env, {"policy": loaded}, items, GEN)
    four = [a for a in best if a.variant == {"n": 4}]
    assert [a.extras["sample_completions"] for a in four] == [a.extras["sample_completions"] for a in voted]
    for attempt in best:
        extras = attempt.extras
        certainty = extras["sample_self_certainty"]
        assert len(certainty) == extras["n_samples"] == attempt.variant["n"]
        assert extras["chosen_index"] == max(range(len(certainty)), key=lambda i: (certainty[i], -i))
        assert attempt.row.text == extras["sample_completions"][extras["chosen_index"]]
        assert extras["pass_at_n"] == any(extras["sample_correct"])
    # N=2 chooses among the first two of N=4's samples.
    two = {a.problem.problem_id: a for a in best if a.variant == {"n": 2}}
    for attempt in four:
        assert two[attempt.problem.problem_id].extras["sample_completions"] == \
            attempt.extras["sample_completions"][:2]


def test_bad_settings_name_the_parameter_and_the_fix():
    with pytest.raises(ValueError, match=r"selection \(='bordaa'\).*Did you mean: borda"):
        get_method("best_of_n", selection="bordaa")
    with pytest.raises(ValueError, match=r"borda_power \(=-1.0\) must be a finite number >= 0"):
        get_method("best_of_n", borda_power=-1.0)


def test_a_sweep_reports_pass_at_n_and_accuracy_against_n_beside_self_consistency(tiny_model_dir, tmp_path):
    data = {"models": [str(tiny_model_dir)], "seeds": [0], "max_new_tokens": 8, "batch_size": 4,
            "envs": [{"name": "basic_arithmetic", "n": 3, "config": dict(EASY)}],
            "decoders": [{"name": "greedy"},
                         {"name": "best_of_n", "config": {"n": [1, 2], "temperature": 1.5}},
                         {"name": "self_consistency", "config": {"n": [1, 2], "temperature": 1.5}}]}
    out = tmp_path / "s"
    result = run_sweep(parse_config(data), out, progress=False)
    assert result.total == 3 * (1 + 2 + 2)
    summary = pd.read_csv(out / "summary.csv")
    best = summary[summary["decoder"] == "best_of_n"]
    assert sorted(best["variant"]) == ["n=1", "n=2"] and sorted(best["n_samples"]) == [1.0, 2.0]
    assert (best["pass_at_n"] >= best["accuracy"]).all()  # the oracle bounds the chosen answer
    assert summary.loc[summary["decoder"] != "best_of_n", "pass_at_n"].isna().all()
    assert "Accuracy vs N" in (out / "report.html").read_text()
    assert run_sweep(parse_config(data), out, progress=False, write_report=False).new == 0
