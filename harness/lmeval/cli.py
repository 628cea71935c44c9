"""`redumix lm-eval ...`: lm-eval's own command line with our model and tasks added.

lm-eval 0.4.13 discovers no plugins, so this registers the "redumix" model, adds the
generated rg_* task folder to the tasks lm-eval indexes (beside any --include_path)
and hands every argument to lm-eval's CLI. It prints lm-eval's usual table and writes its usual files; with
`--model redumix` and `--output_path` it also writes each task's per-request telemetry
as telemetry_<task>_<date>.jsonl beside lm-eval's results_<date>.json.

    redumix lm-eval run --model redumix --model_args model=smollm2-135m,decoder=greedy \\
        --tasks rg_basic_arithmetic --limit 4 --apply_chat_template --output_path results/lm-eval
    redumix lm-eval tasks [FOLDER]   # write the task YAMLs (for lm-eval --include_path) and print where
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

SUBCOMMANDS = ("run", "ls", "validate")


def main(argv: list[str]) -> int:
    """Run lm-eval's CLI on `argv` (everything after `redumix lm-eval`); returns the exit code."""
    from harness.lmeval import tasks as lm_eval_tasks

    if argv[:1] == ["tasks"]:
        folder = lm_eval_tasks.write_task_dir(argv[1]) if len(argv) > 1 else lm_eval_tasks.default_task_dir()
        print(folder)
        return 0
    try:
        args = _with_our_defaults(list(argv))
    except ValueError as err:
        print(f"redumix lm-eval: error: {err}", file=sys.stderr)
        return 2

    from lm_eval.__main__ import cli_evaluate

    from harness.lmeval import model as lm_eval_model

    started = time.time()
    saved = sys.argv
    sys.argv = ["lm-eval", *args]  # lm-eval's CLI reads sys.argv itself
    try:
        with tasks_included(lm_eval_tasks.default_task_dir()):
            cli_evaluate()
    except SystemExit as done:  # argparse errors and --help
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except (ValueError, NotImplementedError) as err:
        print(f"redumix lm-eval: error: {err}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
    model = lm_eval_model.latest_model()
    known = _parser().parse_known_args(args)[0]
    if model is not None and known.model == lm_eval_model.MODEL_NAME and known.output_path:
        for path in write_telemetry_beside_results(model, Path(known.output_path), started):
            print(f"telemetry: {path}")
    return 0


def write_telemetry_beside_results(model, output_path: Path, since: float) -> list[Path]:
    """For each results file written after `since`, one telemetry file per task beside it.

    lm-eval writes <output_path>/<model>/results_<date>.json, or <stem>_<date>.json when
    --output_path names a .json file; the telemetry takes the same <date>.
    """
    if output_path.suffix == ".json":
        prefix, found = output_path.stem + "_", output_path.parent.glob(output_path.stem + "_*.json")
    else:
        prefix, found = "results_", output_path.rglob("results_*.json")
    written = []
    for results in sorted(found):
        if results.stat().st_mtime < since:
            continue
        date = results.stem[len(prefix) :]
        for task in sorted({str(name) for name, _ in model.telemetry}):
            written.append(model.write_telemetry(results.parent / f"telemetry_{task}_{date}.jsonl", task=task))
    return written


def _with_our_defaults(args: list[str]) -> list[str]:
    """Check rg_* task names (did-you-mean) and add --device cpu (the project's default) where absent."""
    from harness.lmeval import tasks as lm_eval_tasks

    command = args[0] if args and args[0] in SUBCOMMANDS else None
    if command is None and len(args) > 1:
        command = "run"  # as lm-eval: arguments without a subcommand mean `run`
        args = ["run", *args]
    if command not in SUBCOMMANDS:
        return args
    known = _parser().parse_known_args(args[1:])[0]
    if known.tasks:
        lm_eval_tasks.check_task_names(t for item in known.tasks for t in item.split(",") if t)
    if command == "run" and known.device is None:
        args = [*args, "--device", "cpu"]
    return args


@contextlib.contextmanager
def tasks_included(folder: Path) -> Iterator[None]:
    """Make every TaskManager lm-eval's CLI builds index `folder` too, beside any --include_path.

    The CLI takes a single --include_path and lm-eval follows no symlinked folders, so our
    folder is added where the CLI builds its TaskManager (looked up at call time).
    """
    import lm_eval.tasks

    original = lm_eval.tasks.TaskManager

    class WithRedumixTasks(original):
        def __init__(self, *args, include_path=None, **kwargs):
            paths = list(include_path) if isinstance(include_path, list | tuple) else [include_path]
            super().__init__(*args, include_path=[str(folder), *(p for p in paths if p)], **kwargs)

    lm_eval.tasks.TaskManager = WithRedumixTasks
    try:
        yield
    finally:
        lm_eval.tasks.TaskManager = original


def _parser() -> argparse.ArgumentParser:
    # The few lm-eval options this wrapper reads; everything else passes through untouched.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--tasks", "-t", nargs="+")
    parser.add_argument("--model", "-M")
    parser.add_argument("--output_path", "-o")
    parser.add_argument("--device")
    return parser
