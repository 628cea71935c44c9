"""`--dtype auto` and the dtype/device checks: the choice for given hardware, refusals before
any model loads, and resuming a folder in the dtype it was written in."""

from __future__ import annotations

import json

import pytest
import torch

from harness.cli import main
from harness.engine import model_pool, models
from harness.engine.dtype_choice import (
    Capabilities,
    check_dtype,
    choose_dtype,
    cpu_flags,
    dtype_problem,
)

EASY = ["--env-config", "min_terms=2,max_terms=2,min_digits=1,max_digits=1"]
BF16_CPU = Capabilities(cpu_flags=frozenset({"avx2", "avx512f", "avx512_bf16"}))  # no native fp16
PLAIN_CPU = Capabilities(cpu_flags=frozenset({"avx2", "fma"}))


# -- the choice --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "flags", "cuda_bf16", "expected"),
    [
        ("cpu", {"avx2", "avx512f", "avx512_bf16"}, False, "bfloat16"),
        ("cpu", {"avx2", "amx_tile", "amx_bf16"}, False, "bfloat16"),
        ("cpu", {"avx2", "avx512f", "avx512_fp16"}, False, "float32"),  # fp16 alone is no reason for bf16
        ("cpu", {"avx2", "fma"}, True, "float32"),  # a bf16 GPU says nothing about the CPU
        ("cpu", set(), False, "float32"),  # flags unknown
        ("cuda", set(), True, "bfloat16"),
        ("cuda", {"avx512_bf16"}, False, "float32"),  # nor the CPU about the GPU
        ("mps", {"avx512_bf16"}, True, "float32"),
    ],
)
def test_auto_picks_bfloat16_only_where_the_hardware_runs_it(kind, flags, cuda_bf16, expected):
    assert choose_dtype(kind, frozenset(flags), cuda_bf16) == expected


def test_check_dtype_resolves_auto_for_the_device_and_keeps_explicit_dtypes():
    both = Capabilities(cpu_flags=frozenset({"amx_bf16"}), cuda_bf16=False)
    assert check_dtype("auto", "cpu", both) == "bfloat16"
    assert check_dtype("auto", "cuda:1", both) == "float32"
    assert check_dtype("auto", "cuda:1", Capabilities(cuda_bf16=True)) == "bfloat16"
    assert check_dtype("float32", "cpu", PLAIN_CPU) == "float32"
    assert check_dtype("bfloat16", "cpu", PLAIN_CPU) == "bfloat16"  # slow there, but it runs: auto avoids it


# -- the checks --------------------------------------------------------------------


def test_float16_on_a_cpu_needs_native_fp16():
    message = dtype_problem("float16", "cpu", BF16_CPU.cpu_flags, False)
    assert message is not None
    assert "--dtype (='float16')" in message and "emulated" in message
    assert "bfloat16 or float32, or auto" in message and "auto, bfloat16, float16, float32" in message
    assert dtype_problem("float16", "cpu", {"avx512_fp16"}, False) is None
    assert dtype_problem("float16", "cpu", {"amx_fp16"}, False) is None
    assert dtype_problem("float16", "cuda", set(), False) is None  # GPUs run fp16


def test_bfloat16_on_cuda_needs_bf16_support():
    message = dtype_problem("bfloat16", "cuda:0", {"avx512_bf16"}, False, flag="dtype")
    assert message is not None
    assert message.startswith("dtype (='bfloat16')") and "'cuda:0'" in message
    assert "float16 or float32, or auto" in message
    assert dtype_problem("bfloat16", "cuda:0", set(), True) is None


def test_unknown_dtype_gets_the_closest_name():
    message = dtype_problem("bfloat61", "cpu", set(), False)
    assert message is not None and "--dtype (='bfloat61')" in message
    assert "Did you mean: bfloat16," in message and "Available: auto, bfloat16, float16, float32" in message
    with pytest.raises(ValueError, match="Did you mean: float32"):
        check_dtype("float23", "cpu", PLAIN_CPU)


