"""Output targets, checked before any model loads, and files written so a crash or a
failed write never leaves a half-written one in place.

Checks probe by writing (a temporary file), not by permission bits, which say
nothing about read-only filesystems and everything is allowed to root anyway.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

# A run or sweep folder's own files: no command writes one of them as its output.
FOLDER_FILES = ("spec.json", "samples.jsonl", "summary.csv", "samples.csv", "samples.parquet", "comparisons.csv",
                "report.html", ".redumix.lock")


def prepare_folder(path: str | Path, param: str) -> Path:
    """Create `path` if needed and prove it is a folder that can be written.

    Raises:
        ValueError: naming `param`, the path and the fix.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{param} (={str(path)!r}) is a file, not a folder; give a folder path (it is created "
                         "if missing)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{param} (={str(path)!r}) cannot be created: {str(parent)!r} is a file; "
                                 "give a path under a folder")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{param} (={str(path)!r}) cannot be written ({err.strerror}); choose a folder you can "
                         "write to") from None
    return path


def check_new_file(path: str | Path, param: str, force: bool = False) -> Path:
    """Check that `path` may be written as a new output file, before any work is done.

    An existing file is refused unless `force`; a run or sweep folder's own files
    (spec.json, samples.jsonl, ...) are refused always; the folder must be writable.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{param} (={str(path)!r}) is a folder; give a file path, e.g. {path / 'pairs.jsonl'}")
    in_run_folder = (path.parent / "spec.json").exists() or (path.parent / "samples.jsonl").exists()
    if path.name in FOLDER_FILES and in_run_folder:
        raise ValueError(f"{param} (={str(path)!r}) is one of the run folder's own files; write somewhere else, "
                         f"e.g. {path.with_name('pairs.jsonl')}")
    if path.exists() and not force:
        raise ValueError(f"{param} (={str(path)!r}) already exists; choose another path, or pass --force to "
                         "replace it")
    prepare_folder(path.parent, f"the folder of {param}")
    return path


def write_atomically(path: str | Path, data: str | bytes) -> None:
    """Write `path` in full or not at all (see `write_all_atomically`)."""
    write_all_atomically({Path(path): data})


def write_all_atomically(files: dict[Path, str | bytes]) -> None:
    """Write several files so that either all are replaced or none is (bar a crash between renames).

    Every file is written to a temporary name first; only when all of them are written
    are they renamed into place. A write that fails leaves the old files untouched.

    Raises:
        OSError: the disk is full (ENOSPC, EDQUOT), naming the file being written.
        ValueError: any other write that fails, or a folder in a file's place.
    """
    staged: dict[Path, Path] = {}
    path = None
    try:
        for path, data in files.items():
            if path.is_dir():
                raise ValueError(f"{path} is a folder; move it aside so the file can be written")
            tmp = _temporary(path)
            staged[path] = tmp
            with open(tmp, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as err:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk: said as such, naming the file (not its temporary)
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise ValueError(f"cannot write {err.filename or 'the files'} ({err.strerror}); nothing was replaced") from None
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        raise
    try:
        for path, tmp in staged.items():
            os.replace(tmp, path)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def _temporary(path: Path) -> Path:
    # Same folder, so the rename is atomic; a name no reader mistakes for the real file.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")
