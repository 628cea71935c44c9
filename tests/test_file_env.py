"""Problem files of your own as environments (`file:PATH`, envs/file_dataset.py) and their answer
checkers (envs/checkers.py): every format, column mapping, stable ids, each checker, each bad
input's message, feedback, resuming after the file changed, sweeps, lm-eval tasks and pickling.
Decoding uses the tiny model."""

from __future__ import annotations

import csv
import functools
import json
import os
import pickle
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from envs import available_envs, env_families, get_env, is_env_name  # noqa: E402
from envs.checkers import make_checker, read_number  # noqa: E402
from envs.registry import family_of  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [
    {"id": "p1", "question": "What is half of 1?", "answer": "\\frac{1}{2}", "topic": "fractions", "level": 1},
    {"id": "p2", "question": "What is 2 + 2?", "answer": "4", "topic": "sums", "level": 1},
    {"id": "p3", "question": "How long is 3 m plus 4 m?", "answer": "7 m", "topic": "units", "level": 2},
]
EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "data" / "word-problems.jsonl"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def env_of(path: Path, **config):
    return get_env(f"file:{path}", **config)


def error_of(path: Path, **config) -> str:
    with pytest.raises(ValueError) as info:
        env = env_of(path, **config)
        env.problems(len(env), 0)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def jsonl(tmp_path):
    return write_jsonl(tmp_path / "p.jsonl", ROWS)


def _answer(text: str) -> str:
    return f"Let me think. <answer>{text}</answer>"


# -- formats, columns and ids ------------------------------------------------------------


def _formats(tmp_path) -> dict[str, Path]:
    import datasets
    import pandas as pd

    paths = {"jsonl": write_jsonl(tmp_path / "p.jsonl", ROWS), "csv": write_csv(tmp_path / "p.csv", ROWS)}
    pd.DataFrame(ROWS).to_parquet(tmp_path / "p.parquet")
    paths["parquet"] = tmp_path / "p.parquet"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    paths["datasets"] = tmp_path / "ds"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:1]),
                          "test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dsd"))
    paths["datasets dict (test split)"] = tmp_path / "dsd"
    return paths


def test_every_format_gives_the_same_problems(tmp_path):
    seen = {}
    for kind, path in _formats(tmp_path).items():
        problems = env_of(path).problems(3, 0)
        seen[kind] = [(p.question, p.gold, p.metadata["id"], p.index) for p in problems]
        assert [p.problem_id for p in problems] == [f"file:{path}#p{i}" for i in (1, 2, 3)]
        assert [p.columns for p in problems] == [p.metadata["columns"] for p in problems]
        topics = [p.columns["topic"] for p in problems]
        assert topics == ["fractions", "sums", "units"], kind
        # CSV holds text only; the others keep the column's type.
        assert problems[2].metadata["columns"]["level"] == ("2" if kind == "csv" else 2)
    assert len(set(map(tuple, seen.values()))) == 1
    assert seen["jsonl"][0] == ("What is half of 1?", "\\frac{1}{2}", "p1", 0)
    lines = [p.metadata["location"] for p in env_of(tmp_path / "p.csv").problems(3, 0)]
    assert lines == ["line 2", "line 3", "line 4"]  # the header is line 1
    assert env_of(tmp_path / "p.parquet").problems(1, 0, start=2)[0].metadata["location"] == "row 2"


def test_a_datasets_folder_of_several_splits_takes_split(tmp_path):
    import datasets

    datasets.DatasetDict({"a": datasets.Dataset.from_list(ROWS), "b": datasets.Dataset.from_list(ROWS[:2])}) \
        .save_to_disk(str(tmp_path / "two"))
    assert len(env_of(tmp_path / "two", split="b").problems(2, 0)) == 2
    assert env_of(tmp_path / "two", split="b").config()["split"] == "b"
    message = error_of(tmp_path / "two")
    assert "a datasets folder of 2 splits (a, b)" in message and "split=a" in message
    assert "no split 'c'" in error_of(tmp_path / "two", split="c")


def test_columns_are_mapped_by_the_env_config_and_the_rest_kept(tmp_path):
    rows = [{"qid": 7, "prompt": "Say hi.", "solution": "hi", "source": "book"}]
    env = env_of(write_jsonl(tmp_path / "m.jsonl", rows), question="prompt", answer="solution", id="qid")
    (problem,) = env.problems(1, 0)
    assert (problem.question, problem.gold, problem.metadata["id"]) == ("Say hi.", "hi", "7")
    assert problem.metadata["columns"] == {"source": "book"}
    assert env.config() == {"question": "prompt", "answer": "solution", "id": "qid", "checker": "exact",
                            "split": None, "ignore_case": False}
    assert env.user_prompt(problem).startswith("Say hi.\n\n") and "<answer>" in env.user_prompt(problem)
    # The resolved config builds the same environment (lm-eval documents carry it).
    assert get_env(env.name, **env.config()).problems(1, 0) == [problem]


