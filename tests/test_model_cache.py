"""The converted-GGUF cache: entries are reused, checked on load, and rebuilt when damaged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time

import pytest

from harness.console import third_party_output
from harness.engine import model_cache

WEIGHTS = b"w" * 100
CONFIG = '{"num_hidden_layers": 30}'


@pytest.fixture
def fake_conversion(monkeypatch, tmp_path):
    """Replace the slow GGUF conversion with one that writes two small files."""
    monkeypatch.setenv("REDUMIX_CACHE", str(tmp_path / "cache"))
    calls = []

    def convert(gguf_path, out):
        calls.append(gguf_path)
        (out / "model.safetensors").write_bytes(WEIGHTS)
        (out / "config.json").write_text(CONFIG)

    monkeypatch.setattr(model_cache, "_convert", convert)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"gguf")
    return gguf, calls


@pytest.fixture
def hashed(monkeypatch):
    """Names of the files hashed, in order."""
    names = []
    real = model_cache._sha256

    def spy(path):
        names.append(path.name)
        return real(path)

    monkeypatch.setattr(model_cache, "_sha256", spy)
    return names


@pytest.fixture
def weights_are_large(monkeypatch):
    """Treat the 100-byte fake weights as large: hashed only when their stat moved."""
    monkeypatch.setattr(model_cache, "FULL_HASH_MAX_BYTES", 50)


FIRST_CONVERSION = "note: converting m.gguf into the model cache, first run only (a few seconds)\n"


def converted_then_rebuilt(reason: str) -> str:
    """What stderr holds after a first conversion and a rebuild: one line for each."""
    return (FIRST_CONVERSION + f"redumix: the cached conversion of m.gguf failed its check ({reason}); converting "
            "again (a few seconds)\n")


def overwrite_middle(path, data: bytes) -> None:
    """What `dd conv=notrunc` does: same size, new bytes mid-file."""
    # Kernels without fine-grained timestamps stamp files with a ms-scale tick; let it
    # pass so the write is not stamped with the instant the conversion recorded.
    time.sleep(0.03)
    with path.open("r+b") as f:
        f.seek(len(path.read_bytes()) // 2)
        f.write(data)


def test_cache_converts_once_and_says_so_once(fake_conversion, capsys):
    gguf, calls = fake_conversion
    first, cached_first = model_cache.converted_gguf(gguf)
    assert capsys.readouterr().err == FIRST_CONVERSION
    second, cached_second = model_cache.converted_gguf(gguf)
    assert first == second and (cached_first, cached_second) == (False, True)
    assert len(calls) == 1
    assert capsys.readouterr().err == ""


def test_the_converters_own_output_shows_only_with_verbose(fake_conversion, monkeypatch, capsys):
    gguf, _ = fake_conversion
    convert = model_cache._convert

    def noisy(gguf_path, out):
        print("Converting and de-quantizing GGUF tensors...: 100%", file=sys.stderr)
        convert(gguf_path, out)

    monkeypatch.setattr(model_cache, "_convert", noisy)
    with third_party_output(verbose=False):
        model_cache.converted_gguf(gguf)
    assert capsys.readouterr().err == FIRST_CONVERSION
    shutil.rmtree(model_cache.entry_dir(gguf))
    with third_party_output(verbose=True):
        model_cache.converted_gguf(gguf)
    assert capsys.readouterr().err == FIRST_CONVERSION + "Converting and de-quantizing GGUF tensors...: 100%\n"


def test_a_failed_conversion_shows_what_the_converter_printed(fake_conversion, monkeypatch, capsys):
    gguf, _ = fake_conversion

    def broken(gguf_path, out):
        print("gguf: unsupported tensor type 99", file=sys.stderr)
        raise ValueError("cannot convert")

    monkeypatch.setattr(model_cache, "_convert", broken)
    with third_party_output(verbose=False), pytest.raises(ValueError, match="cannot convert"):
        model_cache.converted_gguf(gguf)
    assert capsys.readouterr().err == FIRST_CONVERSION + "gguf: unsupported tensor type 99\n"


@pytest.mark.parametrize(("megabytes", "words"), [
    (0.000004, "a few seconds"),
    (98.4, "about 15 s on 2 CPU cores"),  # the embedded model: 13-20 s measured
    (1000, "about 3 min on 2 CPU cores"),
])
def test_conversion_estimate(megabytes, words):
    assert model_cache.conversion_estimate(int(megabytes * 1e6)) == words


def test_manifest_records_size_and_sha256(fake_conversion):
    gguf, _ = fake_conversion
    folder, _ = model_cache.converted_gguf(gguf)
    manifest = json.loads((folder / model_cache.MANIFEST).read_text())
    assert manifest["format"] == 2
    record = manifest["files"]["model.safetensors"]
    assert (record["size"], record["sha256"]) == (100, hashlib.sha256(WEIGHTS).hexdigest())
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncate", "model.safetensors: size changed (100 -> 10 bytes)"),
        ("delete-manifest", "no manifest"),
        ("garble-manifest", "unreadable manifest"),
        ("delete-file", "config.json: missing"),
        ("extra-file", "adapter_config.json: not in the manifest"),
    ],
)
def test_corrupt_cache_entry_is_rebuilt(fake_conversion, capsys, damage, reason):
    gguf, calls = fake_conversion
    folder, _ = model_cache.converted_gguf(gguf)
    if damage == "truncate":
        (folder / "model.safetensors").write_bytes(b"w" * 10)
    elif damage == "delete-manifest":
        (folder / model_cache.MANIFEST).unlink()
    elif damage == "garble-manifest":
        (folder / model_cache.MANIFEST).write_text("{not json")
    elif damage == "delete-file":
        (folder / "config.json").unlink()
    else:
        (folder / "adapter_config.json").write_text("{}")
    again, cached = model_cache.converted_gguf(gguf)
    assert not cached and len(calls) == 2
    assert capsys.readouterr().err == converted_then_rebuilt(reason)
    assert model_cache.is_complete(again)
    assert sorted(p.name for p in again.iterdir()) == ["config.json", "model.safetensors", model_cache.MANIFEST]


@pytest.mark.parametrize("size", ["small", "large"])
def test_same_size_corruption_of_the_weights_is_rebuilt(fake_conversion, capsys, monkeypatch, size):
    if size == "large":
        monkeypatch.setattr(model_cache, "FULL_HASH_MAX_BYTES", 50)
    gguf, calls = fake_conversion
    folder, _ = model_cache.converted_gguf(gguf)
    overwrite_middle(folder / "model.safetensors", b"\0" * 20)
    assert (folder / "model.safetensors").stat().st_size == 100
    again, cached = model_cache.converted_gguf(gguf)
    assert not cached and len(calls) == 2
    assert capsys.readouterr().err == converted_then_rebuilt("model.safetensors: content changed")
    assert (again / "model.safetensors").read_bytes() == WEIGHTS


def test_large_file_corruption_is_caught_with_mtime_set_back(fake_conversion, capsys, weights_are_large):
    gguf, calls = fake_conversion
    folder, _ = model_cache.converted_gguf(gguf)
    weights = folder / "model.safetensors"
    before = weights.stat()
    overwrite_middle(weights, b"\0" * 20)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime still moves
    assert weights.stat().st_mtime_ns == before.st_mtime_ns
    _, cached = model_cache.converted_gguf(gguf)
    assert not cached and len(calls) == 2
    assert capsys.readouterr().err == converted_then_rebuilt("model.safetensors: content changed")


@pytest.mark.parametrize(
    ("edited", "reason"),
    [
        ('{"num_hidden_layers": 10}', "config.json: content changed"),
        ('{"num_hidden_layers": 9}', "config.json: size changed (25 -> 24 bytes)"),
    ],
)
def test_edited_config_is_rebuilt(fake_conversion, capsys, edited, reason):
    gguf, calls = fake_conversion
    folder, _ = model_cache.converted_gguf(gguf)
    config = folder / "config.json"
    before = config.stat()
    config.write_text(edited)
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))  # small files are hashed regardless
    again, cached = model_cache.converted_gguf(gguf)
    assert not cached and len(calls) == 2
    assert capsys.readouterr().err == converted_then_rebuilt(reason)
    assert (again / "config.json").read_text() == CONFIG


def test_size_only_manifest_of_format_1_is_rebuilt_in_place(fake_conversion, capsys):
    gguf, calls = fake_conversion
    folder, _ = model_cache.converted_gguf(gguf)
    old = {"source": str(gguf), "files": {"model.safetensors": 100, "config.json": len(CONFIG)}}
    (folder / model_cache.MANIFEST).write_text(json.dumps(old))
    again, cached = model_cache.converted_gguf(gguf)
    assert not cached and len(calls) == 2 and again == folder
    assert capsys.readouterr().err == converted_then_rebuilt("manifest format 1, expected 2")
    assert json.loads((again / model_cache.MANIFEST).read_text())["format"] == 2
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_valid_entry_rehashes_only_small_files(fake_conversion, hashed, weights_are_large):
    gguf, calls = fake_conversion
    model_cache.converted_gguf(gguf)
    assert sorted(hashed) == ["config.json", "model.safetensors"]  # the manifest's digests
    hashed.clear()
    _, cached = model_cache.converted_gguf(gguf)
    assert cached and len(calls) == 1
    assert hashed == ["config.json"]


def test_touched_weights_are_rehashed_once_and_kept(fake_conversion, capsys, hashed, weights_are_large):
    gguf, calls = fake_conversion
    folder, _ = model_cache.converted_gguf(gguf)
    os.utime(folder / "model.safetensors", ns=(1, 1))  # new fingerprint, same bytes
    hashed.clear()
    assert model_cache.converted_gguf(gguf)[1]
    assert "model.safetensors" in hashed
    hashed.clear()
    assert model_cache.converted_gguf(gguf)[1]  # the new fingerprint was recorded
    assert hashed == ["config.json"]
    assert len(calls) == 1 and capsys.readouterr().err == FIRST_CONVERSION


def test_cache_that_is_a_file_names_the_variable(fake_conversion, monkeypatch, tmp_path):
    gguf, calls = fake_conversion
    root = tmp_path / "cache-file"
    root.write_text("not a folder")
    monkeypatch.setenv("REDUMIX_CACHE", str(root))
    with pytest.raises(ValueError) as err:
        model_cache.converted_gguf(gguf)
    assert str(err.value) == (
        f"REDUMIX_CACHE (={str(root)!r}) cannot hold converted models (it is a file, not a folder); "
        "set REDUMIX_CACHE to a writable folder, or unset it to use ~/.cache/redumix"
    )
    assert calls == []


def test_unwritable_cache_names_the_variable(fake_conversion, monkeypatch, tmp_path):
    gguf, _ = fake_conversion
    (tmp_path / "somefile").write_text("x")
    root = tmp_path / "somefile" / "sub"  # chmod does not stop root; a file in the path does
    monkeypatch.setenv("REDUMIX_CACHE", str(root))
    with pytest.raises(ValueError, match=r"^REDUMIX_CACHE \(=.*/somefile/sub'\) cannot hold converted models") as err:
        model_cache.converted_gguf(gguf)
    assert f"cannot write {root / 'models'}: Not a directory" in str(err.value)
    assert str(err.value).endswith("set REDUMIX_CACHE to a writable folder, or unset it to use ~/.cache/redumix")


def test_unwritable_default_cache_says_to_set_the_variable(fake_conversion, monkeypatch, tmp_path):
    gguf, _ = fake_conversion
    (tmp_path / "home").write_text("x")
    monkeypatch.delenv("REDUMIX_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(ValueError, match="set REDUMIX_CACHE to a writable folder$") as err:
        model_cache.converted_gguf(gguf)
    assert str(err.value).startswith(f"the model cache {tmp_path / 'home' / '.cache' / 'redumix'} cannot hold")


def test_read_only_cache_serves_valid_entries_and_refuses_rebuilds(fake_conversion, monkeypatch, weights_are_large):
    gguf, calls = fake_conversion
    folder, _ = model_cache.converted_gguf(gguf)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(folder.parent))

    monkeypatch.setattr(model_cache.tempfile, "mkdtemp", denied)
    monkeypatch.setattr(model_cache, "_write_manifest", denied)
    os.utime(folder / "model.safetensors", ns=(1, 1))  # the fingerprint refresh fails quietly
    assert model_cache.converted_gguf(gguf) == (folder, True)
    (folder / "config.json").write_text('{"num_hidden_layers": 10}')
    with pytest.raises(ValueError, match=r"REDUMIX_CACHE .*cannot write .*: Permission denied\); set REDUMIX_CACHE"):
        model_cache.converted_gguf(gguf)
    assert len(calls) == 1


def test_a_rival_that_finishes_first_wins(fake_conversion, monkeypatch):
    gguf, calls = fake_conversion
    convert = model_cache._convert

    def racing(gguf_path, out):
        convert(gguf_path, out)
        if len(calls) == 1:  # another process completes the same entry meanwhile
            model_cache.converted_gguf(gguf_path)

    monkeypatch.setattr(model_cache, "_convert", racing)
    folder, cached = model_cache.converted_gguf(gguf)
    assert not cached and len(calls) == 2
    assert model_cache.is_complete(folder)
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


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
