"""Every environment as an lm-evaluation-harness task: `rg_<env>`, easy variants
`rg_<env>_easy` and the group `rg_easy`.

Task configs are generated from the environment registry, never written by hand:
`task_config` builds one as a dict (accepted by `lm_eval.simple_evaluate(tasks=[...])`),
and `write_task_dir` writes them all as YAML for lm-eval's `--include_path`. Problems
are generated offline from a seed; each document carries what is needed to rebuild
and grade its problem (env, config, seed, index).

Overrides at evaluation time come through lm-eval's task metadata (the CLI's
`--metadata`, or `TaskManager(metadata=...)`), read by `make_dataset`:

* `rg_n`: problems per task (default 100; `--limit` takes a prefix of them);
* `rg_seed`: the problem seed (default 0);
* `rg_config`: per-environment config overrides, `{"basic_arithmetic": {"max_terms": 2}}`,
  applied on top of the task's own config (so also on top of an easy variant's);
* `rg_extraction`: the answer extraction of every task, "strict" or "flexible" (default: each
  task's own, flexible for easy variants).

Problem files of your own (`file:PATH` environments) cannot be listed, so they have no task
until asked for: `check_task_names` (which `redumix lm-eval` calls with `--tasks`) takes
`rg_file:PATH`, checks the file, and `write_task_dir` then writes its task, named
`rg_file_<PATH with every other character than letters, digits, - and _ as _>` (a name lm-eval
can put in file names) and tagged `rg_file:PATH`, the name asked for.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from envs import available_envs, close_stopped_answer, get_env
from harness.naming import unknown_name_message

PREFIX = "rg_"
EASY_SUFFIX = "_easy"
EASY_GROUP = "rg_easy"
TAG = "reasoning_gym"
DEFAULT_N = 100
DEFAULT_SEED = 0
MAX_GEN_TOKS = 256  # as `redumix run --max-new-tokens`
STOP = "</answer>"
METRICS = ("acc", "score", "format_ok")
FILE_ENV_PREFIX = "file:"  # environments of envs.file_dataset
_file_envs: dict[str, None] = {}  # file envs asked for by name in this process (see check_task_names)

# Settings at which the embedded model (SmolLM2-135M-Instruct) solves some problems:
# greedy, flexible extraction, 16 problems of seed 0, at most 64 new tokens, it solved
# basic_arithmetic 8, products 10, chain_sum 5, lcm 4, gcd 3 (and 0 of count_bits,
# count_primes, spell_backward, letter_counting, caesar_cipher, word_sequence_reversal,
# simple_equations and number_sorting at their easiest). Each becomes rg_<env>_easy.
EASY_CONFIGS: dict[str, dict[str, Any]] = {
    "basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,
                         "operators": ["+", "-"], "allow_parentheses": False, "allow_negation": False},
    "chain_sum": {"min_terms": 2, "max_terms": 2, "max_digits": 1},
    "products": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    "gcd": {"max_value": 20},
    "lcm": {"max_value": 10},
}


def task_name(env: str, easy: bool = False) -> str:
    if env.startswith(FILE_ENV_PREFIX):  # a path: its task's name must do as part of a file name
        return f"{PREFIX}file_{re.sub(r'[^A-Za-z0-9_-]+', '_', env[len(FILE_ENV_PREFIX):]).strip('_')}"
    return f"{PREFIX}{env}{EASY_SUFFIX if easy else ''}"


def available_tasks() -> list[str]:
    """Every task and group name this module provides, sorted."""
    names = [task_name(env) for env in available_envs()]
    names += [task_name(env, easy=True) for env in EASY_CONFIGS]
    return sorted([*names, EASY_GROUP])


def check_task_names(names: Iterable[str]) -> None:
    """Raise a did-you-mean ValueError for any `rg_` name that is not one of ours; an `rg_file:PATH`
    name is checked (the file read) and its task written by later `write_task_dir` calls."""
    known = set(available_tasks())
    for name in names:
        if name.startswith(PREFIX + FILE_ENV_PREFIX):
            task_config(name[len(PREFIX):])
            _file_envs[name[len(PREFIX):]] = None
        elif name.startswith(PREFIX) and name not in known and "*" not in name:
            raise ValueError(unknown_name_message("task", name, known))


def task_config(env: str, *, easy: bool = False, n: int | None = None, seed: int = DEFAULT_SEED,
                env_config: Mapping[str, Any] | None = None, extraction: str | None = None) -> dict[str, Any]:
    """The lm-eval task config of environment `env` (a dict of TaskConfig fields).

    Args:
        env: environment name, e.g. "basic_arithmetic".
        easy: start from `EASY_CONFIGS[env]` (the task is then named rg_<env>_easy).
        n, seed: how many problems (default 100; a problem file's every row), from which seed.
        env_config: config overrides on top of the (easy) defaults.
        extraction: answer extraction, "strict" (only <answer> tags count) or "flexible"
            (also "answer is X" and the last number); default strict, flexible for easy
            variants, whose point is a model that rarely writes the tags.

    Raises:
        ValueError: unknown environment (did-you-mean) or a config the environment rejects.
    """
    if easy and env not in EASY_CONFIGS:
        raise ValueError(unknown_name_message("easy environment", env, EASY_CONFIGS))
    config = {**(EASY_CONFIGS[env] if easy else {}), **dict(env_config or {})}
    extraction = extraction or ("flexible" if easy else "strict")
    get_env(env, extraction=extraction, **config)  # refuse a bad name or config now, not when lm-eval loads it
    if n is None and not env.startswith(FILE_ENV_PREFIX):
        n = DEFAULT_N
    return {
        "task": task_name(env, easy),
        "tag": [PREFIX + env] if env.startswith(FILE_ENV_PREFIX) else [TAG],
        "custom_dataset": make_dataset,
        "dataset_kwargs": {"rg_task": {"env": env, "n": n, "seed": seed, "config": config, "extraction": extraction}},
        "test_split": "test",
        "doc_to_text": doc_to_text,
        "doc_to_target": "gold",
        "process_results": process_results,
        "output_type": "generate_until",
        "generation_kwargs": {"until": [STOP], "max_gen_toks": MAX_GEN_TOKS, "do_sample": False},
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in METRICS],
        "num_fewshot": 0,
        "metadata": {"version": 1.0},
    }


def make_dataset(rg_task: dict, rg_n: int | None = None, rg_seed: int | None = None,
                 rg_config: Mapping[str, Mapping[str, Any]] | None = None, rg_extraction: str | None = None,
                 **_metadata: Any) -> dict:
    """lm-eval's `custom_dataset` hook: {"test": datasets.Dataset} of one environment's problems.

    lm-eval passes the task metadata (which also holds the model's arguments) as keyword
    arguments; only the `rg_` keys are read, the rest is ignored.
    """
    import datasets

    env_name = rg_task["env"]
    n = rg_n if rg_n is not None else rg_task["n"]
    seed = int(rg_seed if rg_seed is not None else rg_task["seed"])
    if rg_config is not None and not isinstance(rg_config, Mapping):
        raise ValueError(
            f"rg_config (={rg_config!r}) must map environment names to config overrides, "
            'e.g. --metadata \'{"rg_config": {"basic_arithmetic": {"max_terms": 2}}}\''
        )
    overrides = dict((rg_config or {}).get(env_name, {}))
    config = {**rg_task["config"], **overrides}
    extraction = rg_extraction or rg_task.get("extraction", "strict")
    env = _env(env_name, json.dumps(config, sort_keys=True), extraction)
    n = len(env) if n is None else int(n)  # None: every row of a problem file
    docs = [
        {
            "problem_id": p.problem_id,
            "env": p.env,
            "seed": p.seed,
            "index": p.index,
            "question": p.question,
            "gold": p.gold,
            "prompt": env.user_prompt(p),
            # JSON text: configs differ in shape between tasks, a string keeps the schema flat.
            "env_config": json.dumps(env.config(), sort_keys=True),
            "extraction": extraction,
        }
        for p in env.problems(n, seed)
    ]
    return {"test": datasets.Dataset.from_list(docs)}


def doc_to_text(doc: dict) -> str:
    """The environment's user prompt: the question plus the <answer>-tag instruction."""
    return doc["prompt"]


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Grade one response with the environment's own verifier: strict acc, score, format_ok."""
    verdict = verify_doc(doc, results[0])
    return {"acc": float(verdict.correct), "score": verdict.score, "format_ok": float(verdict.format_ok)}


def verify_doc(doc: Mapping[str, Any], response: str):
    """The Verdict of `response` on the document's problem.

    lm-eval responses end before the stop string "</answer>", so it is put back, unless
    the response says it ended otherwise (a `Response` from our model does).
    """
    stopped = getattr(response, "ended_on_stop", True)
    return doc_env(doc).verify(doc_problem(doc), close_stopped_answer(response) if stopped else response)


class Response(str):
    """A generated text that carries how it ended, through lm-eval to our grader.

    lm-eval keeps only the text: "... <answer> tags." cut at "</answer>" reads the same as
    one that ended on EOS inside an open tag. Our model returns this `str`, so grading
    matches `redumix run`; plain strings (other models' responses, or text a filter
    rewrote) are taken as stopped.
    """

    ended_on_stop: bool

    # Defaults: lm-eval casts a gold answer to the response's type, `type(response)(gold)`.
    def __new__(cls, text: str = "", ended_on_stop: bool = True) -> Response:
        made = super().__new__(cls, text)
        made.ended_on_stop = ended_on_stop
        return made

    def __reduce__(self):  # pickled by lm-eval's request cache
        return (Response, (str(self), self.ended_on_stop))


def doc_problem(doc: Mapping[str, Any]):
    """The Problem a document was made from (regenerated from env, config, seed and index)."""
    problem = doc_env(doc).problems(1, int(doc["seed"]), start=int(doc["index"]))[0]
    if problem.problem_id != doc["problem_id"] or problem.question != doc["question"]:
        raise ValueError(
            f"document {doc['problem_id']!r} no longer matches its environment's problem "
            "(reasoning-gym or the problem file changed, or PYTHONHASHSEED differs); regenerate the task data"
        )
    return problem


def doc_env(doc: Mapping[str, Any]):
    """The environment (with the document's config and extraction mode) of a document."""
    return _env(doc["env"], doc["env_config"], doc.get("extraction", "strict"))


def is_env_doc(doc: Any) -> bool:
    """Whether an lm-eval document came from one of these tasks."""
    return isinstance(doc, Mapping) and {"problem_id", "env", "env_config", "seed", "index"} <= set(doc)


@functools.lru_cache(maxsize=256)
def _env(name: str, config_json: str, extraction: str = "strict"):
    # Keyed by the config's JSON text: building an environment validates its config, once.
    return get_env(name, extraction=extraction, **json.loads(config_json))


def yaml_config(env: str, easy: bool = False) -> dict[str, Any]:
    """`task_config` with the functions written as lm-eval's `!function` references."""
    config = task_config(env, easy=easy)
    for key in ("custom_dataset", "doc_to_text", "process_results"):
        config[key] = _FunctionRef(f"{__name__}.{config[key].__name__}")
    return config


def write_task_dir(folder: str | Path) -> Path:
    """Write every task's YAML and the rg_easy group into `folder` (for lm-eval's --include_path).

    Files whose content is unchanged are left alone; stale rg_*.yaml files are removed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for env in available_envs():
        files[f"{task_name(env)}.yaml"] = _dump(yaml_config(env))
    for env in EASY_CONFIGS:
        files[f"{task_name(env, easy=True)}.yaml"] = _dump(yaml_config(env, easy=True))
    for env in _file_envs:
        files[f"{task_name(env)}.yaml"] = _dump(yaml_config(env))
    files[f"{EASY_GROUP}.yaml"] = _dump({
        "group": EASY_GROUP,
        "task": [task_name(env, easy=True) for env in EASY_CONFIGS],
        "aggregate_metric_list": [{"metric": m, "aggregation": "mean", "weight_by_size": True} for m in METRICS],
        "metadata": {"version": 1.0},
    })
    from harness.runs.output_paths import write_atomically

    for name, text in files.items():
        path = folder / name
        if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
            write_atomically(path, text)  # never a half-written task file for lm-eval to choke on
    for path in folder.glob(f"{PREFIX}*.yaml"):
        # A file env's task stays: another lm-eval run may have asked for it and be reading it now.
        if path.name not in files and not path.name.startswith(task_name(FILE_ENV_PREFIX)):
            path.unlink()
    return folder


def default_task_dir() -> Path:
    """The task folder under the redumix cache, written (or refreshed) on each call."""
    from harness.engine.model_cache import cache_root

    return write_task_dir(cache_root() / "lm_eval_tasks")


class _FunctionRef(str):
    """A dotted function path that YAML writes as `!function path`."""


def _represent_function(dumper: yaml.SafeDumper, ref: _FunctionRef):
    return dumper.represent_scalar("!function", str(ref))


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_FunctionRef, _represent_function)


def _dump(config: dict) -> str:
    header = "# Generated by redumix (harness/lmeval/tasks.py); edits are overwritten.\n"
    return header + yaml.dump(config, Dumper=_Dumper, sort_keys=False, default_flow_style=None)