def test_ids_come_from_the_id_column_else_from_the_question(tmp_path, jsonl):
    assert [p.metadata["id"] for p in env_of(jsonl).problems(3, 0)] == ["p1", "p2", "p3"]
    hashed = [p.metadata["id"] for p in env_of(jsonl, id="").problems(3, 0)]
    assert all(re.fullmatch(r"q-[0-9a-f]{12}", i) for i in hashed) and len(set(hashed)) == 3
    # A question's id does not depend on where its row is, nor on the other rows.
    reordered = [ROWS[2], ROWS[0], ROWS[1], {"question": "New?", "answer": 1}]
    shuffled = write_jsonl(tmp_path / "s.jsonl", [{k: v for k, v in r.items() if k != "id"} for r in reordered])
    again = {p.question: p.metadata["id"] for p in env_of(shuffled).problems(4, 0)}
    assert [again[r["question"]] for r in ROWS] == hashed
    # Problem ids are made of the own ids, so they too stay with their rows.
    assert {p.question: p.problem_id for p in env_of(shuffled).problems(4, 0)}[ROWS[0]["question"]] == \
        f"file:{shuffled}#{hashed[0]}"


def test_ids_with_the_record_keys_separator_are_escaped(tmp_path):
    from envs.file_dataset import own_problem_id

    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a|1", "question": "Q1?", "answer": 1},
                                             {"id": "a%7C1", "question": "Q2?", "answer": 2}])
    ids = [p.problem_id for p in env_of(path).problems(2, 0)]
    assert ids == [f"file:{path}#a%7C1", f"file:{path}#a%257C1"] and "|" not in "".join(ids)
    assert own_problem_id("file:x", "%|") == "file:x#%25%7C"


def test_problems_are_the_first_n_rows_in_file_order_for_every_seed(jsonl):
    env = env_of(jsonl)
    first, other = env.problems(2, 0), env.problems(2, 5)
    assert [p.question for p in first] == [p.question for p in other] == [r["question"] for r in ROWS[:2]]
    assert [p.problem_id for p in other] == [p.problem_id for p in first] == [f"file:{jsonl}#p1", f"file:{jsonl}#p2"]
    assert {p.seed for p in other} == {5}
    assert env.problems(1, 0, start=2)[0].question == ROWS[2]["question"]
    assert env_of(jsonl).problems(3, 0) == env.problems(3, 0)  # rebuilt: the same problems


# -- checkers ------------------------------------------------------------------------------


def _score(env, problem, text):
    return env.verify(problem, _answer(text)).score


def test_math_checker_takes_fractions_latex_and_decimals_as_one_value(tmp_path):
    golds = ["\\frac{1}{2}", "0.5", "1/2", "$\\frac{1}{2}$"]
    path = write_jsonl(tmp_path / "m.jsonl", [{"question": f"Q{i}", "answer": g} for i, g in enumerate(golds)])
    env = env_of(path, checker="math")
    for problem in env.problems(len(golds), 0):
        for answer in ("\\frac{1}{2}", "0.5", "1/2", "$0.5$", "\\boxed{\\frac{1}{2}}"):
            assert _score(env, problem, answer) == 1.0, (problem.gold, answer)
        for answer in ("0.25", "2", "1/3"):
            assert _score(env, problem, answer) == 0.0, (problem.gold, answer)
    units = env_of(write_jsonl(tmp_path / "u.jsonl", [{"question": "Q", "answer": "7 m"}]), checker="math")
    assert _score(units, units.problems(1, 0)[0], "7") == 1.0


def test_exact_checker_reads_spacing_as_one_space_and_may_ignore_case(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"question": "Capital of France?", "answer": "Paris  City"}])
    env = env_of(path)
    (problem,) = env.problems(1, 0)
    assert _score(env, problem, " Paris City ") == 1.0
    assert _score(env, problem, "paris city") == 0.0
    folded = env_of(path, checker="exact", ignore_case="true")
    assert _score(folded, problem, "PARIS city") == 1.0 and folded.config()["ignore_case"] is True


