"""Problem sets users bring: the environment family `file`, whose environments are named
``file:PATH``.

PATH (relative to the current folder, `~` expanded) is a JSONL file (one JSON object a line;
`.jsonl` or `.ndjson`), a CSV file with a header row (`.csv`), a Parquet file (`.parquet`) or a
folder written by `datasets`' `save_to_disk` (a `DatasetDict` folder needs `split` unless it has
one split, or a split named `test`).

Env config (all optional):

* ``question`` / ``answer``: the columns of the question text and of the reference answer
  (default "question" and "answer"); answers that are not text are written as text (``0.5``,
  ``3``; lists and objects as JSON);
* ``id``: the column of each problem's own id (default "id" when there is such a column; empty
  for none). Without one, a problem's id is a hash of its question, ``q-<12 hex digits>``;
* ``checker``: how answers are scored, ``exact`` (default), ``numeric``, ``regex``, ``math`` or a
  function of your own, with its options ``tolerance``, ``rel_tolerance``, ``ignore_case``
  (see `envs.checkers`);
* ``split``: the split of a `DatasetDict` folder.

Problems: `problems(n, seed)` gives the first n rows in file order, the same for every seed
(the seed does not shuffle them; seeds still draw their own sampling streams). A problem's own
id (the id column, else the question's hash) is ``metadata["id"]``, unique in the file, and its
`problem_id` is ``<env>#<own id>`` (``file:data.jsonl#p7``; a ``|`` or ``%`` in an id is written
``%7C`` / ``%25``, as record keys split at ``|``): rows moved, added or removed between two runs
of one folder leave every other problem's records in place. ``metadata["location"]`` says where
its row is (``line 5``: lines of JSONL and CSV files count from 1, as editors number them;
``row 4``: rows of Parquet files and datasets folders count from 0, as pandas and datasets index
them), and `columns` (also ``metadata["columns"]``) holds the row's other columns, which every
record of the problem carries. A question edited under the same id is caught when resuming: a
kept record whose question is no longer its problem's stops the run
(`harness.runs.held_questions`).

Every mistake in the file or the config is one line naming the file, the line or row and the
column, with the fix. Grading never raises because of an answer: a checker that raises scores
that answer 0 with the error in the verdict's `error` (a record's `score_error`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.naming import did_you_mean

from .answer import ANSWER_INSTRUCTION, check_extraction_mode, extract_answer, extract_answer_flexible
from .base import Problem, Verdict
from .checkers import OPTIONS, Check, make_checker
from .feedback import render_feedback
from .jsonable import to_jsonable
from .registry import register_env_family

PREFIX = "file:"
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
FORMS = "a .jsonl, .csv or .parquet file, or a folder saved by datasets' save_to_disk"
COLUMN_KEYS = ("question", "answer", "id")
CONFIG_KEYS = (*COLUMN_KEYS, "checker", "split", *OPTIONS)
DEFAULT_CHECKER = "exact"
_CACHE_SIZE = 8  # files kept read, by path and modification time
_CHECKS_KEPT = 4096  # answers' checks kept for feedback after verify


class FileEnv:
    """One problem file as an environment (see the module docstring); build it with
    `envs.get_env("file:PATH", **config)`."""

    has_verifier = True

    def __init__(self, name: str, *, extraction: str = "strict", **config: Any) -> None:
        check_extraction_mode(extraction)
        self.name, self.extraction = name, extraction
        self.path_text = _path_text(name)
        self.path = Path(self.path_text).expanduser()
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"Unknown config key {unknown[0]!r} for environment {name!r}."
                             f"{did_you_mean(unknown[0], CONFIG_KEYS)} Valid keys: {', '.join(CONFIG_KEYS)}")
        columns = {key: _column_name(config.get(key, key), key) for key in ("question", "answer")}
        id_given = "id" in config
        id_column = _column_name(config["id"], "id", optional=True) if id_given else "id"
        checker_spec = config.get("checker", DEFAULT_CHECKER)
        checker_spec = DEFAULT_CHECKER if checker_spec is None else checker_spec
        try:
            self.checker = make_checker(checker_spec, {k: config[k] for k in OPTIONS if k in config})
        except ValueError as err:
            raise ValueError(f"Environment {name!r}: {err}") from None
        source = _read(self.path, self.path_text, config.get("split"))
        self.split = source.split
        if id_given and id_column is not None:
            source.require(id_column, "id")
        elif not source.has(id_column):
            id_column = None  # the default "id" column is used only where there is one
        for key, column in columns.items():
            source.require(column, key)
        self.question_column, self.answer_column, self.id_column = columns["question"], columns["answer"], id_column
        self._rows = [self._row(where, data) for where, data in source.rows]
        if not self._rows:
            raise ValueError(f"{self.path_text} holds no problems (no rows). Fix: add rows with a "
                             f"{self.question_column!r} and an {self.answer_column!r} column")
        self._check_unique_ids()
        self._prepared: dict[str, Any] = {}  # gold -> the checker's prepared gold
        self._checks: OrderedDict[tuple[str, str, str], tuple[Check | None, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FileEnv({self.name!r})"

    def __reduce__(self):
        # Rebuilt by name (the file is read again where it is unpickled: a Ray actor, a subprocess).
        return (_rebuild, (self.name, self.extraction, self.config()))

    def __len__(self) -> int:
        return len(self._rows)

    def config(self) -> dict:
        """The resolved config: the columns used, the checker and its options, the split."""
        return {"question": self.question_column, "answer": self.answer_column, "id": self.id_column,
                "checker": self.checker.spec, "split": self.split, **self.checker.options()}

    def problems(self, n: int, seed: int, start: int = 0) -> list[Problem]:
        """Rows `start .. start+n-1` in file order, whatever the seed.

        Raises:
            ValueError: a bad n, start or seed; rows past the end of the file; a gold answer the
                checker cannot use (naming the file, line or row and column).
        """
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if n < 0 or start < 0:
            raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
        if start + n > len(self._rows):
            count = f"{len(self._rows)} problem{'' if len(self._rows) == 1 else 's'}"
            raise ValueError(f"{self.path_text} holds {count}; n={n} from problem {start} asks "
                             f"past its end. Fix: n at most {max(0, len(self._rows) - start)}")
        problems = []
        for index in range(start, start + n):
            row = self._rows[index]
            try:
                self._prepare(row["gold"])
            except ValueError as err:
                raise ValueError(f"{self.path_text}, {row['location']}, column {self.answer_column!r}: {err} "
                                 f"(checker {self.checker.spec}). Fix: correct the answer or choose another "
                                 "checker") from None
            problems.append(Problem(
                env=self.name, problem_id=own_problem_id(self.name, row["id"]), index=index, seed=seed,
                question=row["question"], gold=row["gold"],
                metadata={"id": row["id"], "location": row["location"], "columns": row["columns"]},
                columns=row["columns"],
            ))
        return problems

    def user_prompt(self, problem: Problem) -> str:
        """The question followed by the <answer>-tag instruction."""
        return f"{problem.question.rstrip()}\n\n{ANSWER_INSTRUCTION}"

    def verify(self, problem: Problem, completion: str) -> Verdict:
        """Extract the answer (strict or flexible, `envs.answer`) and score it with the checker.

        A checker that raises scores 0.0 with the error in `error`.
        """
        if problem.env != self.name:
            raise ValueError(f"Problem {problem.problem_id!r} belongs to environment {problem.env!r}, "
                             f"not {self.name!r}. Fix: verify it with get_env({problem.env!r}).")
        tagged = extract_answer(completion)
        answer = extract_answer_flexible(completion) if self.extraction == "flexible" else tagged
        if answer is None:
            return Verdict(answer=None, score=0.0, correct=False, format_ok=tagged is not None, error=None)
        check, error = self._check(problem, answer)
        score = check.score if check is not None else 0.0
        return Verdict(answer=answer, score=score, correct=score == 1.0, format_ok=tagged is not None, error=error)

    def feedback(self, problem: Problem, verdict: Verdict, policy: str,
                 templates: dict[str, str] | None = None) -> str:
        """Feedback under `policy` (`envs.feedback`): `ground_truth` shows the answer column, `verifier`
        the checker's message about a wrong answer."""
        hints: list[str] = []
        if policy == "verifier" and not verdict.correct and verdict.answer is not None:
            check, _ = self._check(problem, verdict.answer)
            hints = [check.message] if check is not None and check.message else []
        return render_feedback(problem, verdict, policy, templates, hints=hints, has_verifier=self.has_verifier)

    # -- internals ---------------------------------------------------------------------

    def _row(self, where: str, data: Mapping[str, Any]) -> dict:
        at = f"{self.path_text}, {where}"
        if not isinstance(data, Mapping):
            raise ValueError(f"{at}: a {type(data).__name__}, not an object of columns. Fix: write each line as "
                             '{"question": ..., "answer": ...}')
        for key, column in (("question", self.question_column), ("answer", self.answer_column),
                            ("id", self.id_column)):
            if column is not None and column not in data:
                fix = f"name the {key} column in the env config: {key}=COLUMN" if key != "id" else \
                    "set id= (empty) in the env config to use ids made from the questions"
                raise ValueError(f"{at}: no column {column!r} (this row has: {', '.join(map(str, data)) or 'none'}). "
                                 f"Fix: add it to every row, or {fix}")
        question = data[self.question_column]
        if not isinstance(question, str):
            raise ValueError(f"{at}, column {self.question_column!r}: "
                             f"{'empty' if _missing(question) else f'a {type(question).__name__}, not text'}. "
                             "Fix: write the question as text")
        if not question.strip():
            raise ValueError(f"{at}, column {self.question_column!r}: empty. Fix: write the question")
        gold = _text(data[self.answer_column])
        if gold is None:
            raise ValueError(f"{at}, column {self.answer_column!r}: empty. Fix: give every problem its answer")
        if self.id_column is not None:
            own_id = _text(data[self.id_column])
            if own_id is None:
                raise ValueError(f"{at}, column {self.id_column!r}: empty. Fix: give every row an id, or set id= "
                                 "(empty) in the env config to use ids made from the questions")
        else:
            own_id = "q-" + hashlib.sha256(question.encode("utf-8")).hexdigest()[:12]
        used = {self.question_column, self.answer_column, self.id_column}
        columns = to_jsonable({str(k): v for k, v in data.items() if k not in used})
        return {"question": question, "gold": gold, "id": own_id, "location": where, "columns": columns}

    def _check_unique_ids(self) -> None:
        first: dict[str, str] = {}
        for row in self._rows:
            before = first.setdefault(row["id"], row["location"])
            if before == row["location"]:
                continue
            if self.id_column is not None:
                raise ValueError(f"{self.path_text}, {before} and {row['location']}, column {self.id_column!r}: the "
                                 f"same id {row['id']!r}. Fix: give each row its own id")
            raise ValueError(f"{self.path_text}, {before} and {row['location']}, column {self.question_column!r}: the "
                             f"same question ({_cut(row['question'])!r}), so the same id (without an id column, ids "
                             "come from the questions). Fix: remove the repeated row, or add an id column")

    def _prepare(self, gold: str) -> Any:
        if gold not in self._prepared:
            self._prepared[gold] = self.checker.prepare(gold)
        return self._prepared[gold]

    def _check(self, problem: Problem, answer: str) -> tuple[Check | None, str | None]:
        """The checker's Check of `answer` (None and the error text when it raised), kept a while for feedback."""
        key = (problem.problem_id, problem.gold, answer)
        with self._lock:
            if key in self._checks:
                return self._checks[key]
        try:
            prepared = self._prepare(problem.gold)
            columns = (problem.metadata or {}).get("columns") or {}
            result: tuple[Check | None, str | None] = (self.checker.check(answer, prepared, columns), None)
        except Exception as err:  # a checker must never stop a run: the answer scores 0
            location = (problem.metadata or {}).get("location", f"problem {problem.index}")
            text = " ".join(str(err).split())
            result = (None, f"{type(err).__name__}: {text} (checker {self.checker.spec}, {self.path_text}, "
                            f"{location}, column {self.answer_column!r})")
        with self._lock:
            self._checks[key] = result
            while len(self._checks) > _CHECKS_KEPT:
                self._checks.popitem(last=False)
        return result


