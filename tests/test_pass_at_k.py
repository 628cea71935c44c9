"""pass@k and maj@k of self-consistency and best-of-N: the unbiased estimator and the first-k
majority vote against values worked out by hand, the summary columns of hand-made records, and
a sweep on the tiny model whose summary and report show them (same samples, same numbers)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pandas as pd
import pytest

from decoders.sampled_answers import default_ks, maj_at_k, pass_at_k
from decoders.self_consistency.method import majority_vote
from envs import Problem, Verdict, problem_id
from envs.registry import registered_env_family
from harness.analysis.metrics import parse_ks, summarize
from harness.analysis.report import write_report
from harness.cli import main
from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import parse_config
from tests.helpers.sweeps import read_records

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 1, Fraction(2, 5)),  # pass@1 is the share right
    (5, 2, 2, 1 - Fraction(3, 10)),  # C(3,2) / C(5,2) = 3/10 of the pairs miss
    (5, 2, 3, 1 - Fraction(1, 10)),  # C(3,3) / C(5,3)
    (5, 2, 4, 1),  # n - c = 3 < k: every 4-subset holds a right sample
    (4, 1, 2, 1 - Fraction(3, 6)),
    (10, 3, 5, 1 - Fraction(21, 252)),  # C(7,5) / C(10,5)
    (6, 0, 1, 0), (6, 0, 6, 0),  # c = 0: never
    (6, 6, 1, 1), (6, 6, 6, 1),  # c = n: always
    (1, 0, 1, 0), (1, 1, 1, 1),
    (8, 5, 4, 1),  # n - c = 3 < 4
])
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(float(expected), abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(200, 3, 50), (500, 1, 1), (500, 7, 100), (1000, 40, 500), (300, 0, 10)])
def test_pass_at_k_is_exact_for_hundreds_of_samples(n, c, k):
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))  # C(1000, 500) has 300 digits
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)


def test_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError, match=r"c \(=6\) must be between 0 and n \(=5\)"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match=r"k \(=0\) must be between 1 and n"):
        pass_at_k(5, 2, 0)
    with pytest.raises(ValueError, match=r"k \(=6\) must be between 1 and n \(=5\)"):
        pass_at_k(5, 2, 6)
    with pytest.raises(ValueError, match="whole number"):
        pass_at_k(5.0, 2, 1)


# "4" and "3" tie 2-2 over all four; "4"'s log-probabilities sum to -4.5, "3"'s to -10.
ANSWERS, CORRECT, LOGPROBS = ["3", "4", "4", "3"], [True, False, False, True], [-1.0, -2.0, -2.5, -9.0]


@pytest.mark.parametrize(("k", "expected"), [
    (1, True),  # "3" alone
    (2, True),  # 1-1 tie: "3" (-1.0) is likelier than "4" (-2.0)
    (3, False),  # "4" twice
    (4, False),  # 2-2 tie: "4" sums -4.5 > "3" at -10
])
def test_maj_at_k_votes_over_the_first_k_and_breaks_ties_as_self_consistency(k, expected):
    assert maj_at_k(ANSWERS, CORRECT, k, LOGPROBS) is expected


@pytest.mark.parametrize(("k", "expected"), [(2, True), (3, False), (4, True)])
def test_without_log_probabilities_a_tie_goes_to_the_answer_given_first(k, expected):
    assert maj_at_k(ANSWERS, CORRECT, k) is expected  # k = 4: "3" came first


def test_samples_without_an_answer_do_not_vote():
    answers, correct = [None, None, "7", "8", "8"], [False, False, True, False, False]
    assert maj_at_k(answers, correct, 2, [-1.0, -3.0, -9.0, -9.0, -9.0]) is False  # nobody answered
    assert maj_at_k(answers, correct, 3, [-1.0, -3.0, -9.0, -9.0, -9.0]) is True  # "7" is the only vote
    assert maj_at_k(answers, correct, 5, [-1.0, -3.0, -9.0, -9.0, -9.0]) is False  # "8" twice


def test_maj_at_k_is_the_vote_self_consistency_takes_on_the_first_k():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 9)
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        logprobs = [round(rng.uniform(-5, 0), 1) for _ in range(n)]
        correct = [a == "2" for a in answers]
        for k in range(1, n + 1):
            assert maj_at_k(answers, correct, k, logprobs) == correct[majority_vote(answers[:k], logprobs[:k])]


def test_maj_at_k_refuses_k_outside_the_samples():
    with pytest.raises(ValueError, match=r"k \(=5\) must be a whole number between 1 and the number of samples"):
        maj_at_k(ANSWERS, CORRECT, 5)
    with pytest.raises(ValueError, match="one grade"):
        maj_at_k(ANSWERS, CORRECT[:3], 2)


def test_default_ks_are_the_powers_of_two_up_to_n_and_n():
    assert default_ks(1) == [1]
    assert default_ks(4) == [1, 2, 4]
    assert default_ks(5) == [1, 2, 4, 5]
    assert default_ks(100) == [1, 2, 4, 8, 16, 32, 64, 100]


def test_the_ks_option_is_a_list_of_whole_numbers():
    assert parse_ks("8,1, 2") == (1, 2, 8)
    for bad in ("0", "1,x", "", "1,,2", "1.5", "-1"):
        with pytest.raises(ValueError, match=r"--ks .* whole numbers >= 1"):
            parse_ks(bad)
    with pytest.raises(ValueError, match="repeats a value"):
        parse_ks("1,2,1")


def _record(decoder: str, pid: str, answers, correct, logprobs=None, variant=None) -> dict:
    """A hand-made record of a method that drew len(answers) samples (greedy: none)."""
    record = {"model": "m", "env": "e", "env_label": "e", "decoder": decoder, "decoder_label": decoder,
              "problem_id": pid, "seed": 0, "variant": variant or {}, "correct": False, "score": 0.0,
              "latency_s": 1.0, "decode_s": 1.0, "new_tokens": 1, "cost_s": 1.0}
    if answers is not None:
        record |= {"n_samples": len(answers), "sample_answers": answers, "sample_correct": correct}
    if logprobs is not None:
        record["sample_logprobs"] = logprobs
    return record


HAND_MADE = [
    _record("self_consistency", "p1", ANSWERS, CORRECT, LOGPROBS),
    # c = 2 of 4; "5" votes alone until "6" outnumbers it at k = 4.
    _record("self_consistency", "p2", ["5", None, "6", "6"], [False, False, True, True], [-1.0] * 4),
    _record("best_of_n", "p1", ANSWERS, CORRECT),  # best-of-N's records keep no log-probabilities
    _record("greedy", "p1", None, None),
]


def _row(summary: pd.DataFrame, decoder: str) -> pd.Series:
    return summary.set_index("decoder").loc[decoder]


def test_summary_columns_of_hand_made_records():
    summary = summarize(pd.DataFrame(HAND_MADE))
    sc, best, greedy = (_row(summary, d) for d in ("self_consistency", "best_of_n", "greedy"))
    own = [c for c in summary.columns if c.startswith(("pass@", "maj@"))]
    assert own == ["pass@1", "pass@2", "pass@4", "maj@1", "maj@2", "maj@4"]  # N = 4: k = 1, 2, 4
    # Both problems have c = 2 of 4: pass@1 = 1/2, pass@2 = 1 - C(2,2)/C(4,2) = 5/6, pass@4 = 1.
    assert [sc["pass@1"], sc["pass@2"], sc["pass@4"]] == pytest.approx([0.5, 5 / 6, 1.0])
    # p1: right, right, wrong (the tie broken by log-probability); p2: "5", "5", then "6".
    assert [sc["maj@1"], sc["maj@2"], sc["maj@4"]] == pytest.approx([0.5, 0.5, 0.5])
    assert [best["pass@1"], best["pass@2"], best["pass@4"]] == pytest.approx([0.5, 5 / 6, 1.0])
    assert [best["maj@1"], best["maj@2"], best["maj@4"]] == pytest.approx([1.0, 1.0, 1.0])  # ties: "3" first
    assert greedy[own].isna().all()


def test_the_report_asks_for_its_own_ks():
    summary = summarize(pd.DataFrame(HAND_MADE), ks=[8, 3, 1])
    sc = _row(summary, "self_consistency")
    assert [c for c in summary.columns if c.startswith(("pass@", "maj@"))] == \
        ["pass@1", "pass@3", "pass@8", "maj@1", "maj@3", "maj@8"]
    # pass@3: fewer than 3 wrong in both; maj@3: p1 "4" twice, p2 "5" and "6" tied at equal log-probs: "5" first.
    assert [sc["pass@1"], sc["pass@3"], sc["maj@1"], sc["maj@3"]] == pytest.approx([0.5, 1.0, 0.5, 0.0])
    assert math.isnan(sc["pass@8"]) and math.isnan(sc["maj@8"])  # more than the 4 samples drawn


def test_records_without_grades_give_no_columns():
    ungraded = [_record("self_consistency", "p1", ANSWERS, None, LOGPROBS)]  # lm-eval without a verifier
    summary = summarize(pd.DataFrame(ungraded))
    assert not [c for c in summary.columns if c.startswith(("pass@", "maj@"))]


class FirstCharKind:
    """Answers graded by the kind of the completion's first character (right: a lower-case letter).
    The tiny model's samples then fall on four answers: they agree, split and tie, and are right
    often enough (about a quarter) for pass@k and maj@k to differ from one another and from 0."""

    has_verifier = True

    def __init__(self, name: str, extraction: str = "strict") -> None:
        self.name, self.extraction = name, extraction

    def problems(self, n: int, seed: int, start: int = 0) -> list[Problem]:
        return [Problem(env=self.name, problem_id=problem_id(self.name, seed, i), index=i, seed=seed,
                        question=f"Say anything ({i}).", gold="lower", metadata={}) for i in range(start, start + n)]

    def user_prompt(self, problem: Problem) -> str:
        return problem.question

    def verify(self, problem: Problem, completion: str) -> Verdict:
        first = completion.strip()[:1]
        kind = (None if not first else "lower" if first.islower() else "upper" if first.isupper()
                else "digit" if first.isdigit() else "other")
        right = kind == problem.gold
        return Verdict(answer=kind, score=float(right), correct=right, format_ok=kind is not None, error=None)

    def feedback(self, problem, verdict, policy, templates=None) -> str:
        return "right" if verdict.correct else "wrong"

    def config(self) -> dict:
        return {}


class FirstCharFamily:
    def names(self) -> list[str]:
        return ["first_char_kind"]

    def make(self, name: str, /, *, extraction: str = "strict", **config) -> FirstCharKind:
        return FirstCharKind(name, extraction)


SWEEP = {"models": [], "seeds": [0], "max_new_tokens": 2, "batch_size": 8,
         "envs": [{"name": "first_char_kind", "n": 12}],
         "decoders": [{"name": "greedy"},
                      {"name": "self_consistency", "config": {"n": [1, 2, 4, 8], "temperature": 1.5}},
                      {"name": "best_of_n", "config": {"n": [2, 8], "temperature": 1.5}}]}


@pytest.fixture(scope="module")
def swept(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pass-at-k") / "s"
    with registered_env_family("toy_first_char", FirstCharFamily()):
        run_sweep(parse_config(SWEEP | {"models": [str(tiny_model_dir)]}), out, progress=False)
        yield out


def _by_hand(records: list[dict], k: int) -> tuple[float, float]:
    """(pass@k, maj@k) of records from their sample lists: C(n-c, k) / C(n, k) in exact integers, and
    self-consistency's vote over the first k samples."""
    passes, majs = [], []
    for r in records:
        n, c = len(r["sample_correct"]), sum(r["sample_correct"])
        passes.append(1 - math.comb(n - c, k) / math.comb(n, k))
        majs.append(r["sample_correct"][majority_vote(r["sample_answers"][:k],
                                                      (r.get("sample_logprobs") or [0.0] * n)[:k])])
    return sum(passes) / len(passes), sum(majs) / len(majs)