def test_numeric_checker_reads_numbers_in_many_forms_within_a_tolerance(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"question": "Q", "answer": "0.5"}, {"question": "R", "answer": 1200}])
    env = env_of(path, checker="numeric")
    half, big = env.problems(2, 0)
    for answer in ("1/2", "\\frac{1}{2}", "0.50", "$0.5$", "0.5 kg", "\\boxed{0.5}"):
        assert _score(env, half, answer) == 1.0, answer
    for answer in ("1,200", "1200.0", "$1200", "1.2e3", "1200 dollars"):
        assert _score(env, big, answer) == 1.0, answer
    assert _score(env, half, "0.51") == 0.0
    assert _score(env_of(path, checker="numeric", tolerance="0.02"), half, "0.51") == 1.0
    assert _score(env_of(path, checker="numeric", rel_tolerance=0.01), big, "1210") == 1.0
    verdict = env.verify(half, _answer("0.7"))
    assert env.feedback(half, verdict, "verifier").endswith("The answer is too high.")
    assert env.feedback(half, env.verify(half, _answer("many")), "verifier").endswith("The answer is not a number.")
    assert read_number("1 1/2") == read_number("3/2") == read_number("1.5")
    assert read_number("3 apples and 4 pears") is None and read_number("1/0") is None


def test_regex_checker_matches_the_whole_answer(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"question": "A colour?", "answer": "(red|blue)( colou?r)?"}])
    env = env_of(path, checker="regex")
    (problem,) = env.problems(1, 0)
    assert _score(env, problem, "blue color") == 1.0 and _score(env, problem, "red") == 1.0
    assert _score(env, problem, "dark red") == 0.0 and _score(env, problem, "Red") == 0.0
    assert _score(env_of(path, checker="regex", ignore_case=True), problem, "Red") == 1.0


def test_a_function_of_the_users_scores_with_its_message(tmp_path, jsonl):
    (tmp_path / "checks.py").write_text(
        "def close(answer, gold, columns):\n"
        "    if columns['topic'] == 'sums':\n"
        "        return (0.5, 'Half right.') if answer.strip() == '5' else float(answer.strip() == gold)\n"
        "    return answer.strip() == gold\n"
        "def two(answer, gold):\n"
        "    return 1\n"
    )
    env = env_of(jsonl, checker=f"{tmp_path}/checks.py:close")
    _, sums, _ = env.problems(3, 0)
    assert _score(env, sums, "4") == 1.0
    verdict = env.verify(sums, _answer("5"))
    assert (verdict.score, verdict.correct, verdict.error) == (0.5, False, None)
    assert env.feedback(sums, verdict, "verifier").endswith("Score: 0.50. Half right.")
    assert _score(env_of(jsonl, checker=f"{tmp_path}/checks.py:two"), sums, "anything") == 1.0
    stdlib = env_of(jsonl, checker="operator:eq")  # MODULE:FUNCTION, fn(answer, gold)
    assert _score(stdlib, sums, "4") == 1.0 and _score(stdlib, sums, "5") == 0.0
    assert env.config()["checker"] == f"{tmp_path}/checks.py:close"


def test_a_checker_that_raises_scores_that_answer_zero_and_says_where(tmp_path, jsonl):
    (tmp_path / "checks.py").write_text(
        "def fragile(answer, gold):\n"
        "    if answer == 'boom':\n"
        "        raise ZeroDivisionError('cannot divide')\n"
        "    return 'yes' if answer == 'odd' else answer == gold\n"
    )
    env = env_of(jsonl, checker=f"{tmp_path}/checks.py:fragile")
    _, sums, _ = env.problems(3, 0)
    verdict = env.verify(sums, _answer("boom"))
    assert (verdict.score, verdict.correct, verdict.answer) == (0.0, False, "boom")
    assert verdict.error == (f"ZeroDivisionError: cannot divide (checker {tmp_path}/checks.py:fragile, {jsonl}, "
                             "line 2, column 'answer')")
    assert env.feedback(sums, verdict, "verifier") == "Your answer is incorrect. Extracted answer: boom. Score: 0.00."
    odd = env.verify(sums, _answer("odd"))
    assert odd.score == 0.0 and "returned 'yes', not a score in [0, 1] or (score, message)" in odd.error
    assert _score(env, sums, "4") == 1.0  # the next answer is scored as usual


# -- feedback ------------------------------------------------------------------------------


def test_every_feedback_policy(jsonl):
    env = env_of(jsonl, checker="math")
    problem = env.problems(1, 0)[0]
    right, wrong, missing = (env.verify(problem, text) for text in (_answer("0.5"), _answer("0.25"), "no tags"))
    assert env.feedback(problem, wrong, "none") == ""
    assert env.feedback(problem, right, "binary") == "Your answer is correct."
    assert env.feedback(problem, wrong, "binary") == "Your answer is incorrect."
    assert env.feedback(problem, missing, "binary").startswith("Format error: no answer in <answer> tags found")
    assert env.feedback(problem, wrong, "ground_truth") == \
        "Your answer is incorrect. The expected answer is: \\frac{1}{2}"
    text = env.feedback(problem, wrong, "verifier")
    assert text == ("Your answer is incorrect. Extracted answer: 0.25. Score: 0.00. "
                    "The answer is not equal to the expected value.")
    assert "frac" not in text and "0.5" not in text  # never the gold
    assert env.feedback(problem, right, "verifier") == "Your answer is correct. Extracted answer: 0.5. Score: 1.00."


