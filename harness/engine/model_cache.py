"""Cache of GGUF models converted to safetensors, so only the first load pays the
dequantisation and tokenizer conversion.

An entry is a folder written under a temporary name and renamed into place once
complete, with a manifest written last that records each file's size, SHA-256 and
stat fingerprint (size, mtime_ns, ctime_ns, inode). Every load checks the entry:

- files up to FULL_HASH_MAX_BYTES (config.json, generation_config.json, the
  tokenizer files) are hashed in full, so any edit to them is caught;
- larger files (the weights) are hashed in full only when their fingerprint differs
  from the manifest's. Any write through the file system (dd conv=notrunc, an editor,
  a copy over the file, a restored backup) moves its mtime and ctime, or its inode,
  so it is caught even at the same size, and even when mtime is set back (ctime
  cannot be). A re-hashed file whose content is unchanged gets its new fingerprint
  recorded, so the next load is cheap again;
- a missing, resized or unreadable file, a file the manifest does not list, a
  missing or unreadable manifest, or one from an older format (size-only) all make
  the entry stale.

Not caught: bytes of a large file changed without its metadata moving, i.e. below
the file system (disk or controller faults, bit rot, writes to the raw block
device), with the system clock set back to the old ctime, or within the same
timestamp tick as the conversion (a few ms, on kernels without fine-grained
timestamps). Nor is the manifest a security boundary: whoever can write the cache
can write a consistent manifest.

A stale entry is rebuilt, with one line on stderr naming the file and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from harness.console import note, third_party_stderr_held
from harness.engine import gguf_file

MANIFEST = "redumix-cache.json"
# 1: sizes only. 2: size, SHA-256 and stat fingerprint per file.
_FORMAT = 2

# Measured on the 2-core dev machine: hashlib.sha256 reads ~1.5 GB/s, so the 540 MB
# float32 weights of smollm2-135m take 0.34-0.47 s (warm page cache; more when cold),
# +35-50% on a ~1 s cached load and not well under 0.5 s. Hence weights are re-hashed
# only when their stat fingerprint moved; files this small cost at most ~10 ms each.
FULL_HASH_MAX_BYTES = 16 << 20

# Measured on a 2-core CPU: the embedded model's 98 MB GGUF (SmolLM2-135M, Q4_1) converts in
# 13-20 s (the spread: other work on the cores), most of it dequantising and writing the
# float32 weights, which grow with the file.
CONVERSION_S_PER_MB = 0.16

_FIX = "set REDUMIX_CACHE to a writable folder, or unset it to use ~/.cache/redumix"


def cache_root() -> Path:
    root = os.environ.get("REDUMIX_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "redumix"


def entry_dir(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    # The trailing 1 names the key layout, not the manifest format: it stays put so
    # an entry from an older format is found, reported stale and replaced in place.
    key = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|1"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{gguf_path.stem}-{digest}"


def conversion_estimate(gguf_bytes: int) -> str:
    """How long converting a GGUF file of `gguf_bytes` takes, in words, e.g. "about 20 s on 2 CPU cores"."""
    seconds = gguf_bytes / 1e6 * CONVERSION_S_PER_MB
    if seconds < 10:
        return "a few seconds"
    if seconds < 120:
        return f"about {5 * round(seconds / 5)} s on 2 CPU cores"
    return f"about {round(seconds / 60)} min on 2 CPU cores"


def is_complete(folder: Path) -> bool:
    """True when `folder` holds an entry that passes the load-time check."""
    return folder.is_dir() and check_entry(folder)[0] is None


def check_entry(folder: Path) -> tuple[str | None, dict[str, list[int]]]:
    """Why the entry in `folder` cannot be used (None when it can), and the new
    fingerprints of large files that were re-hashed and found unchanged."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest", {}
    except (OSError, ValueError):
        return "unreadable manifest", {}
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        return "unreadable manifest", {}
    if manifest.get("format", 1) != _FORMAT:
        return f"manifest format {manifest.get('format', 1)}, expected {_FORMAT}", {}
    files = manifest["files"]
    moved = {}
    for name, record in files.items():
        try:
            problem, fingerprint = _check_file(folder / name, record)
        except (KeyError, TypeError):
            return "unreadable manifest", {}
        if problem:
            return f"{name}: {problem}", {}
        if fingerprint:
            moved[name] = fingerprint
    # A stray file can change what loads (a second shard, an adapter config).
    extra = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in files and _listable(p.name))
    if extra:
        return f"{extra[0]}: not in the manifest", {}
    return None, moved


