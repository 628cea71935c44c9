"""Fault injection: every fault below is made for real (a second writer process, torn,
foreign and duplicated lines, SIGINT to a sweep mid-way, unwritable targets, corrupt
specs), the command is run, and the outcome is asserted: every record is there exactly
once, summary.csv equals a recomputation from the unique valid records, and the
message is one clear line with no traceback. (Model-cache faults: tests/test_model_cache.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.analysis import metrics
from harness.cli import main
from harness.engine import model_pool
from harness.runs.folder_lock import LOCK_FILE, folder_locked
from harness.runs.record_grid import sweep_grid
from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import parse_config
from tests.helpers.cli import ROOT, must_not_load, one_line_error, signal_after
from tests.helpers.sweeps import expected_keys, sample_lines, small_sweep_data, sweep_data

pytestmark = pytest.mark.usefixtures("one_thread")


def _summary_matches(folder: Path, records: list[dict]) -> None:
    """summary.csv equals metrics recomputed from exactly `records`."""
    written = pd.read_csv(folder / "summary.csv")
    expected = metrics.summarize(pd.DataFrame.from_records(records))
    assert written["n"].sum() == len(records)
    assert list(written["n"]) == list(expected["n"])
    assert list(written["correct"]) == list(expected["correct"])
    assert written["accuracy"].round(9).tolist() == expected["accuracy"].round(9).tolist()


# --- 1. data lost -------------------------------------------------------------------------------------------------

def test_harvest_never_writes_over_the_run_folder_files(sw, capsys):
    folder, _ = sw
    before = (folder / "samples.jsonl").read_bytes()
    for name in ("samples.jsonl", "spec.json", "summary.csv"):
        for extra in ([], ["--force"]):
            assert main(["harvest", str(folder), "--all", "--out", str(folder / name), *extra]) == 2
            one_line_error(capsys.readouterr().err, "run folder's own files")
    assert (folder / "samples.jsonl").read_bytes() == before


def test_harvest_refuses_an_existing_file_or_folder_and_leaves_no_temporary(sw, tmp_path, capsys):
    folder, _ = sw
    existing = tmp_path / "pairs.jsonl"
    existing.write_text("mine\n")
    assert main(["harvest", str(folder), "--all", "--out", str(existing)]) == 2
    one_line_error(capsys.readouterr().err, "already exists", "--force")
    assert existing.read_text() == "mine\n"
    assert main(["harvest", str(folder), "--all", "--out", str(tmp_path)]) == 2
    one_line_error(capsys.readouterr().err, "is a folder")
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    assert main(["harvest", str(folder), "--all", "--out", str(existing), "--force"]) == 0
    assert all("chosen" in json.loads(line) for line in existing.read_text().splitlines())


# --- 2. two writers -----------------------------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from harness.runs.folder_lock import folder_locked
with folder_locked(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_first(sw, capsys):
    folder, config = sw
    before = (folder / "samples.jsonl").read_bytes()
    holder = _holder(folder)
    try:
        assert main(["sweep", str(config), "--out", str(folder)]) == 2
        one_line_error(capsys.readouterr().err, "is being written by", f"pid {holder.pid}")
        assert main(["run", "--env", "basic_arithmetic", "--model", "x", "--out", str(folder)]) == 2
        one_line_error(capsys.readouterr().err, f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert (folder / "samples.jsonl").read_bytes() == before


def test_a_lock_left_by_a_dead_process_is_taken_over_saying_so(sw, capsys):
    folder, config = sw
    holder = _holder(folder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (folder / LOCK_FILE).exists()  # the dead writer never cleaned up
    assert main(["sweep", str(config), "--out", str(folder), "--no-report"]) == 0
    err = capsys.readouterr().err
    assert f"took over the writer lock of {folder} left by pid {holder.pid}" in err
    assert "no longer running" in err
    assert not (folder / LOCK_FILE).exists()  # released on the way out


def test_the_lock_holds_within_one_process_too(sw, tiny_model_dir):
    folder, _ = sw
    with folder_locked(folder), pytest.raises(ValueError, match="is being written by pid"):
        run_sweep(parse_config(small_sweep_data(tiny_model_dir)), folder, progress=False)


# --- 3, 6, 10, 11. strict reading ---------------------------------------------------------------------------------

def test_report_counts_each_valid_record_once_and_names_every_skipped_line(sw, capsys):
    folder, _ = sw
    good = sample_lines(folder)
    records = [json.loads(line) for line in good]
    outside = records[-1] | {"lambda": 0.5, "key": records[-1]["key"].replace("|1.0|", "|0.5|")}
    bad = [
        good[0],  # a duplicate (line n+1)
        b'{"foo": 1}',  # foreign (n+2)
        b"[1, 2, 3]",  # not an object (n+3)
        b'{"env": "x", \xff\xfe}',  # invalid UTF-8 (n+4)
        json.dumps(outside).encode(),  # outside the grid's lambdas (n+5)
        b"not json at all",  # (n+6)
        json.dumps(json.loads(good[1]) | {"correct": "yes"}).encode(),  # a field of the wrong type (n+7)
        json.dumps(json.loads(good[2]) | {"variant": {"n": 2, "lambda": 0.5}}).encode(),  # two axes (n+8)
    ]
    (folder / "samples.jsonl").write_bytes(b"\n".join(good + bad) + b"\n" + b'{"env": "torn')
    n = len(good)
    assert main(["report", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Traceback" not in out
    assert f"line {n + 1}: repeats line 1" in out
    for line, reason in [(n + 2, "missing"), (n + 3, "a JSON list"), (n + 4, "not UTF-8"),
                         (n + 5, "outside the spec's grid"), (n + 6, "not JSON"),
                         (n + 7, "correct = 'yes' is not true or false"),
                         (n + 8, "variant = {'n': 2, 'lambda': 0.5} is not one axis")]:
        assert any(f"line {line}: {prefix}{reason}" in out for prefix in ("", "not a record (")), (line, out)
    assert f"line {n + 9}: torn" in out
    _summary_matches(folder, records)
    assert len(pd.read_csv(folder / "samples.csv")) == len(records)
    html = (folder / "report.html").read_text()
    assert 'id="notes"' in html and f"line {n + 1}: repeats line 1" in html


def test_report_says_when_a_sweep_is_incomplete(sw, capsys):
    folder, _ = sw
    good = sample_lines(folder)
    (folder / "samples.jsonl").write_bytes(b"\n".join(good[:5]) + b"\n")
    assert main(["report", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"incomplete: 5 of {len(good)} records" in out
    assert f"incomplete: 5 of {len(good)} records" in (folder / "report.html").read_text()
    _summary_matches(folder, [json.loads(line) for line in good[:5]])


def test_resume_skips_bad_lines_and_fills_only_what_is_missing(sw, tiny_model_dir, capsys):
    folder, config = sw
    good = sample_lines(folder)
    (folder / "samples.jsonl").write_bytes(b"\n".join(good[:4] + [good[0], b'{"foo": 1}', b"\xff"]) + b"\n")
    assert main(["sweep", str(config), "--out", str(folder), "--no-report"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 lines" in err and "ignored 1 duplicate record" in err
    keys = [json.loads(line)["key"] for line in sample_lines(folder)[7:]]
    assert len(keys) == len(good) - 4  # exactly the missing ones, each once
    from harness.runs.store import RunDir

    contents = RunDir(folder).read(sweep_grid(parse_config(small_sweep_data(tiny_model_dir)).resolved()))
    assert contents.identities == expected_keys(parse_config(small_sweep_data(tiny_model_dir)))


@pytest.mark.parametrize("spec, needle", [
    ("[]", "is not a run or sweep spec"),
    ('{"sweep": ', "is not valid JSON (line 1, column"),
    ('{"sweep": {"models": ["m"]}}', "not a complete run or sweep spec (no 'envs' entry)"),
])
def test_a_corrupt_spec_is_one_clear_line(sw, capsys, spec, needle):
    folder, config = sw
    (folder / "spec.json").write_text(spec)
    for args in (["report", str(folder)], ["sweep", str(config), "--out", str(folder)],
                 ["harvest", str(folder), "--out", str(folder.parent / "p.jsonl")]):
        assert main(args) == 2
        one_line_error(capsys.readouterr().err, "spec.json", needle)


def test_report_on_another_tools_jsonl_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "samples.jsonl").write_text('{"text": "hello"}\n{"text": "world"}\n')
    assert main(["report", str(tmp_path)]) == 2
    one_line_error(capsys.readouterr().err, "holds no records", "line 1: not a record (missing env")
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    one_line_error(capsys.readouterr().err, "is not a folder")


# --- 5. settings never overridden silently -----------------------------------------------------------------------

def test_duplicate_yaml_keys_are_an_error_naming_both_lines(tmp_path, tiny_model_dir, capsys):
    text = yaml.safe_dump(small_sweep_data(tiny_model_dir), sort_keys=False) + "seeds: [1]\n"
    config = tmp_path / "dup.yaml"
    config.write_text(text)
    assert main(["sweep", str(config), "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys.readouterr().err, "key 'seeds' is given twice (lines", "keep one")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, needles", [
    (["--feedback", "binary", "--decoder-config", "feedback=ground_truth"], ["--feedback (='binary')", "disagree"]),
    (["--decoder-config", "lam=0.5", "--decoder-config", "lam=1"], ["gives lam twice (lam=0.5 and lam=1)"]),
    (["--env-config", "max_terms=2", "--env-config", "max_terms=3"], ["gives max_terms twice"]),
    (["--threads", "0"], ["--threads (=0) must be 1 or more"]),
    (["--threads", "-1"], ["--threads (=-1) must be 1 or more"]),
])
def test_a_setting_given_twice_or_out_of_range_is_refused(tmp_path, capsys, monkeypatch, args, needles):
    monkeypatch.setattr(model_pool, "load_model", must_not_load)
    base = ["run", "--env", "basic_arithmetic", "--decoder", "redumix", "--out", str(tmp_path / "o")]
    assert main(base + args) == 2
    one_line_error(capsys.readouterr().err, *needles)
    assert not (tmp_path / "o" / "spec.json").exists()


def test_sweep_threads_zero_is_refused(finished, tmp_path, capsys):
    _, config = finished
    assert main(["sweep", str(config), "--out", str(tmp_path / "o"), "--threads", "0"]) == 2
    one_line_error(capsys.readouterr().err, "--threads (=0)")


def test_a_config_that_is_not_utf8_is_one_clear_line(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert main(["sweep", str(config)]) == 2
    one_line_error(capsys.readouterr().err, "not UTF-8 text")


def test_run_into_a_sweep_folder_is_refused_and_keeps_it(sw, tiny_model_dir, capsys, no_loading):
    folder, _ = sw
    before = (folder / "samples.jsonl").read_bytes()
    assert main(["run", "--env", "basic_arithmetic", "--model", str(tiny_model_dir), "--out", str(folder)]) == 2
    one_line_error(capsys.readouterr().err, "already holds a `redumix sweep` folder")
    assert (folder / "samples.jsonl").read_bytes() == before


# --- 7. interrupts ----------------------------------------------------------------------------------------------

def _interrupted_cleanly(code: int, err: str, out: Path) -> list[dict]:
    """The records kept, after checking the exit code and the one closing line."""
    assert code == 130 and "Traceback" not in err
    kept = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]  # every line whole
    assert err.strip().splitlines()[-1] == (f"interrupted: {len(kept)} records kept in {out}; "
                                            "run the same command to resume")
    assert not (out / LOCK_FILE).exists()
    return kept


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_sweep_ends_with_one_line_and_resumes_exactly(tiny_model_dir, tmp_path, sig):
    data = sweep_data(tiny_model_dir, n=6, seeds=(0, 1), batch_size=1, max_new_tokens=16)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    code, err = signal_after(["sweep", str(config), "--out", str(out), "--threads", "1"],
                                 out / "samples.jsonl", 3, sig)
    kept = _interrupted_cleanly(code, err, out)
    expected = expected_keys(parse_config(data))
    assert 3 <= len(kept) < len(expected)

    result = run_sweep(parse_config(data), out, progress=False)
    keys = [json.loads(line)["key"] for line in sample_lines(out)]
    assert len(keys) == len(set(keys)) == len(expected) and set(keys) == expected
    assert result.new == len(expected) - len(kept)
    _summary_matches(out, [json.loads(line) for line in sample_lines(out)])


def test_an_interrupted_run_ends_with_one_line_and_resumes_exactly(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--env", "basic_arithmetic", "--env-config", "min_terms=2,max_terms=2", "--model",
            str(tiny_model_dir), "--n", "40", "--batch-size", "1", "--max-new-tokens", "16", "--out", str(out),
            "--threads", "1"]
    kept = _interrupted_cleanly(*signal_after(args, out / "samples.jsonl", 2, signal.SIGINT), out)
    assert 2 <= len(kept) < 40
    assert main(args) == 0
    assert f"{len(kept)} already recorded" in capsys.readouterr().out
    ids = [json.loads(line)["problem_id"] for line in sample_lines(out)]
    assert len(ids) == len(set(ids)) == 40


# --- 8, 9. targets checked before the work -------------------------------------------------------------------------

@pytest.fixture
def no_loading(monkeypatch):
    # Every run and sweep loads its models through the pool.
    monkeypatch.setattr(model_pool, "load_model", must_not_load)


def test_out_that_cannot_be_a_folder_is_refused_before_loading(tmp_path, finished, capsys, no_loading):
    _, config = finished
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for out, needle in [(a_file, "is a file, not a folder"), (a_file / "sub", "is a file; give a path under")]:
        for args in (["run", "--env", "basic_arithmetic", "--out", str(out)],
                     ["sweep", str(config), "--out", str(out)]):
            assert main(args) == 2
            one_line_error(capsys.readouterr().err, f"out (={str(out)!r})", needle)
    assert a_file.read_text() == "x"


def test_unwritable_samples_file_fails_before_any_decoding(tmp_path, finished, capsys, no_loading):
    _, config = finished
    for args in (["run", "--env", "basic_arithmetic", "--out", str(tmp_path / "r")],
                 ["sweep", str(config), "--out", str(tmp_path / "s")]):
        out = Path(args[args.index("--out") + 1])
        (out / "samples.jsonl").mkdir(parents=True)  # a folder where the records go
        assert main(args) == 2
        one_line_error(capsys.readouterr().err, "samples.jsonl is not a file")
        assert not (out / "spec.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_out_folder_is_refused(tmp_path, capsys, no_loading):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert main(["run", "--env", "basic_arithmetic", "--out", str(ro / "run")]) == 2
    one_line_error(capsys.readouterr().err, "cannot be")


def test_report_that_cannot_be_written_replaces_nothing(sw, capsys):
    folder, _ = sw
    before = {name: (folder / name).read_bytes() for name in ("summary.csv", "samples.csv")}
    (folder / "samples.jsonl").write_bytes(b"\n".join(sample_lines(folder)[:3]) + b"\n")  # the numbers would change
    (folder / "report.html").unlink()
    (folder / "report.html").mkdir()
    assert main(["report", str(folder)]) == 2
    one_line_error(capsys.readouterr().err, "report.html is a folder", "move it aside")
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert not list(folder.glob(".*.tmp"))


# --- 12. spec.json only for a config that runs; a folder without one ---------------------------------------------

def test_a_model_that_fails_to_load_leaves_no_spec(tmp_path, tiny_model_dir, capsys):
    bad_model = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, bad_model)
    (bad_model / "model.safetensors").write_bytes(b"not weights")
    data = small_sweep_data(bad_model)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "o"
    with pytest.raises(Exception):  # noqa: B017 (whatever transformers raises for broken weights)
        run_sweep(parse_config(data), out, progress=False)
    assert not (out / "spec.json").exists() and not (out / LOCK_FILE).exists()
    fixed = small_sweep_data(tiny_model_dir)
    assert run_sweep(parse_config(fixed), out, progress=False, write_report=False).new == len(
        expected_keys(parse_config(fixed)))


def test_records_without_a_spec_resume_when_they_all_belong(sw, tiny_model_dir, capsys):
    folder, config = sw
    good = sample_lines(folder)
    (folder / "spec.json").unlink()
    (folder / "samples.jsonl").write_bytes(b"\n".join(good[:6]) + b"\n")
    assert main(["sweep", str(config), "--out", str(folder), "--no-report"]) == 0
    assert "has no spec.json, but all 6 records in it belong to this sweep" in capsys.readouterr().err
    spec = json.loads((folder / "spec.json").read_text())
    # dtype auto and an unset batch invariance keep what the records name.
    first = json.loads(good[0])
    assert spec["sweep"] == parse_config(small_sweep_data(tiny_model_dir)).resolved() | {
        "dtype": first["dtype"], "batch_invariant": first["batch_invariant"]}
    assert len(sample_lines(folder)) == len(good)


def test_records_without_a_spec_that_do_not_belong_are_refused_naming_the_first(sw, tiny_model_dir, capsys):
    folder, config = sw
    good = sample_lines(folder)
    (folder / "spec.json").unlink()
    other = dict(small_sweep_data(tiny_model_dir), seeds=[5])
    (folder / "other.yaml").write_text(yaml.safe_dump(other))
    assert main(["sweep", str(folder / "other.yaml"), "--out", str(folder)]) == 2
    first_key = json.loads(good[0])["key"]
    one_line_error(capsys.readouterr().err, "not all of them belong to this sweep", repr(first_key), "--force-new")
    assert sample_lines(folder) == good and not (folder / "spec.json").exists()


# --- 13. derived files are replaced whole ------------------------------------------------------------------------

def test_a_report_killed_while_writing_leaves_the_old_files_whole(sw, monkeypatch):
    folder, _ = sw
    from harness.analysis import report
    from harness.runs import output_paths

    before = {name: (folder / name).read_bytes() for name in ("summary.csv", "samples.csv", "report.html")}
    replaced = []

    def replace_then_die(src, dst):
        if replaced:
            raise KeyboardInterrupt  # killed between two renames
        replaced.append(dst)
        os.replace(src, dst)

    (folder / "samples.jsonl").write_bytes(b"\n".join(sample_lines(folder)[:3]) + b"\n")
    monkeypatch.setattr(output_paths.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(folder)
    for name, data in before.items():
        now = (folder / name).read_bytes()
        assert now == data or Path(replaced[0]).name == name  # each file is the old one or the complete new one
        assert now  # never a 0-byte file