def test_flexible_extraction_reads_untagged_answers(jsonl):
    env = get_env(f"file:{jsonl}", extraction="flexible", checker="math")
    problem = env.problems(1, 0)[0]
    verdict = env.verify(problem, "Half of 1 is 1/2, so the answer is 1/2.")
    assert (verdict.answer, verdict.correct, verdict.format_ok) == ("1/2", True, False)
    assert env_of(jsonl, checker="math").verify(problem, "the answer is 1/2").answer is None


# -- bad input -----------------------------------------------------------------------------


def test_a_missing_file_or_folder_is_named_with_where_it_was_looked_for(tmp_path):
    message = error_of(tmp_path / "nope.jsonl")
    assert message.startswith(f"{tmp_path}/nope.jsonl: no such file or folder (looked for {tmp_path}/nope.jsonl)")
    assert "relative path is read from the current folder" in message
    (tmp_path / "notes.txt").write_text("x")
    assert "not a file type redumix reads (.txt)" in error_of(tmp_path / "notes.txt")
    (tmp_path / "folder").mkdir()
    assert "a folder, but not one saved by datasets' save_to_disk" in error_of(tmp_path / "folder")
    with pytest.raises(ValueError, match=r"names no file\. Fix: write file:PATH"):
        get_env("file:")


def test_missing_columns_are_named_with_the_columns_there_are(tmp_path, jsonl):
    rows = [{"question": r["question"], "solution": r["answer"]} for r in ROWS]
    message = error_of(write_csv(tmp_path / "c.csv", rows))
    assert message == (f"{tmp_path}/c.csv has no column 'answer' (its columns: question, solution). Fix: name the "
                       "answer column in the env config: answer=COLUMN (--env-config answer=COLUMN, or config: "
                       "{answer: COLUMN} in a sweep)")
    assert "no column 'prompt'" in error_of(tmp_path / "c.csv", question="prompt", answer="solution")
    line = error_of(write_jsonl(tmp_path / "j.jsonl", [ROWS[0], {"question": "Q?", "solution": "1", "id": "x"}]))
    assert line.startswith(f"{tmp_path}/j.jsonl, line 2: no column 'answer' (this row has: question, solution, id)")
    no_id = error_of(write_jsonl(tmp_path / "i.jsonl", [ROWS[0], {"question": "Q?", "answer": "1"}]))
    assert "line 2: no column 'id'" in no_id and "set id= (empty)" in no_id
    assert "no column 'key'" in error_of(jsonl, id="key")


def test_empty_cells_and_empty_files(tmp_path):
    assert error_of(write_jsonl(tmp_path / "a.jsonl", [{"question": "Q", "answer": None}])) == (
        f"{tmp_path}/a.jsonl, line 1, column 'answer': empty. Fix: give every problem its answer")
    assert "line 1, column 'question': a list, not text" in error_of(
        write_jsonl(tmp_path / "b.jsonl", [{"question": ["Q"], "answer": "1"}]))
    assert "line 3, column 'question': empty" in error_of(write_csv(tmp_path / "c.csv", [
        {"question": "Q", "answer": "1"}, {"question": " ", "answer": "2"}]))
    (tmp_path / "e.jsonl").write_text("\n\n")
    assert error_of(tmp_path / "e.jsonl").startswith(f"{tmp_path}/e.jsonl holds no problems (no rows)")
    (tmp_path / "h.csv").write_text("question,answer\n")
    assert "holds no problems" in error_of(tmp_path / "h.csv")


def test_duplicate_ids_name_both_rows(tmp_path):
    rows = [ROWS[0], ROWS[1], ROWS[2] | {"id": "p1"}]
    assert error_of(write_jsonl(tmp_path / "d.jsonl", rows)) == (
        f"{tmp_path}/d.jsonl, line 1 and line 3, column 'id': the same id 'p1'. Fix: give each row its own id")
    same = [{"question": "Same?", "answer": "1"}, {"question": "Other?", "answer": "2"},
            {"question": "Same?", "answer": "3"}]
    message = error_of(write_csv(tmp_path / "d.csv", same))
    assert message.startswith(f"{tmp_path}/d.csv, line 2 and line 4, column 'question': the same question ('Same?')")
    assert "Fix: remove the repeated row, or add an id column" in message