def test_a_sweep_shows_pass_and_maj_at_k_and_the_figure(swept):
    summary = pd.read_csv(swept / "summary.csv")
    assert [c for c in summary.columns if c.startswith(("pass@", "maj@"))] == \
        ["pass@1", "pass@2", "pass@4", "pass@8", "maj@1", "maj@2", "maj@4", "maj@8"]
    records = read_records(swept)
    for _, row in summary.iterrows():
        own = [r for r in records if r["decoder_label"] == row["decoder_label"]
               and r["variant"].get("n") == (None if pd.isna(row["variant"]) else int(row["variant"][2:]))]
        if row["decoder"] == "greedy":
            assert row[["pass@1", "maj@1"]].isna().all()
            continue
        n = own[0]["n_samples"]
        for k in (1, 2, 4, 8):
            if k > n:
                assert math.isnan(row[f"pass@{k}"]) and math.isnan(row[f"maj@{k}"])
            else:
                assert (row[f"pass@{k}"], row[f"maj@{k}"]) == pytest.approx(_by_hand(own, k))
    sc = summary[summary["decoder"] == "self_consistency"].set_index("variant")
    best = summary[summary["decoder"] == "best_of_n"].set_index("variant")
    assert 0 < sc.loc["n=8", "pass@1"] < sc.loc["n=8", "pass@2"] < sc.loc["n=8", "pass@8"] < 1  # not all right or wrong
    for k in (1, 2, 4, 8):  # maj@k of N = 8 votes over the samples an n = k run draws: exactly its accuracy
        assert sc.loc["n=8", f"maj@{k}"] == pytest.approx(sc.loc[f"n={k}", "accuracy"])
    for n in (2, 8):
        assert sc.loc[f"n={n}", f"pass@{n}"] == pytest.approx(best.loc[f"n={n}", "pass_at_n"])  # any of N right
        # Best-of-N draws self-consistency's samples: the same pass@k.
        ks = [f"pass@{k}" for k in (1, 2, 4, 8) if k <= n]
        assert best.loc[f"n={n}", ks].tolist() == pytest.approx(sc.loc[f"n={n}", ks].tolist())
    html = (swept / "report.html").read_text()
    assert "Accuracy vs k (maj@k, pass@k)" in html and ">maj@8<" in html and ">pass@2<" in html