def own_problem_id(env: str, own_id: str) -> str:
    """The problem id of the row whose own id is `own_id`: ``<env>#<own id>``, with ``%`` and ``|``
    escaped (``|`` separates the parts of a record key)."""
    return f"{env}#{own_id.replace('%', '%25').replace('|', '%7C')}"


def _rebuild(name: str, extraction: str, config: dict) -> Any:
    from .registry import get_env

    return get_env(name, extraction=extraction, **config)


class FileFamily:
    """The `file` family: every name ``file:PATH`` (see the module docstring)."""

    description = "file:PATH (your own JSONL/CSV/Parquet file or datasets folder; see the README, Your own data)"

    def names(self) -> list[str]:
        return []  # its names are paths: it takes them (accepts) rather than lists them

    def accepts(self, name: str) -> bool:
        return isinstance(name, str) and name.startswith(PREFIX)

    def make(self, name: str, /, *, extraction: str = "strict", **config: Any) -> FileEnv:
        return FileEnv(name, extraction=extraction, **config)


# -- reading files ---------------------------------------------------------------------


class _Source:
    """A file's rows as (location, dict) pairs and its columns (None for JSONL, whose rows differ)."""

    def __init__(self, path_text: str, rows: list[tuple[str, Any]], columns: list[str] | None,
                 split: str | None = None) -> None:
        self.path_text, self.rows, self.columns, self.split = path_text, rows, columns, split

    def has(self, column: str | None) -> bool:
        if column is None:
            return False
        if self.columns is not None:
            return column in self.columns
        return any(isinstance(data, Mapping) and column in data for _, data in self.rows)

    def require(self, column: str, key: str) -> None:
        if self.columns is None or column in self.columns:
            return
        there = ", ".join(self.columns) or "none"
        raise ValueError(f"{self.path_text} has no column {column!r} (its columns: {there})."
                         f"{did_you_mean(column, self.columns)} Fix: name the {key} column in the env config: "
                         f"{key}=COLUMN (--env-config {key}=COLUMN, or config: {{{key}: COLUMN}} in a sweep)")


