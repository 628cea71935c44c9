"""`redumix` in a child process, signalled once it has written some records; how a refused command ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def signal_after(args: list[str], samples: Path, lines: int, sig: int) -> tuple[int, str]:
    """Start `redumix ARGS`, send `sig` once `samples` has `lines` lines; (exit code, stderr)."""
    # SIGINT as a terminal would deliver it, even when these tests run as a background job
    # (whose shell starts children with SIGINT ignored, which Python then keeps).
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=ROOT,
                            env=dict(os.environ, PYTHONHASHSEED="0"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if samples.is_file() and samples.read_bytes().count(b"\n") >= lines:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the command ended before it could be signalled"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def one_line_error(err: str, *needles: str) -> str:
    """The stderr of a refused command: one line, no traceback, naming every needle."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def must_not_load(*_args, **_kwargs):
    """A stand-in for model loading that fails the test if called."""
    raise AssertionError("a model was loaded although the output could not be written")
