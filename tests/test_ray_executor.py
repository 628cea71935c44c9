"""`redumix sweep --executor ray`: the same records as the local executor, an actor killed
mid-sweep, a driver killed mid-sweep and run again, a unit that always fails, and a sweep
module that imports no Ray."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
import time

import pytest

from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import parse_config
from tests.helpers.sweeps import expected_keys, read_records, sweep_data, without_timings

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(model_dir):
    # greedy + ReDuMix with 2 lambdas on 3 problems (the sampling decoder left out)
    data = sweep_data(model_dir, n=3, seeds=(0,), lambdas=(0, 1), policies=("binary",))
    data["decoders"] = [d for d in data["decoders"] if d["name"] != "sample"]
    return parse_config(data)


def test_the_sweep_module_imports_no_ray():
    code = "import sys, harness.runs.sweep, harness.cli; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_executor_ray_without_ray_is_refused_before_anything_is_written(tiny_model_dir, tmp_path, monkeypatch,
                                                                        capsys):
    import importlib.util

    import yaml

    from harness.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(sweep_data(tiny_model_dir, n=1, seeds=(0,))))
    assert main(["sweep", str(config), "--out", str(tmp_path / "out"), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--executor ray" in err and 'pip install ".[ray]"' in err
    assert not (tmp_path / "out").exists()
    assert main(["sweep", str(config), "--out", str(tmp_path / "out"), "--ray-actors", "2"]) == 2
    assert "only apply with --executor ray" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    import os

    from harness.runs.ray_executor import worker_env_vars
    from harness.runs.ray_local import init_loopback_ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    temp = tempfile.mkdtemp(prefix="redumix-ray-test-")  # short: Ray's socket paths have a length limit
    began = time.perf_counter()
    init_loopback_ray(num_cpus=2, include_dashboard=False, _temp_dir=temp,
                      runtime_env={"env_vars": worker_env_vars()}, logging_level="warning")
    startup_s = time.perf_counter() - began
    yield startup_s
    ray.shutdown()
    import shutil

    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_done(tiny_model_dir, tmp_path_factory):
    config = _config(tiny_model_dir)
    out = tmp_path_factory.mktemp("local") / "s"
    run_sweep(config, out, progress=False, write_report=False)
    return config, read_records(out)


def _ray(**options):
    from harness.runs.ray_executor import RayExecutor

    return functools.partial(RayExecutor, actors=2, cpus_per_actor=1, **options)


def test_two_actors_give_the_local_executors_records(ray_instance, local_done, tmp_path):
    config, local = local_done
    result = run_sweep(config, tmp_path / "s", progress=False, write_report=True, executor=_ray())
    records = read_records(tmp_path / "s")
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == result.total == result.new == len(local) == 3 * (1 + 2)
    # Batch-invariant decoding: the same numbers on actors of 1 CPU thread as locally on 2.
    assert without_timings(records) == without_timings(local)
    assert result.failed_units == []
    # greedy's answers were the ReDuMix units' first attempts: the group ran on one actor
    assert all(r["stage1_reused"] for r in records if r["decoder"] == "redumix")
    spec = json.loads((tmp_path / "s" / "spec.json").read_text())
    assert spec["models"][str(config.models[0])]["parameters"] > 0
    assert result.timings["load_s"] > 0 and (tmp_path / "s" / "report.html").exists()


def test_an_actor_that_dies_mid_unit_is_restarted_and_its_unit_redone(ray_instance, local_done, tmp_path):
    from harness.runs.ray_executor import EXIT_ONCE_ENV

    config, local = local_done
    marker = tmp_path / "died"
    result = run_sweep(config, tmp_path / "s", progress=False, write_report=False,
                       executor=_ray(env_vars={EXIT_ONCE_ENV: str(marker)}))
    assert marker.exists()  # an actor did end its process
    records = read_records(tmp_path / "s")
    keys = [r["key"] for r in records]
    assert result.failed_units == []
    assert len(keys) == len(set(keys)) == len(local) == result.new and set(keys) == expected_keys(config)
    assert without_timings(records) == without_timings(local)


def _signalled_ray_sweep(tiny_model_dir, tmp_path, signum):
    """(config data, folder, exit code, stderr) of `redumix sweep --executor ray` (the driver, the single
    writer, with its own local Ray instance) sent `signum` once a unit's records are in."""
    import yaml

    from tests.helpers.cli import signal_after

    data = sweep_data(tiny_model_dir, n=3, seeds=(0, 1), lambdas=(0, 1), policies=("binary",))
    data["decoders"] = [d for d in data["decoders"] if d["name"] != "sample"]
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "s"
    code, err = signal_after(["sweep", str(config_file), "--out", str(out), "--no-report", "--executor", "ray",
                              "--ray-actors", "1", "--ray-cpus-per-actor", "1"], out / "samples.jsonl", 3, signum)
    return data, out, code, err