def test_rows_that_cannot_be_read_are_named(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps(ROWS[0]) + '\n{"question": "Q", "answer": 1\n')
    assert error_of(tmp_path / "bad.jsonl") == (
        f"{tmp_path}/bad.jsonl, line 2: not valid JSON (Expecting ',' delimiter, column 30). "
        "Fix: correct the line, or delete it")
    (tmp_path / "list.jsonl").write_text('["Q", "1"]\n')
    assert "line 1: a list, not an object of columns" in error_of(tmp_path / "list.jsonl")
    (tmp_path / "bad.csv").write_text("question,answer\nWhat is 1, 2?,3\n")
    assert error_of(tmp_path / "bad.csv").startswith(f"{tmp_path}/bad.csv, line 2: 3 fields, but the header has 2")
    (tmp_path / "latin.jsonl").write_bytes(b'{"question": "caf\xe9", "answer": "1"}\n')
    assert "line 1: not UTF-8 text" in error_of(tmp_path / "latin.jsonl")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    assert error_of(tmp_path / "broken.parquet").startswith(f"{tmp_path}/broken.parquet: not a Parquet file pyarrow")


def test_a_gold_the_checker_cannot_use_is_named_when_problems_are_drawn(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "Q", "answer": "3"}, {"question": "R", "answer": "lots"}])
    env = env_of(path, checker="numeric")
    assert len(env.problems(1, 0)) == 1  # only the rows asked for are checked
    with pytest.raises(ValueError) as info:
        env.problems(2, 0)
    assert str(info.value) == (f"{path}, line 2, column 'answer': 'lots' is not a number (checker numeric). "
                               "Fix: correct the answer or choose another checker")
    regex = write_jsonl(tmp_path / "x.jsonl", [{"question": "Q", "answer": "(a"}])
    assert "line 1, column 'answer': '(a' is not a valid regular expression" in error_of(regex, checker="regex")
    with pytest.raises(ValueError, match=r"holds 2 problems; n=5 from problem 0 asks past its end\. Fix: n at most 2"):
        env.problems(5, 0)


@pytest.mark.parametrize("config, expected", [
    ({"questoin": "q"}, "Unknown config key 'questoin' for environment 'file:{path}'. Did you mean: question?"),
    ({"checker": "maths"}, "checker (='maths') is not a checker. Did you mean: math?"),
    ({"checker": "exact", "tolerance": "0.1"}, "tolerance (='0.1') applies to checker=numeric, not checker=exact"),
    ({"checker": "numeric", "tolerance": "-1"}, "tolerance (='-1') must be a finite number >= 0"),
    ({"ignore_case": "maybe"}, "ignore_case (='maybe') must be true or false"),
    ({"split": "test"}, "split (='test') applies to a datasets folder only"),
    ({"checker": "no_such_module_here:f"}, "module 'no_such_module_here' cannot be imported"),
    ({"checker": "missing.py:f"}, "no file missing.py"),
    ({"checker": "operator:no_such"}, "operator has no 'no_such'"),
    ({"checker": "math:pi"}, "math has a non-callable 'pi'"),
    ({"checker": "operator:not_"}, "must take (answer, gold) or (answer, gold, columns)"),
])
def test_bad_config_is_one_line_naming_the_key(jsonl, config, expected):
    with pytest.raises(ValueError) as info:
        env_of(jsonl, **config)
    assert expected.format(path=jsonl) in str(info.value) and "\n" not in str(info.value)


def test_a_checker_file_that_fails_to_import_is_named(tmp_path, jsonl):
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    with pytest.raises(ValueError, match=r"broken\.py failed to import: ModuleNotFoundError"):
        env_of(jsonl, checker=f"{tmp_path}/broken.py:f")
    with pytest.raises(ValueError, match=r"must be one of exact, numeric, regex, math or MODULE:FUNCTION"):
        make_checker(3, {})