def test_same_samples_same_numbers_and_ks_from_the_command_line(swept, capsys):
    before = pd.read_csv(swept / "summary.csv")
    write_report(swept)
    again = pd.read_csv(swept / "summary.csv")
    columns = [c for c in before.columns if c.startswith(("pass@", "maj@"))]
    pd.testing.assert_frame_equal(before[columns], again[columns])
    assert main(["report", str(swept), "--ks", "3,1"]) == 0
    chosen = pd.read_csv(swept / "summary.csv")
    assert [c for c in chosen.columns if c.startswith(("pass@", "maj@"))] == ["pass@1", "pass@3", "maj@1", "maj@3"]
    assert "Accuracy vs k (maj@k, pass@k)" in (swept / "report.html").read_text()
    pd.testing.assert_series_equal(chosen["pass@1"], before["pass@1"])
    for n in (4, 8):
        row = chosen[(chosen["decoder"] == "self_consistency") & (chosen["variant"] == f"n={n}")].iloc[0]
        records = [r for r in read_records(swept) if r["decoder"] == "self_consistency" and r["variant"] == {"n": n}]
        assert (row["pass@3"], row["maj@3"]) == pytest.approx(_by_hand(records, 3))
    assert main(["report", str(swept), "--ks", "1,x"]) == 2
    assert "--ks (='1,x') must be whole numbers >= 1" in capsys.readouterr().err
    write_report(swept)  # the folder's report as the sweep wrote it, for any test after this one
