"""Cache of GGUF models converted to safetensors, so only the first load pays the
dequantisation and tokenizer conversion.

An entry is a folder written under a temporary name and renamed into place once
complete, with a manifest of file sizes written last. An entry whose manifest is
missing or does not match its files is treated as absent and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

MANIFEST = "redumix-cache.json"
_FORMAT = 1


def cache_root() -> Path:
    root = os.environ.get("REDUMIX_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "redumix"


def entry_dir(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{_FORMAT}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{gguf_path.stem}-{digest}"


def is_complete(folder: Path) -> bool:
    """True when `folder` holds a manifest whose listed files all exist with their sizes."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        return bool(files) and all((folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def converted_gguf(gguf_path: Path) -> tuple[Path, bool]:
    """Folder of a loadable safetensors copy of `gguf_path`, and whether it was cached."""
    folder = entry_dir(gguf_path)
    if is_complete(folder):
        return folder, True
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".partial-", dir=folder.parent))
    try:
        _convert(gguf_path, staging)
        files = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
        (staging / MANIFEST).write_text(json.dumps({"source": str(gguf_path), "files": files}))
        try:
            staging.rename(folder)
        except OSError:
            # Another process finished the same entry first; theirs is as good as ours.
            if not is_complete(folder):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder, False


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