def test_an_edited_file_is_read_again(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    assert env_of(path).problems(1, 0)[0].question == ROWS[0]["question"]
    write_jsonl(path, [ROWS[0] | {"question": "What is half of one?"}, *ROWS[1:]])
    os.utime(path, ns=(1, 1))  # a new modification time even where the clock is coarse
    assert env_of(path).problems(1, 0)[0].question == "What is half of one?"


# -- the registry, sweeps, pickling ------------------------------------------------------------


def test_the_family_takes_file_names_it_cannot_list(jsonl, capsys):
    name = f"file:{jsonl}"
    assert is_env_name(name) and family_of(name) == "file" and name not in available_envs()
    assert is_env_name("basic_arithmetic") and not is_env_name("no_such_env")
    assert not any(env.startswith("file:") for env in available_envs())
    (family,) = [f for f in env_families() if f.name == "file"]
    assert family.envs == () and family.description.startswith("file:PATH (your own JSONL/CSV/Parquet file")
    from harness.cli import main

    assert main(["list", "envs", "--format", "grouped"]) == 0
    assert "file (built in, 0 environments): file:PATH (your own JSONL/CSV/Parquet file or datasets folder" \
        in capsys.readouterr().out


def test_an_env_pickles_and_is_rebuilt_by_name(tmp_path, jsonl):
    (tmp_path / "checks.py").write_text("def same(answer, gold):\n    return answer == gold\n")
    env = get_env(f"file:{jsonl}", extraction="flexible", checker=f"{tmp_path}/checks.py:same")
    copy = pickle.loads(pickle.dumps(env))
    assert copy is not env and (copy.name, copy.extraction, copy.config()) == (env.name, env.extraction, env.config())
    problems = env.problems(3, 0)
    assert copy.problems(3, 0) == problems
    problem = pickle.loads(pickle.dumps(problems[1]))  # a Ray unit carries its problems
    assert copy.verify(problem, "<answer>4</answer>") == env.verify(problems[1], "<answer>4</answer>")


def _file_sweep(model_dir, path, n=3) -> dict:
    return {"name": "own", "models": [str(model_dir)], "seeds": [0], "max_new_tokens": 6, "batch_size": 3,
            "envs": [{"name": f"file:{path}", "n": n, "config": {"checker": "math"}}],
            "decoders": [{"name": "greedy"},
                         {"name": "redumix", "lambdas": [0.5], "feedback": ["verifier"],
                          "config": {"reflect_prompt": "Reflect.", "redo_prompt": "Redo.",
                                     "reflection_max_new_tokens": 4}}]}


def test_sweep_configs_take_file_names_and_name_a_missing_file(tiny_model_dir, tmp_path, jsonl):
    from harness.runs.sweep_config import ConfigError, parse_config

    config = parse_config(_file_sweep(tiny_model_dir, jsonl))
    assert config.envs[0].name == config.envs[0].label == f"file:{jsonl}"
    assert config.envs[0].resolved_config["checker"] == "math"
    with pytest.raises(ConfigError, match=r"envs\[0\]\.config: .*nope\.jsonl: no such file or folder"):
        parse_config(_file_sweep(tiny_model_dir, tmp_path / "nope.jsonl"))
    with pytest.raises(ConfigError, match=r"envs\[0\]\.n \(=4\) with seed 0: .*holds 3 problems"):
        parse_config(_file_sweep(tiny_model_dir, jsonl, n=4))
    with pytest.raises(ConfigError, match=r"envs\[0\]\.name \(='fil:x'\) is not an environment"):
        parse_config(_file_sweep(tiny_model_dir, jsonl) | {"envs": [{"name": "fil:x"}]})


def test_the_example_dataset_and_sweep_config():
    env = get_env(f"file:{EXAMPLE}", checker="math")
    problems = env.problems(len(env), 0)
    assert len(problems) >= 30 and len({p.metadata["id"] for p in problems}) == len(problems)
    for problem in problems:  # each gold is read by Math-Verify, and scores itself
        assert env.verify(problem, f"<answer>{problem.gold}</answer>").correct, problem.metadata["id"]
    assert {"\\frac{3}{8}", "60 km/h", "9\\pi"} <= {p.gold for p in problems}

    from harness.runs.sweep_config import load_config

    root = Path(__file__).resolve().parents[1]
    cwd = os.getcwd()
    os.chdir(root)  # the config's path is relative to the repository, where its command runs
    try:
        config = load_config("configs/own-data.yaml")
    finally:
        os.chdir(cwd)
    assert config.models == ("smollm2-135m",) and config.envs[0].name == "file:configs/data/word-problems.jsonl"


# -- decoding: runs, resume, sweeps ---------------------------------------------------------------


def _run(model_dir, path, out, n=3, **env_config):
    from harness.runs.runner import RunSpec, run

    spec = RunSpec(env=f"file:{path}", model=str(model_dir), n=n, max_new_tokens=4, batch_size=3,
                   env_config=env_config, extraction="flexible")
    return run(spec, out, progress=False)


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def test_a_run_on_a_file_and_a_checker_that_raises_on_every_answer(tiny_model_dir, tmp_path, jsonl):
    _run(tiny_model_dir, jsonl, tmp_path / "r", checker="math")
    records = _records(tmp_path / "r")
    assert [r["problem_id"] for r in records] == [f"file:{jsonl}#p{i}" for i in (1, 2, 3)]
    assert [r["columns"]["topic"] for r in records] == [r["topic"] for r in ROWS]  # the row's other columns
    assert [r["question"] for r in records] == [r["question"] for r in ROWS]
    assert [r["gold"] for r in records] == [r["answer"] for r in ROWS]
    (tmp_path / "checks.py").write_text("def boom(answer, gold):\n    raise RuntimeError('checker bug')\n")
    _run(tiny_model_dir, jsonl, tmp_path / "b", checker=f"{tmp_path}/checks.py:boom")
    records = _records(tmp_path / "b")
    assert len(records) == 3  # the run went on
    answered = [r for r in records if r["answer"] is not None]
    assert all(r["score"] == 0.0 and r["score_error"].startswith("RuntimeError: checker bug (checker ")
               for r in answered)


def test_resuming_after_the_file_changed_is_refused(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    out = tmp_path / "r"
    _run(tiny_model_dir, path, out, n=2)
    write_jsonl(path, [*ROWS, {"id": "p4", "question": "What is 5 - 1?", "answer": "4"}])
    _run(tiny_model_dir, path, out, n=2)  # rows added after them: the same problems, nothing to do
    assert len(_records(out)) == 2
    write_jsonl(path, [ROWS[0], ROWS[1] | {"question": "What is 2 + 3?"}, ROWS[2]])
    with pytest.raises(ValueError, match=r"whose question is 'What is 2 \+ 2\?', but that problem is now "
                                         r"'What is 2 \+ 3\?'.*choose a new --out"):
        _run(tiny_model_dir, path, out, n=2)
    write_jsonl(path, [ROWS[1] | {"id": "p1"}, ROWS[0] | {"id": "p2"}, ROWS[2]])  # ids swapped between questions
    with pytest.raises(ValueError, match=r"already holds a record of file:.*#p1\|- whose question is"):
        _run(tiny_model_dir, path, out, n=2)


def test_rows_moved_added_or_removed_keep_the_other_problems_records(tiny_model_dir, tmp_path):
    from harness.analysis.report import analyse_folder

    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    out = tmp_path / "r"
    _run(tiny_model_dir, path, out, n=2)
    before = {r["problem_id"]: r["completion"] for r in _records(out)}
    new_row = {"id": "p0", "question": "What is 5 - 1?", "answer": "4", "topic": "sums", "level": 1}
    write_jsonl(path, [ROWS[1], new_row, ROWS[0], ROWS[2]])  # p2 first, then a new row; p1 moved down
    summary = _run(tiny_model_dir, path, out, n=2)
    assert (summary.n, summary.skipped) == (1, 1)  # only the new row is decoded
    records = _records(out)
    assert {r["problem_id"]: r["completion"] for r in records}[f"file:{path}#p2"] == before[f"file:{path}#p2"]
    # The folder now holds the file's first two rows: p1's record is kept on disk but not counted.
    spec = json.loads((out / "spec.json").read_text())
    assert spec["problem_ids"] == [f"file:{path}#p2", f"file:{path}#p0"]
    assert sorted(analyse_folder(out).records["problem_id"]) == [f"file:{path}#p0", f"file:{path}#p2"]
    assert len(records) == 3


def test_a_folder_that_named_problems_by_position_goes_on_doing_so(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    out = tmp_path / "r"
    _run(tiny_model_dir, path, out, n=2)
    # As folders were written when problem files' problems were named by position: no "problem_ids".
    spec = json.loads((out / "spec.json").read_text())
    del spec["problem_ids"]
    (out / "spec.json").write_text(json.dumps(spec))
    first, second = _records(out)
    first["problem_id"] = f"file:{path}-s0-0"
    (out / "samples.jsonl").write_text(json.dumps(first) + "\n")  # the second problem left to do
    summary = _run(tiny_model_dir, path, out, n=2)
    assert (summary.n, summary.skipped) == (1, 1)  # the record kept, the other problem decoded
    again = _records(out)
    assert [r["problem_id"] for r in again] == [f"file:{path}-s0-0", f"file:{path}-s0-1"]
    assert again[1]["completion"] == second["completion"]
    assert "problem_ids" not in json.loads((out / "spec.json").read_text())


def test_a_sweep_over_a_file_resumes_and_refuses_an_edited_file(tiny_model_dir, tmp_path):
    from harness.runs.sweep import run_sweep
    from harness.runs.sweep_config import parse_config

    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    data, out = _file_sweep(tiny_model_dir, path, n=2), tmp_path / "s"
    first = run_sweep(parse_config(data), out, progress=False, write_report=False)
    assert first.new == 2 * 2 and run_sweep(parse_config(data), out, progress=False, write_report=False).new == 0
    records = _records(out)
    assert {r["env"] for r in records} == {f"file:{path}"}
    assert all(r["feedback_policy"] == "verifier" for r in records if r["decoder"] == "redumix")
    spec = json.loads((out / "spec.json").read_text())
    assert spec["problem_ids"] == {f"file:{path}": {"0": [f"file:{path}#p1", f"file:{path}#p2"]}}
    write_jsonl(path, [ROWS[1], ROWS[0], ROWS[2]])  # moved rows: the same problems, nothing to do
    assert run_sweep(parse_config(data), out, progress=False, write_report=False).new == 0
    write_jsonl(path, [ROWS[0] | {"question": "What is half of two?"}, *ROWS[1:]])
    with pytest.raises(ValueError, match=r"whose question is 'What is half of 1\?'.*--force-new"):
        run_sweep(parse_config(data), out, progress=False, write_report=False)


# -- lm-eval ---------------------------------------------------------------------------------------


def test_a_file_env_is_an_lm_eval_task(tmp_path, jsonl):
    from harness.lmeval import tasks

    env = f"file:{jsonl}"
    config = tasks.task_config(env)
    name = tasks.task_name(env)
    assert config["task"] == name and re.fullmatch(r"rg_file_[A-Za-z0-9_-]+", name) and name.endswith("p_jsonl")
    assert config["tag"] == [f"rg_{env}"]
    docs = tasks.make_dataset(**config["dataset_kwargs"], rg_config={env: {"checker": "math"}})["test"]
    assert [d["question"] for d in docs] == [r["question"] for r in ROWS]
    assert json.loads(docs[0]["env_config"])["checker"] == "math"
    assert tasks.process_results(docs[0], ["Half is <answer>0.5"]) == {"acc": 1.0, "score": 1.0, "format_ok": 1.0}
    assert tasks.process_results(docs[1], ["<answer>5"])["acc"] == 0.0
    assert tasks.process_results(docs[0], ["Half of one is 1/2."])["acc"] == 0.0  # strict: tags only
    flexible = tasks.make_dataset(**config["dataset_kwargs"], rg_config={env: {"checker": "math"}},
                                  rg_extraction="flexible")["test"]
    assert flexible[0]["extraction"] == "flexible"
    assert tasks.process_results(flexible[0], ["Half of one is 1/2."]) == {"acc": 1.0, "score": 1.0, "format_ok": 0.0}
    assert len(tasks.make_dataset(**config["dataset_kwargs"], rg_n=2)["test"]) == 2
    with pytest.raises(ValueError, match=r"no such file or folder"):
        tasks.check_task_names([f"rg_file:{tmp_path}/nope.jsonl"])


def test_redumix_lm_eval_runs_a_file_task_asked_for_by_its_env_name(tiny_model_dir, tmp_path, monkeypatch, jsonl):
    from harness.cli import main
    from harness.lmeval import tasks

    monkeypatch.setenv("REDUMIX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "lm-eval"
    metadata = json.dumps({"rg_config": {f"file:{jsonl}": {"checker": "math"}}})
    code = main(["lm-eval", "run", "--model", "redumix", "--model_args", f"model={tiny_model_dir}",
                 "--tasks", f"rg_file:{jsonl}", "--limit", "2", "--batch_size", "2", "--apply_chat_template",
                 "--gen_kwargs", "max_gen_toks=4", "--metadata", metadata, "--output_path", str(out), "--log_samples"])
    assert code == 0
    name = tasks.task_name(f"file:{jsonl}")
    (results,) = out.rglob("results_*.json")
    assert set(json.loads(results.read_text())["results"]) == {name}
    date = results.stem.removeprefix("results_")
    samples = [json.loads(line) for line in (results.parent / f"samples_{name}_{date}.jsonl").open()]
    assert [s["doc"]["problem_id"] for s in samples] == [f"file:{jsonl}#p1", f"file:{jsonl}#p2"]
    assert all(json.loads(s["doc"]["env_config"])["checker"] == "math" for s in samples)
    assert (results.parent / f"telemetry_{name}_{date}.jsonl").is_file()


def test_a_sweep_over_a_file_on_ray_actors_gives_the_local_records(tiny_model_dir, tmp_path):
    pytest.importorskip("ray")
    from harness.runs.ray_executor import RayExecutor, ray_connection
    from harness.runs.sweep import run_sweep
    from harness.runs.sweep_config import parse_config
    from tests.helpers.sweeps import without_timings

    (tmp_path / "checks.py").write_text("def same(answer, gold):\n    return answer.strip() == gold\n")
    data = _file_sweep(tiny_model_dir, write_jsonl(tmp_path / "p.jsonl", ROWS), n=2)
    data["envs"][0]["config"] = {"checker": f"{tmp_path}/checks.py:same"}  # imported again on the actors
    config = parse_config(data)
    run_sweep(config, tmp_path / "local", progress=False, write_report=False)
    with ray_connection(num_cpus=1):
        result = run_sweep(config, tmp_path / "ray", progress=False, write_report=False,
                           executor=functools.partial(RayExecutor, actors=1, cpus_per_actor=1))
    assert result.failed_units == [] and result.new == 4
    assert without_timings(_records(tmp_path / "ray")) == without_timings(_records(tmp_path / "local"))