_cache: OrderedDict[tuple, _Source] = OrderedDict()
_cache_lock = threading.Lock()


def _read(path: Path, path_text: str, split: Any) -> _Source:
    """The rows of `path` (cached while its files keep their size and modification time)."""
    if not path.exists():
        raise ValueError(f"{path_text}: no such file or folder (looked for {path.resolve()}). Fix: check the path; "
                         f"a relative path is read from the current folder ({Path.cwd()})")
    if split is not None and not isinstance(split, str):
        raise ValueError(f"{path_text}: split (={split!r}) must be the name of a split")
    if path.is_dir():
        kind = "datasets"
    else:
        kind = SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise ValueError(f"{path_text}: not a file type redumix reads ({path.suffix or 'no suffix'}). "
                             f"Fix: give {FORMS}")
    if split is not None and kind != "datasets":
        raise ValueError(f"{path_text}: split (={split!r}) applies to a datasets folder only. Fix: drop split")
    key = (str(path.resolve()), kind, split, _stamp(path))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    source = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[kind](path, path_text) \
        if kind != "datasets" else _read_datasets(path, path_text, split)
    with _cache_lock:
        _cache[key] = source
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return source


def _stamp(path: Path) -> tuple:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def _read_jsonl(path: Path, path_text: str) -> _Source:
    rows = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a byte-order mark
        if not raw.strip():
            continue
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"{path_text}, line {number}: not UTF-8 text ({err.reason} at byte {err.start}). "
                             "Fix: save the file as UTF-8") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path_text}, line {number}: not valid JSON ({err.msg}, column {err.colno}). "
                             "Fix: correct the line, or delete it") from None
        rows.append((f"line {number}", data))
    return _Source(path_text, rows, None)


