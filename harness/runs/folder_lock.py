"""One writer per folder: an OS-level lock on `<folder>/.redumix.lock`.

The lock is `flock` on a file that holds the writer's pid, host, command and start
time, so a second writer can be told who holds it. The kernel drops the lock when its
process dies, however it dies; a lock file left with a holder's details but no lock
on it is therefore stale, and is taken over with a note saying whose it was.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".redumix.lock"


class FolderBusy(ValueError):
    """Another live process is writing the folder."""


def holder_details() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(["redumix", *sys.argv[1:]]),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


@contextmanager
def folder_locked(folder: str | Path, param: str = "out",
                  note: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold `folder`'s writer lock for the block (the folder must exist).

    Raises:
        FolderBusy: another live process holds it; the message names that process.
    """
    path = Path(folder) / LOCK_FILE
    fd, stale = _acquire(path, param)
    try:
        if stale and note is not None:
            note(f"took over the writer lock of {folder} left by {_who(stale)}, which is no longer running")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_details()) + "\n").encode(), 0)
        yield
    finally:
        # Unlinked while still held, so no one can lock the old file after we let go.
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def _acquire(path: Path, param: str) -> tuple[int, dict | None]:
    """(open descriptor holding the lock, details a dead holder left in the file, if any)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise FolderBusy(
                f"{param} (={str(path.parent)!r}) is being written by {_who(holder)}; wait for it to finish "
                f"(or stop it), or choose another {param}"
            ) from None
        # The previous holder may have unlinked the file between our open and our lock: retry on the new one.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, _read(fd)
        os.close(fd)


def _read(fd: int) -> dict | None:
    try:
        details = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "null")
    except (OSError, ValueError):
        return None
    return details if isinstance(details, dict) else None


def _who(details: dict | None) -> str:
    if not details:
        return "another redumix process"
    return (f"pid {details.get('pid')} on {details.get('host')} (`{details.get('command')}`, "
            f"since {details.get('since')})")