def test_cuda_without_cuda_is_refused_and_auto_falls_back():
    with pytest.raises(ValueError, match=r"--device \(='cuda'\) asks for CUDA, but no CUDA device is available"):
        models.resolve_device("cuda", flag="--device", cuda_available=False)
    assert models.resolve_device("auto", cuda_available=False) == "cpu"
    assert models.resolve_device("auto", cuda_available=True) == "cuda"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n")
    assert cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16", "amx_tile"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


# -- refused before any model loads -------------------------------------------------


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load a model fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model load was attempted")

    monkeypatch.setattr(model_pool, "load_model", refuse)
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", refuse)


def _machine(monkeypatch, capabilities: Capabilities, cuda: bool = False) -> None:
    monkeypatch.setattr(models, "machine_capabilities", lambda device: capabilities)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)


@pytest.mark.parametrize(
    ("args", "capabilities", "cuda", "message"),
    [
        (["--dtype", "float16"], BF16_CPU, False, "--dtype (='float16') cannot run well on device 'cpu'"),
        (["--dtype", "bfloat16", "--device", "cuda"], BF16_CPU, True,
         "--dtype (='bfloat16') cannot run on device 'cuda'"),
        (["--device", "cuda"], BF16_CPU, False, "--device (='cuda') asks for CUDA, but no CUDA device is available"),
        (["--dtype", "float23"], BF16_CPU, False,
         "--dtype (='float23'): Unknown dtype 'float23'. Did you mean: float32,"),
    ],
)
def test_cli_run_refuses_before_loading(args, capabilities, cuda, message, tiny_model_dir, tmp_path, capsys,
                                        monkeypatch, no_loading):
    _machine(monkeypatch, capabilities, cuda)
    out = tmp_path / "never"
    code = main(["run", "--env", "basic_arithmetic", "--model", str(tiny_model_dir), "--n", "2", "--out", str(out),
                 *args])
    err = capsys.readouterr().err.replace("\n", " ")
    assert code == 2, err
    assert message in err, err
    assert not out.exists()