def _read_csv(path: Path, path_text: str) -> _Source:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(f"{path_text}, line {line}: not UTF-8 text ({err.reason}). Fix: save the file as UTF-8") \
            from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[str, Any]] = []
    header: list[str] | None = None
    try:
        for record in reader:
            if not record or not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip() for cell in record]
                repeated = sorted({c for c in header if header.count(c) > 1})
                if repeated or "" in header:
                    what = f"the column name {repeated[0]!r} twice" if repeated else "an empty column name"
                    raise ValueError(f"{path_text}, line {reader.line_num}: the header row has {what}. "
                                     "Fix: give every column its own name")
                continue
            if len(record) != len(header):
                raise ValueError(f"{path_text}, line {reader.line_num}: {len(record)} fields, but the header has "
                                 f"{len(header)}. Fix: quote fields that hold commas (\"a, b\"), or correct the row")
            rows.append((f"line {reader.line_num}", dict(zip(header, record, strict=True))))
    except csv.Error as err:
        raise ValueError(f"{path_text}, line {reader.line_num}: not valid CSV ({err}). Fix: correct the line") \
            from None
    return _Source(path_text, rows, header or [])


def _read_parquet(path: Path, path_text: str) -> _Source:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:
        raise ValueError(f"{path_text}: not a Parquet file pyarrow can read ({_one_line(err)}). Fix: write it "
                         "again, e.g. with pandas' DataFrame.to_parquet") from None
    return _Source(path_text, [(f"row {i}", row) for i, row in enumerate(table.to_pylist())], table.column_names)