def converted_gguf(gguf_path: Path) -> tuple[Path, bool]:
    """Folder of a loadable safetensors copy of `gguf_path`, and whether it was cached.

    Raises:
        ValueError: a conversion is needed and the cache cannot be written.
    """
    folder = entry_dir(gguf_path)
    estimate = conversion_estimate(gguf_path.stat().st_size)
    first = not folder.is_dir()
    if not first:
        problem, moved = check_entry(folder)
        if problem is None:
            _refresh_fingerprints(folder, moved)
            return folder, True
        print(
            f"redumix: the cached conversion of {gguf_path.name} failed its check ({problem}); converting again "
            f"({estimate})",
            file=sys.stderr,
        )
        shutil.rmtree(folder, ignore_errors=True)
    gguf_file.check_complete(gguf_path)  # a file cut short is named now, not deep inside the converter
    staging = _staging_dir(folder)
    if first:  # said once the cache proved writable; a rebuild's line above says it already
        note(f"converting {gguf_path.name} into the model cache, first run only ({estimate})")
    try:
        # Its progress bars and warnings are the converter's business; our note above says what happens.
        with third_party_stderr_held():
            _convert(gguf_path, staging)
        files = {p.name: _file_record(p) for p in sorted(staging.iterdir()) if p.is_file()}
        _write_manifest(staging, {"format": _FORMAT, "source": str(gguf_path), "files": files})
        try:
            staging.rename(folder)
        except OSError:
            # Another process finished the same entry first; theirs is as good as ours.
            if not is_complete(folder):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder, False


def _fingerprint(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _file_record(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "sha256": _sha256(path), "stat": _fingerprint(stat)}


def _check_file(path: Path, record: dict) -> tuple[str | None, list[int] | None]:
    """Problem with one cached file (None if none), and its fingerprint when it moved
    but the content is unchanged."""
    try:
        stat = path.stat()
        if stat.st_size != record["size"]:
            return f"size changed ({record['size']} -> {stat.st_size} bytes)", None
        fingerprint = _fingerprint(stat)
        if stat.st_size > FULL_HASH_MAX_BYTES and fingerprint == record["stat"]:
            return None, None
        if _sha256(path) != record["sha256"]:
            return "content changed", None
    except FileNotFoundError:
        return "missing", None
    except OSError as err:
        return f"unreadable ({err.strerror or err})", None
    return None, fingerprint if fingerprint != record["stat"] else None


def _listable(name: str) -> bool:
    # Hidden names are our own manifest temp files (and nothing transformers loads).
    return name != MANIFEST and not name.startswith(".")


def _write_manifest(folder: Path, manifest: dict) -> None:
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / MANIFEST)


def _refresh_fingerprints(folder: Path, moved: dict[str, list[int]]) -> None:
    """Record the fingerprints of re-hashed, unchanged files so later loads skip the
    hash; best effort, since a valid entry in a read-only cache is still usable."""
    if not moved:
        return
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        for name, fingerprint in moved.items():
            manifest["files"][name]["stat"] = fingerprint
        _write_manifest(folder, manifest)
    except (OSError, ValueError, KeyError, TypeError):
        pass


def _staging_dir(folder: Path) -> Path:
    """A fresh private folder beside `folder`. Creating it is the write probe: as root,
    os.access says yes to folders that cannot be written."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=folder.name + ".partial-", dir=folder.parent))
    except OSError as err:
        raise ValueError(unwritable_message(cache_root(), os.environ.get("REDUMIX_CACHE"), err)) from err


def unwritable_message(root: Path, setting: str | None, err: OSError) -> str:
    """One-line error for a cache root that cannot hold a new conversion."""
    if root.exists() and not root.is_dir():
        why = "it is a file, not a folder"
    else:
        why = f"cannot write {err.filename}: {err.strerror or err}" if err.filename else str(err)
    if setting:
        return f"REDUMIX_CACHE (={setting!r}) cannot hold converted models ({why}); {_FIX}"
    return f"the model cache {root} cannot hold converted models ({why}); set REDUMIX_CACHE to a writable folder"


def _convert(gguf_path: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype="float32", **kwargs)
    # The weights are already dequantised; drop the GGUF markers that make
    # save_pretrained refuse the model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