def test_sweep_config_refuses_float16_on_this_cpu_before_anything(monkeypatch, tmp_path, capsys, no_loading):
    _machine(monkeypatch, PLAIN_CPU)
    config = tmp_path / "half.yaml"
    config.write_text("models: [smollm2-135m]\ndtype: float16\nenvs: [{name: basic_arithmetic, n: 2}]\n"
                      "decoders: [{name: greedy}]\n")
    out = tmp_path / "never"
    assert main(["sweep", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "dtype (='float16') cannot run well on device 'cpu'" in err, err
    assert not out.exists()


def test_distill_takes_auto_and_refuses_float16_on_this_cpu(monkeypatch):
    from harness.distill import DistillOptions

    _machine(monkeypatch, BF16_CPU)
    assert DistillOptions().resolved().dtype == "float32"  # training keeps float32 unless asked
    assert DistillOptions(dtype="auto").resolved().dtype == "bfloat16"
    with pytest.raises(ValueError, match=r"--dtype \(='float16'\)"):
        DistillOptions(dtype="float16").resolved()


# -- what ran is recorded; a resume keeps the folder's dtype ------------------------


def _run(model_dir, out, *extra):
    return main(["run", "--env", "basic_arithmetic", "--model", str(model_dir), "--n", "4", "--seed", "0",
                 "--max-new-tokens", "6", "--batch-size", "2", "--out", str(out), *EASY, *extra])


def _records(out):
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def _spec(out):
    return json.loads((out / "spec.json").read_text())


def test_auto_records_the_dtype_that_ran(tiny_model_dir, tmp_path, monkeypatch):
    _machine(monkeypatch, BF16_CPU)
    out = tmp_path / "run"
    assert _run(tiny_model_dir, out) == 0
    spec = _spec(out)
    assert spec["run"]["dtype"] == "bfloat16" and spec["model"]["dtype"] == "bfloat16"
    assert [r["dtype"] for r in _records(out)] == ["bfloat16"] * 4


def test_auto_resumes_a_float32_folder_in_float32(tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert _run(tiny_model_dir, out, "--dtype", "float32") == 0
    # As written before records carried their dtype: the last two problems still to do.
    old = [{k: v for k, v in r.items() if k != "dtype"} for r in _records(out)[:2]]
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    capsys.readouterr()

    _machine(monkeypatch, BF16_CPU)  # auto alone would choose bfloat16 here
    assert _run(tiny_model_dir, out) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    assert "was decoded in float32" in err and "auto keeps float32" in err, err
    spec = _spec(out)
    assert spec["run"]["dtype"] == "float32" and spec["model"]["dtype"] == "float32"
    records = _records(out)
    assert [r["problem_id"] for r in records] == [f"basic_arithmetic-s0-{i}" for i in range(4)]
    assert [r.get("dtype") for r in records] == [None, None, "float32", "float32"]


def test_auto_resumes_a_folder_without_spec_in_its_records_dtype(tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert _run(tiny_model_dir, out, "--dtype", "float32") == 0
    old = [{k: v for k, v in r.items() if k != "dtype"} for r in _records(out)[:3]]
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    (out / "spec.json").unlink()
    capsys.readouterr()

    _machine(monkeypatch, BF16_CPU)
    assert _run(tiny_model_dir, out) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    assert "predate the `dtype` field" in err and "auto keeps float32" in err, err
    assert _spec(out)["run"]["dtype"] == "float32"
    assert _records(out)[-1]["dtype"] == "float32"


def test_an_explicit_other_dtype_is_refused_naming_both(tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert _run(tiny_model_dir, out, "--dtype", "float32") == 0
    before = (out / "samples.jsonl").read_text()
    _machine(monkeypatch, BF16_CPU)
    assert _run(tiny_model_dir, out, "--dtype", "bfloat16") == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "already holds a different run (differs in: dtype: float32 there, bfloat16 now)" in err, err
    assert (out / "samples.jsonl").read_text() == before


def test_auto_starts_another_run_in_the_machines_choice(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """A folder holding a different run is not a reason to keep its dtype: auto chooses, and the folder is refused."""
    out = tmp_path / "run"
    assert _run(tiny_model_dir, out, "--dtype", "float32") == 0
    _machine(monkeypatch, BF16_CPU)
    assert _run(tiny_model_dir, out, "--seed", "1") == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "differs in: dtype: float32 there, bfloat16 now, seed" in err, err


def test_a_sweep_with_auto_resumes_in_its_folders_dtype(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from harness.runs.sweep import run_sweep
    from harness.runs.sweep_config import parse_config

    data = {"models": [str(tiny_model_dir)], "max_new_tokens": 6, "batch_size": 2,
            "envs": [{"name": "basic_arithmetic", "n": 2, "config": {"min_terms": 2, "max_terms": 2}}],
            "decoders": [{"name": "greedy"}]}
    out = tmp_path / "sweep"
    run_sweep(parse_config(data | {"dtype": "float32"}), out, progress=False, write_report=False)
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text(lines[0] + "\n")
    capsys.readouterr()

    _machine(monkeypatch, BF16_CPU)
    config = parse_config(data)
    assert config.dtype == "auto"
    result = run_sweep(config, out, progress=False, write_report=False)
    assert result.new == 1 and result.total == 2
    assert "auto keeps float32" in capsys.readouterr().err
    spec = _spec(out)
    assert spec["sweep"]["dtype"] == "float32"
    assert {m["dtype"] for m in spec["models"].values()} == {"float32"}
    assert {r["dtype"] for r in _records(out)} == {"float32"}

    fresh = tmp_path / "fresh"
    run_sweep(config, fresh, progress=False, write_report=False)
    assert _spec(fresh)["sweep"]["dtype"] == "bfloat16"
    assert {r["dtype"] for r in _records(fresh)} == {"bfloat16"}


def test_every_dtype_choice_but_auto_is_one_a_model_loads_in():
    from harness.engine.dtype_choice import DTYPE_CHOICES

    assert set(DTYPE_CHOICES) - {"auto"} == set(models.DTYPES)
