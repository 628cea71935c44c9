"""Self-consistency: majority vote and tie-break, N = 1 is `sample`, near-zero temperature is greedy."""

from __future__ import annotations

import json
import re

import pytest

from decoders.self_consistency.method import majority_vote
from envs import get_env
from harness.cli import main
from harness.methods import Generation, get_method
from harness.runs.runner import RunSpec, run
from tests.tiny import tiny_model

EASY = {"min_terms": "2", "max_terms": "2", "min_digits": "1", "max_digits": "1"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("answers, logprobs, index", [
    (["3", "4", "3"], [-5.0, -1.0, -6.0], 0),  # majority wins over the likelier minority; its likelier sample
    (["3", "4", "4", "3"], [-1.0, -2.0, -2.5, -9.0], 1),  # 2-2 tie: "4" sums -4.5 > "3" at -10
    ([None, None, "7"], [-1.0, -1.0, -20.0], 2),  # samples without an answer do not vote
    ([None, None], [-3.0, -2.0], 1),  # nobody answered: the most likely sample
    (["5"], [-4.0], 0),
])
def test_majority_vote_and_tie_break(answers, logprobs, index):
    assert majority_vote(answers, logprobs) == index


def test_majority_vote_needs_one_logprob_per_answer():
    with pytest.raises(ValueError, match="one log-probability per answer"):
        majority_vote(["1", "2"], [0.0])


@pytest.fixture(scope="module")
def loaded():
    return tiny_model()


def _records(loaded, out, decoder, config) -> dict[str, dict]:
    spec = RunSpec(env="basic_arithmetic", decoder=decoder, n=4, seed=3, env_config=dict(EASY),
                   decoder_config=dict(config), max_new_tokens=10, batch_size=3)
    run(spec, out, loaded=loaded, progress=False)
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return {r["problem_id"]: r for r in rows}


def test_one_sample_is_the_sample_decoder_with_the_same_seed(loaded, tmp_path):
    sc = _records(loaded, tmp_path / "sc", "self_consistency", {"n": "1", "temperature": "1.5"})
    sample = _records(loaded, tmp_path / "s", "sample", {"temperature": "1.5"})
    assert {k: r["completion"] for k, r in sc.items()} == {k: r["completion"] for k, r in sample.items()}
    assert all(r["n_samples"] == 1 and len(r["sample_completions"]) == 1 for r in sc.values())


def test_near_zero_temperature_votes_agree_with_greedy(loaded, tmp_path):
    sc = _records(loaded, tmp_path / "sc", "self_consistency", {"n": "4", "temperature": "1e-4"})
    greedy = _records(loaded, tmp_path / "g", "greedy", {})
    for pid, record in sc.items():
        assert record["sample_completions"] == [greedy[pid]["completion"]] * 4
        assert record["completion"] == greedy[pid]["completion"]


def test_samples_differ_and_the_record_keeps_every_one(loaded, tmp_path):
    sc = _records(loaded, tmp_path / "sc", "self_consistency", {"n": "5", "temperature": "1.5"})
    for record in sc.values():
        assert len(record["sample_completions"]) == len(record["sample_answers"]) == 5
        assert len(set(record["sample_completions"])) > 1  # each sample draws its own stream
        assert record["completion"] in record["sample_completions"]
        assert sum(record["votes"].values()) == sum(a is not None for a in record["sample_answers"])
        assert record["new_tokens"] in record["sample_new_tokens"] and len(record["sample_new_tokens"]) == 5


@pytest.mark.parametrize("n", ["0", "-2", "1.5"])
def test_bad_n_names_the_parameter(tmp_path, capsys, n):
    with pytest.raises(ValueError, match=r"n \(="):
        get_method("self_consistency", n=n)
    assert main(["run", "--env", "basic_arithmetic", "--decoder", "self_consistency", "--decoder-config",
                 f"n={n}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "n (=" in err and "Traceback" not in err


def test_sample_counts_share_one_set_of_samples(loaded, tmp_path):
    # n=1,3 decodes 3 samples per problem once; n=1 votes over the first, n=3 over all three:
    # each equals its own run (n=1 is `sample`), and the smaller count costs less.
    rows = [json.loads(line) for line in _run_lines(loaded, tmp_path / "both", {"n": "1,3", "temperature": "1.5"})]
    by_variant = {(r["problem_id"], r["variant"]["n"]): r for r in rows}
    assert len(by_variant) == len(rows) == 8
    alone = {n: _records(loaded, tmp_path / f"n{n}", "self_consistency", {"n": str(n), "temperature": "1.5"})
             for n in (1, 3)}
    for (pid, n), record in by_variant.items():
        assert record["sample_completions"] == alone[n][pid]["sample_completions"]
        assert (record["completion"], record["correct"]) == (alone[n][pid]["completion"], alone[n][pid]["correct"])
        assert record["decoder_config"]["n"] == n and record["n_samples"] == n
    env = get_env("basic_arithmetic", **EASY)
    attempts = get_method("self_consistency", n="1,3").solve(
        env, {"policy": loaded}, env.problems(2, 3), Generation(max_new_tokens=10, stop=(), seed=3))
    cost = {(a.problem.problem_id, a.variant["n"]): a.cost_s for a in attempts}
    for pid in {pid for pid, _ in cost}:
        assert cost[pid, 1] == pytest.approx(cost[pid, 3] / 3)  # each count pays for its own samples


def test_a_sample_count_list_resumes_only_what_is_missing(loaded, tmp_path):
    out = tmp_path / "o"
    lines = _run_lines(loaded, out, {"n": "1,2"})
    kept = lines[:3]
    (out / "samples.jsonl").write_text("\n".join(kept) + "\n")
    again = _run_lines(loaded, out, {"n": "1,2"})
    assert again[:3] == kept and len(again) == len(lines) == 8
    strip = [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in again]
    first = [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in lines]
    key = lambda r: (r["problem_id"], r["variant"]["n"])  # noqa: E731
    assert sorted(strip, key=key) == sorted(first, key=key)


@pytest.mark.parametrize("n, needle", [("1,1", "repeats a value"), ("2,0", "n (=0)"), ("", "empty list")])
def test_bad_sample_count_lists_name_the_parameter(n, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        get_method("self_consistency", n=n)


def _run_lines(loaded, out, config) -> list[str]:
    spec = RunSpec(env="basic_arithmetic", decoder="self_consistency", n=4, seed=3, env_config=dict(EASY),
                   decoder_config=dict(config), max_new_tokens=10, batch_size=3)
    run(spec, out, loaded=loaded, progress=False)
    return (out / "samples.jsonl").read_text().splitlines()
