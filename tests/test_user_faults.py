"""What a user can cause ends in one line and an exit code of its kind, never a traceback, and
loses nothing already written: a full disk while records are appended, a record line nested too
deep, NaN and infinities in records, a GGUF file cut short, and every kind of error the command
line's handler sorts (files, memory, nesting, encodings, torch, transformers, the GGUF reader,
Ray), with --debug and REDUMIX_DEBUG=1 for the traceback and a bug's traceback always shown."""

from __future__ import annotations

import errno
import json
import math
import os

import pandas as pd
import pytest

from harness import cli
from harness.cli import main
from harness.cli_errors import EXIT_CODES
from harness.runs.store import RunDir
from tests.helpers.cli import must_not_load, one_line_error
from tests.helpers.sweeps import sample_lines

pytestmark = pytest.mark.usefixtures("one_thread")


def _error_after_progress(err: str, *needles: str) -> str:
    """The stderr of a command that failed mid-way: progress bars, then one line naming every needle."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert all("%|" in line for line in lines[:-1]), err
    return one_line_error(lines[-1], *needles)


# --- a full disk while records are appended ---------------------------------------------------------------------

@pytest.fixture
def disk_full_after(monkeypatch):
    """Make the n-th and every later fsync of a samples.jsonl fail as a full disk does."""
    real = os.fsync
    calls = {"n": 0}

    def arm(appends_that_succeed: int) -> None:
        def fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}").endswith("samples.jsonl"):
                calls["n"] += 1
                if calls["n"] > appends_that_succeed:
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    yield arm
    monkeypatch.setattr(os, "fsync", real)


def test_a_full_disk_in_run_is_one_line_and_the_same_command_resumes(tiny_model_dir, tmp_path, capsys, monkeypatch,
                                                                     disk_full_after):
    out = tmp_path / "run"
    args = ["run", "--env", "basic_arithmetic", "--model", str(tiny_model_dir), "--n", "4", "--batch-size", "1",
            "--max-new-tokens", "4", "--out", str(out)]
    disk_full_after(2)
    assert main(args) == EXIT_CODES["disk full"] == 4
    line = _error_after_progress(capsys.readouterr().err,
                                 f"disk full writing {out / 'samples.jsonl'}: 2 records kept",
                           "free space and run the same command to resume")
    assert line.startswith("redumix run: error:")
    assert (out / "samples.jsonl").read_bytes().count(b"\n") == 2 and (out / "samples.jsonl").read_bytes()[-1:] == b"\n"
    monkeypatch.undo()
    assert main(args) == 0
    ids = [json.loads(line)["problem_id"] for line in sample_lines(out)]
    assert len(ids) == len(set(ids)) == 4


def test_a_full_disk_in_sweep_is_one_line_and_the_same_command_resumes(sw, capsys, monkeypatch,
                                                                       disk_full_after):
    folder, config = sw
    lines = sample_lines(folder)
    (folder / "samples.jsonl").write_bytes(b"\n".join(lines[:3]) + b"\n")
    disk_full_after(1)
    assert main(["sweep", str(config), "--out", str(folder), "--no-report"]) == 4
    kept = len(sample_lines(folder))
    assert kept > 3
    _error_after_progress(capsys.readouterr().err,
                          f"disk full writing {folder / 'samples.jsonl'}: {kept} records kept",
                    "run the same command to resume")
    monkeypatch.undo()
    assert main(["sweep", str(config), "--out", str(folder), "--no-report"]) == 0
    keys = [json.loads(line)["key"] for line in sample_lines(folder)]
    assert len(keys) == len(set(keys)) == len(lines)


def test_a_full_disk_while_a_report_is_written_replaces_nothing(sw, capsys, monkeypatch):
    folder, _ = sw
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(["report", str(folder)]) == 4
    one_line_error(capsys.readouterr().err, f"disk full writing {folder / 'summary.csv'}; free space and run the "
                                            "same command again")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # no temporary left either


# --- record lines nested too deep, and numbers that are not finite ----------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


def test_a_line_nested_too_deep_is_skipped_by_report_and_resume(sw, capsys):
    folder, config = sw
    lines = sample_lines(folder)
    (folder / "samples.jsonl").write_bytes(b"\n".join([*lines[:-1], DEEP, b'{"a": ' * 200 + b"1" + b"}" * 200])
                                           + b"\n")
    assert main(["report", str(folder)]) == 0
    out = capsys.readouterr().out
    n = len(lines)
    assert f"line {n}: not a record (nested deeper than" in out and f"line {n + 1}: not a record (nested" in out
    assert f"incomplete: {n - 1} of {n} records" in out
    assert main(["sweep", str(config), "--out", str(folder), "--no-report"]) == 0
    assert "records: " in capsys.readouterr().out
    keys = [json.loads(line)["key"] for line in sample_lines(folder) if not line.startswith((b"[", b'{"a"'))]
    assert len(keys) == len(set(keys)) == n


def test_a_run_folder_with_a_line_nested_too_deep_resumes(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--env", "basic_arithmetic", "--model", str(tiny_model_dir), "--n", "3", "--max-new-tokens", "4",
            "--out", str(out)]
    assert main(args) == 0
    lines = sample_lines(out)
    (out / "samples.jsonl").write_bytes(b"\n".join([lines[0], DEEP, lines[2]]) + b"\n")
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "line 2: not a record (nested deeper than 64 levels)" in captured.err
    assert "(new problems only; 2 already recorded)" in captured.out
    ids = [json.loads(line)["problem_id"] for line in sample_lines(out) if line != DEEP]
    assert sorted(ids) == sorted(json.loads(line)["problem_id"] for line in lines)


def test_non_finite_numbers_are_never_written_and_read_like_a_malformed_line(sw, tmp_path, capsys):
    store = RunDir(tmp_path / "run")
    store.append([{"a": math.nan, "b": [1.0, -math.inf], "c": {"d": math.inf}, "e": 2.5}])
    text = (tmp_path / "run" / "samples.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2.5}

    folder, _ = sw
    lines = sample_lines(folder)
    record = json.loads(lines[0])
    lines[0] = json.dumps(record | {"latency_s": math.inf}).encode()
    lines[1] = lines[1].replace(b'"score": 0.0', b'"score": NaN').replace(b'"score": 1.0', b'"score": NaN')
    lines[2] = lines[2].replace(b'"cost_s": ', b'"cost_s": 1e999, "x": ', 1)
    (folder / "samples.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert main(["report", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "line 1: not a record (latency_s = inf is not a finite number)" in out
    assert "line 2: not a record (score = nan" in out and "line 3: not a record (cost_s = inf" in out
    summary = pd.read_csv(folder / "summary.csv")
    assert summary["n"].sum() == len(lines) - 3
    numbers = summary.select_dtypes("number").to_numpy().ravel()
    assert not any(math.isinf(v) for v in numbers)
    assert summary["latency_p95_s"].notna().all() and summary["accuracy_lo"].notna().all()


# --- a GGUF file cut short -----------------------------------------------------------------------------------------

def test_a_gguf_file_cut_short_is_named_with_its_size(tmp_path, capsys, monkeypatch):
    from harness.engine.models import embedded_model_path

    try:
        whole = embedded_model_path("smollm2-135m")
    except ValueError:
        pytest.skip("the embedded model's package is not installed")
    monkeypatch.setenv("REDUMIX_CACHE", str(tmp_path / "cache"))
    cut = tmp_path / "model.gguf"
    with whole.open("rb") as f:
        cut.write_bytes(f.read(3_000_000))
    total = whole.stat().st_size
    args = ["run", "--env", "basic_arithmetic", "--model", str(cut), "--n", "1", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    one_line_error(capsys.readouterr().err, f"{cut} is not a complete GGUF file (3000000 of {total} bytes)",
                   "delete it")
    cut.write_bytes(whole.read_bytes()[:1000])  # cut inside its header
    assert main(args) == 2
    one_line_error(capsys.readouterr().err, f"{cut} is not a complete GGUF file (1000 bytes, cut off inside its "
                                            "header)")
    cut.write_bytes(b"")
    assert main(args) == 2
    one_line_error(capsys.readouterr().err, f"{cut} is not a complete GGUF file (0 bytes, cut off inside its header)")
    assert not (tmp_path / "o" / "spec.json").exists()
    assert not any((tmp_path / "cache").rglob("*.safetensors"))


# --- the command line's handler -----------------------------------------------------------------------------------

def _raise_in(module: str, error: BaseException):
    """A function that raises `error` from a frame of `module` (as if that library raised it)."""
    scope = {"__name__": module, "error": error}
    exec("def fail(*_):\n    raise error\n", scope)  # noqa: S102 (a frame that belongs to `module`)
    return scope["fail"]


def _torch_error():
    import torch

    return lambda *_: torch.nn.Linear(3, 4)(torch.zeros(2, 5))  # raised inside torch's own module code


KINDS = [
    ("file", lambda *_: open("/nonexistent/dir/file.txt"), ["/nonexistent/dir/file.txt", "No such file"]),
    ("file", _raise_in("harness.x", PermissionError(errno.EACCES, "Permission denied", "/srv/x.jsonl")),
     ["/srv/x.jsonl: Permission denied; check its permissions"]),
    ("disk full", _raise_in("harness.x", OSError(errno.ENOSPC, "No space left on device", "/srv/report.html")),
     ["disk full writing /srv/report.html; free space and run the same command again"]),
    ("memory", _raise_in("harness.x", MemoryError()), ["out of memory; report fewer or smaller folders"]),
    ("nesting", _raise_in("harness.x", RecursionError("maximum recursion depth exceeded")),
     ["nested too deeply", "RUN_DIR"]),
    ("encoding", lambda *_: b"\xff".decode("utf-8"),
     ["encoding other than UTF-8 in RUN_DIR", "save the file as UTF-8"]),
    ("torch", _torch_error(), ["torch failed", "RuntimeError", "cannot be multiplied"]),
    ("transformers", _raise_in("transformers.models.auto", ValueError("Unrecognized model in /m")),
     ["transformers failed", "Unrecognized model in /m"]),
    ("gguf", _raise_in("gguf.gguf_reader", ValueError("GGUF magic invalid")), ["the GGUF reader failed", "magic"]),
    ("ray", _raise_in("ray._private.worker", ConnectionError("could not reach the GCS at 10.0.0.1:6379")),
     ["Ray failed", "10.0.0.1:6379"]),
    ("setting", _raise_in("harness.x", ValueError("--thing (=3) must be\nat most 2; lower it")),
     ["--thing (=3) must be at most 2; lower it"]),
]


@pytest.mark.parametrize("kind, fail, needles", KINDS, ids=[f"{k[0]}-{i}" for i, k in enumerate(KINDS)])
def test_each_kind_of_error_is_one_line_with_its_exit_code(kind, fail, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("REDUMIX_DEBUG", raising=False)
    monkeypatch.setattr(cli, "_cmd_report", fail)
    assert main(["report", str(tmp_path)]) == EXIT_CODES[kind]
    line = one_line_error(capsys.readouterr().err, *needles)
    assert line.startswith("redumix report: error: ")
    assert main(["report", str(tmp_path), "--debug"]) == EXIT_CODES[kind]
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1] == line


def test_exit_codes_are_distinct_per_kind():
    codes = [c for c in EXIT_CODES.values()]
    assert len(codes) == len(set(codes)) and not {0, 1, 130} & set(codes)


def test_debug_by_environment_and_before_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_cmd_report", _raise_in("harness.x", ValueError("nope")))
    monkeypatch.setenv("REDUMIX_DEBUG", "1")
    assert main(["report", str(tmp_path)]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("REDUMIX_DEBUG", "0")
    assert main(["--debug", "report", str(tmp_path)]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_bug_shows_its_traceback_and_asks_to_be_reported(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("REDUMIX_DEBUG", raising=False)
    monkeypatch.setattr(cli, "_cmd_report", lambda args: {}["missing"])
    assert main(["report", str(tmp_path)]) == EXIT_CODES["bug"] == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'missing'" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("redumix report: internal error: KeyError") and "please report it" in last


def test_lm_eval_errors_go_through_the_same_handler(capsys, monkeypatch):
    from harness.lmeval import cli as lm_eval_cli

    monkeypatch.delenv("REDUMIX_DEBUG", raising=False)
    monkeypatch.setattr(lm_eval_cli, "main", _raise_in("lm_eval.evaluator", KeyError("rg_x")))
    assert main(["lm-eval", "run", "--tasks", "rg_x"]) == EXIT_CODES["lm-eval"]
    one_line_error(capsys.readouterr().err, "redumix lm-eval: error: lm-eval failed", "KeyError")
    assert main(["lm-eval", "run", "--tasks", "rg_x", "--debug"]) == EXIT_CODES["lm-eval"]
    assert "Traceback" in capsys.readouterr().err



# --- what a user tries next: settings of the wrong type or size, records another version wrote -------------------

@pytest.mark.parametrize("args, needles", [
    (["--threads", "100000"], ["--threads (=100000) is more than 4 per CPU"]),
    (["--n", "100000000000000000000"], ["n (=100000000000000000000) must be at most 1,000,000"]),
    (["--env-config", "extraction=flexible"],
     ["--env-config extraction=flexible is not a task setting", "--extraction"]),
    (["--env-config", "name=chain_sum"], ["Unknown config key 'name'"]),
    (["--decoder", "sample", "--decoder-config", "temperature=inf"],
     ["decoder_config.temperature = inf is not a finite number"]),
])
def test_run_settings_of_the_wrong_size_or_place_are_one_line(tmp_path, capsys, monkeypatch, args, needles):
    from harness.engine import model_pool

    monkeypatch.setattr(model_pool, "load_model", must_not_load)
    assert main(["run", "--env", "basic_arithmetic", "--out", str(tmp_path / "o"), *args]) == 2
    one_line_error(capsys.readouterr().err, *needles)
    assert not (tmp_path / "o" / "spec.json").exists()


@pytest.mark.parametrize("text, needles", [
    ("[" * 50_000 + "]" * 50_000, ["nested too deeply to read"]),
    ("models: [m]\nseeds: [1" + "0" * 5000 + "]\n", ["not valid YAML: Exceeds the limit"]),
    ("models: [smollm2-135m]\nenvs: [{name: basic_arithmetic, n: 100000000000000000000}]\ndecoders: [{name: greedy}]\n",
     ["envs[0].n (=100000000000000000000) must be at most 1,000,000"]),
    ("models: [smollm2-135m]\nenvs: [{name: basic_arithmetic, n: 1}]\n"
     "decoders: [{name: sample, config: {temperature: {a: 1}}}]\n",
     ["decoders[0].config: temperature (={'a': 1}) is not a value 'sample' takes"]),
    ("models: [smollm2-135m]\nenvs: [{name: basic_arithmetic, n: 1, config: {extraction: flexible}}]\n"
     "decoders: [{name: greedy}]\n", ["envs[0].config.extraction", "top level"]),
    ("models: [smollm2-135m]\nenvs: [{name: basic_arithmetic, n: 1, config: {name: chain_sum}}]\n"
     "decoders: [{name: greedy}]\n", ["envs[0].config", "Unknown config key 'name'"]),
    ("models: [m]\nenvs: [x]\ndecoders: [{name: greedy}]\nstop: [a\n  b: c\n", ["not valid YAML"]),
    ("models: [smollm2-135m]\nenvs: [{name: basic_arithmetic, n: 1}]\n"
     "decoders: [{name: sample, config: {temperature: .inf}}]\n",
     ["decoders[0].config.temperature = inf is not a finite number"]),
])
def test_sweep_configs_of_the_wrong_shape_or_size_are_one_line(tmp_path, capsys, text, needles):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert main(["sweep", str(config), "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys.readouterr().err, str(config), *needles)
    assert not (tmp_path / "o").exists()


def test_harvest_leaves_out_records_that_cannot_make_a_pair(sw, tmp_path, capsys):
    folder, _ = sw
    lines = sample_lines(folder)
    records = [json.loads(line) for line in lines]
    redumix = [i for i, r in enumerate(records) if r["decoder"] == "redumix"]
    for i in redumix[:2]:
        records[i].pop("contexts")  # as another version might have written them
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["harvest", str(folder), "--all", "--out", str(tmp_path / "p.jsonl")]) == 0
    captured = capsys.readouterr()
    assert "left out 2 ReDuMix records that cannot make a pair" in captured.err and "no contexts" in captured.err
    for i in redumix:
        records[i].pop("contexts", None)
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["harvest", str(folder), "--all", "--out", str(tmp_path / "q.jsonl")]) == 2
    assert "has no ReDuMix records that make pairs" in capsys.readouterr().err
    assert not (tmp_path / "q.jsonl").exists()


def test_a_joined_report_into_a_file_is_one_line(sw, tmp_path, capsys):
    folder, _ = sw
    (tmp_path / "f").write_text("mine")
    assert main(["report", str(folder), "--out", str(tmp_path / "f")]) == 2
    one_line_error(capsys.readouterr().err, "--out", "is a file")
    assert (tmp_path / "f").read_text() == "mine"


def test_an_address_where_nothing_answers_is_one_line_at_once(finished, tmp_path):
    import socket
    import subprocess
    import sys

    from tests.helpers.cli import ROOT

    pytest.importorskip("ray")
    _, config = finished
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "o"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(config), "--out", str(out), "--executor",
                           "ray", "--address", f"127.0.0.1:{port}"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONHASHSEED="0"), timeout=60)  # Ray alone retries for minutes
    assert done.returncode == 2
    one_line_error(done.stderr, f"--address (='127.0.0.1:{port}'): nothing answers there", "ray start --head")
    assert not out.exists()
    from harness.runs.ray_address import split_address

    assert split_address("auto") is None and split_address("ray://[::1]:10001") == ("::1", 10001)
    with pytest.raises(ValueError, match="the port must be a number"):
        split_address("head:http")


def test_a_configs_out_under_the_home_folder_is_expanded(finished, tmp_path, monkeypatch, capsys):
    import yaml

    _, config = finished
    data = yaml.safe_load(config.read_text()) | {"out": "~/results/x"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x").write_text("a file where the folder would go")
    assert main(["sweep", str(tmp_path / "c.yaml")]) == 2
    one_line_error(capsys.readouterr().err, f"(={str(tmp_path / 'results' / 'x')!r}) is a file")
    assert not (tmp_path / "~").exists() and not os.path.exists("~")