def test_a_driver_killed_mid_sweep_is_resumed_to_the_full_duplicate_free_set(ray_instance, tiny_model_dir, tmp_path):
    import signal

    data, out, code, _ = _signalled_ray_sweep(tiny_model_dir, tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    config = parse_config(data)
    kept = (out / "samples.jsonl").read_bytes().count(b"\n")
    assert 3 <= kept < len(expected_keys(config))
    result = run_sweep(config, out, progress=False, write_report=False, executor=_ray())
    keys = [r["key"] for r in read_records(out)]
    assert result.failed_units == [] and result.new == len(expected_keys(config)) - kept
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(config)


def test_a_unit_that_always_fails_is_reported_and_the_others_written(ray_instance, local_done, tiny_model_dir,
                                                                       tmp_path):
    from harness.runs.ray_executor import FAIL_UNIT_ENV

    data = sweep_data(tiny_model_dir, n=3, seeds=(0, 1), lambdas=(0, 1), policies=("binary",))
    data["decoders"] = [d for d in data["decoders"] if d["name"] != "sample"]
    config = parse_config(data)
    failing = "basic_arithmetic greedy s1"
    result = run_sweep(config, tmp_path / "s", progress=False, write_report=True,
                       executor=_ray(env_vars={FAIL_UNIT_ENV: failing}))
    (failed,) = result.failed_units
    assert failed["label"] == failing and "failed on purpose" in failed["error"] and failed["missing"] == 3
    keys = {r["key"] for r in read_records(tmp_path / "s")}
    missing = expected_keys(config) - keys
    assert len(missing) == 3
    assert {(k.split("|")[3], k.split("|")[5]) for k in missing} == {("greedy", "1")}
    assert result.total == result.new == len(expected_keys(config)) - 3
    assert any("incomplete" in note for note in result.report.notes)


def test_cli_names_the_failed_units_and_exits_1(ray_instance, tiny_model_dir, tmp_path, monkeypatch, capsys):
    import yaml

    from harness.cli import main
    from harness.runs import ray_executor

    env_vars = ray_executor.worker_env_vars
    failing = "basic_arithmetic redumix binary s0"
    monkeypatch.setattr(ray_executor, "worker_env_vars", lambda: env_vars() | {ray_executor.FAIL_UNIT_ENV: failing})
    data = sweep_data(tiny_model_dir, n=2, seeds=(0,), lambdas=(0, 1), policies=("binary",))
    data["decoders"] = [d for d in data["decoders"] if d["name"] != "sample"]
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    args = ["sweep", str(config), "--out", str(out), "--executor", "ray", "--ray-actors", "2",
            "--ray-cpus-per-actor", "1"]
    assert main(args) == 1
    printed = capsys.readouterr()
    assert "records: 2 (2 new, 0 already recorded)" in printed.out and "incomplete: 2 of 6 records" in printed.out
    assert "failed units: 1 (4 records missing" in printed.err and f"  {failing}: RuntimeError" in printed.err
    monkeypatch.setattr(ray_executor, "worker_env_vars", env_vars)
    assert main(args) == 0  # the re-run decodes only the failed unit's records
    assert "records: 6 (4 new, 2 already recorded)" in capsys.readouterr().out


def test_the_driver_drops_records_it_already_holds(tiny_model_dir, tmp_path):
    """An executor that retries may send a unit's records twice (Ray is at-least-once): written once."""
    from harness.runs.executor import LocalExecutor

    class Twice(LocalExecutor):
        def map_units(self, items):
            for unit, records in super().map_units(items):
                yield unit, records + records
                yield unit, records

    config = _config(tiny_model_dir)
    result = run_sweep(config, tmp_path / "s", progress=False, write_report=False, executor=Twice)
    keys = [r["key"] for r in read_records(tmp_path / "s")]
    assert len(keys) == len(set(keys)) == result.new == result.total and set(keys) == expected_keys(config)


def test_a_unit_that_kills_its_actor_every_time_is_given_up_and_the_actor_replaced(ray_instance, tiny_model_dir,
                                                                                     tmp_path):
    from harness.runs.ray_executor import FAIL_UNIT_ENV

    data = sweep_data(tiny_model_dir, n=2, seeds=(0,), lambdas=(0, 1), policies=("binary",))
    data["decoders"] = [d for d in data["decoders"] if d["name"] != "sample"]
    config = parse_config(data)
    # One actor: the units after the fatal one can only run on the actor that replaced it.
    result = run_sweep(config, tmp_path / "s", progress=False, write_report=False,
                       executor=functools.partial(_ray(env_vars={FAIL_UNIT_ENV: "exit:basic_arithmetic greedy s0"}),
                                                  actors=1, max_restarts=1, max_attempts=2))
    (failed,) = result.failed_units
    assert failed["label"] == "basic_arithmetic greedy s0" and "died 2 times" in failed["error"]
    keys = {r["key"] for r in read_records(tmp_path / "s")}
    assert keys == {k for k in expected_keys(config) if "|redumix|" in k} and result.new == 4


def test_actors_load_models_quietly_unless_verbose(monkeypatch):
    pytest.importorskip("ray")
    from harness.console import third_party_output
    from harness.runs.ray_executor import worker_env_vars

    for name in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    assert "TRANSFORMERS_VERBOSITY" not in worker_env_vars()  # outside a command: nothing decided for the user
    with third_party_output(verbose=False):
        quiet = worker_env_vars()
    assert quiet["TRANSFORMERS_VERBOSITY"] == "error" and quiet["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    with third_party_output(verbose=True):
        assert "HF_HUB_DISABLE_PROGRESS_BARS" not in worker_env_vars()
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")  # the user's own setting wins
    with third_party_output(verbose=False):
        assert worker_env_vars()["TRANSFORMERS_VERBOSITY"] == "info"


@pytest.mark.integration
def test_the_quick_sweep_gives_identical_records_locally_and_on_two_actors(ray_instance, tmp_path):
    from pathlib import Path

    from harness.runs.sweep_config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "quick.yaml")
    run_sweep(config, tmp_path / "local", progress=False, write_report=False)
    # Locally with the prefix cache on 2 threads; on actors of 1 thread without it.
    result = run_sweep(config, tmp_path / "ray", progress=False, write_report=False, executor=_ray(),
                       prefix_cache_mb=0)
    assert result.failed_units == []
    local, on_ray = read_records(tmp_path / "local"), read_records(tmp_path / "ray")
    assert {r["batch_invariant"] for r in local} == {True} and len(local) == 6 * 4
    assert without_timings(on_ray) == without_timings(local)


def test_sigterm_to_a_ray_sweep_is_an_interrupt_that_keeps_the_records(ray_instance, tiny_model_dir, tmp_path):
    """ray.init installs a SIGTERM handler that exits at once; the command's own comes back after it."""
    import signal

    data, out, code, err = _signalled_ray_sweep(tiny_model_dir, tmp_path, signal.SIGTERM)
    kept = (out / "samples.jsonl").read_bytes().count(b"\n")
    assert code == 130, err
    assert err.strip().splitlines()[-1] == f"interrupted: {kept} records kept in {out}; run the same command to resume"
    assert "Traceback" not in err
    config = parse_config(data)
    result = run_sweep(config, out, progress=False, write_report=False, executor=_ray())
    keys = [r["key"] for r in read_records(out)]
    assert result.new == len(expected_keys(config)) - kept and set(keys) == expected_keys(config)
    assert len(keys) == len(set(keys))