def _read_datasets(path: Path, path_text: str, split: str | None) -> _Source:
    if not ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        raise ValueError(f"{path_text}: a folder, but not one saved by datasets' save_to_disk (it has no "
                         f"dataset_info.json or dataset_dict.json). Fix: give {FORMS}")
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:
        raise ValueError(f"{path_text}: datasets cannot load this folder ({_one_line(err)}). Fix: save it again "
                         "with save_to_disk") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = sorted(loaded)
        if split is None:
            if len(splits) == 1 or "test" in splits:
                split = splits[0] if len(splits) == 1 else "test"
            else:
                raise ValueError(f"{path_text}: a datasets folder of {len(splits)} splits ({', '.join(splits)}). "
                                 f"Fix: choose one in the env config: split={splits[0]}")
        elif split not in splits:
            raise ValueError(f"{path_text}: no split {split!r}.{did_you_mean(split, splits)} Splits: "
                             f"{', '.join(splits)}")
        loaded = loaded[split]
    elif split is not None:
        raise ValueError(f"{path_text}: split (={split!r}) given, but the folder holds one dataset without splits. "
                         "Fix: drop split")
    rows = [(f"row {i}", row) for i, row in enumerate(loaded.to_list())]
    return _Source(path_text, rows, list(loaded.column_names), split)


# -- values ----------------------------------------------------------------------------


def _path_text(name: str) -> str:
    if not isinstance(name, str) or not name.startswith(PREFIX):
        raise ValueError(f"Environment {name!r} is not a file name. Fix: write file:PATH")
    path = name[len(PREFIX):]
    if not path.strip():
        raise ValueError(f"Environment {name!r} names no file. Fix: write file:PATH, e.g. file:data/problems.jsonl")
    if "|" in path:
        raise ValueError(f"Environment {name!r}: the path holds '|', which joins the parts of record keys. "
                         "Fix: rename the file or folder")
    return path


def _column_name(value: Any, key: str, optional: bool = False) -> str | None:
    if optional and (value is None or value == ""):
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} (={value!r}) must name a column{', or be empty for none' if optional else ''}")
    return value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str | None:
    """A cell as text: None when empty (None, NaN or blank)."""
    if _missing(value):
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bool | int | float):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, list | dict):
        return _text(value.item())  # numpy scalars
    return json.dumps(to_jsonable(value), ensure_ascii=False)


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


FILE = register_env_family("file", FileFamily())
