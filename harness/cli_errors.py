"""What the command line says, and which exit code it returns, when a command fails.

Whatever a user can cause (a setting, a file, a full disk, too little memory, input nested too
deep, text in another encoding, a model or cluster the libraries refuse) ends in one line on
stderr that names the file or the settings involved and what to do, with an exit code per kind
(`EXIT_CODES`). With --debug (or REDUMIX_DEBUG=1) the traceback is shown above that line.
Anything else is a bug in redumix: its traceback is always shown, with a line asking the user
to report it.
"""

from __future__ import annotations

import errno
import traceback
from collections.abc import Callable
from dataclasses import dataclass

# Exit codes by kind (the README's table); 1 is a sweep whose units failed, 130 an interrupt.
EXIT_CODES: dict[str, int] = {
    "setting": 2,  # a setting or input file refused with our own message (argparse's usage errors too)
    "file": 3,  # a file or folder that cannot be read or written
    "disk full": 4,
    "memory": 5,
    "nesting": 6,  # input nested deeper than Python's recursion allows
    "encoding": 7,
    "torch": 8,
    "transformers": 9,  # and the libraries it loads models with (tokenizers, safetensors, huggingface_hub, ...)
    "gguf": 10,
    "ray": 11,
    "lm-eval": 12,
    "bug": 70,
}
DEBUG_ENV = "REDUMIX_DEBUG"

# A library's top-level module -> the kind its errors are reported as.
_LIBRARIES: dict[str, str] = {
    "torch": "torch",
    "transformers": "transformers",
    "tokenizers": "transformers",
    "safetensors": "transformers",
    "huggingface_hub": "transformers",
    "accelerate": "transformers",
    "peft": "transformers",
    "trl": "transformers",
    "gguf": "gguf",
    "ray": "ray",
    "lm_eval": "lm-eval",
}
_OURS = ("harness", "envs", "decoders", "__main__")
_LIBRARY_NAMES = {"torch": "torch", "transformers": "transformers", "gguf": "the GGUF reader", "ray": "Ray",
                  "lm-eval": "lm-eval"}


@dataclass(frozen=True)
class Context:
    """What the failing command was working with, for the message.

    settings: the settings a library error concerns, as the user wrote them (e.g. "--model M,
        --device cpu"); ray_settings: those a Ray error concerns; inputs: the files the command
        reads, for errors that name none; memory_hint: what lowers the command's memory; kept:
        the number of records the command's folder holds (None: no such folder).
    """

    settings: str = ""
    ray_settings: str = ""  # what a Ray error concerns, where the command uses Ray
    inputs: str = ""
    memory_hint: str = "use a smaller model or input"
    kept: Callable[[], int | None] = lambda: None


@dataclass(frozen=True)
class Failure:
    kind: str
    message: str  # one line

    @property
    def code(self) -> int:
        return EXIT_CODES[self.kind]

    @property
    def is_bug(self) -> bool:
        return self.kind == "bug"


def describe(err: BaseException, context: Context) -> Failure:
    """The kind of `err` and the one line that tells the user what happened and what to do."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return Failure("disk full", _disk_full(err, context))
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return Failure("memory", f"out of memory{_detail(err)}; {context.memory_hint}")
    if isinstance(err, RecursionError):
        return Failure("nesting", f"an input is nested too deeply to read{_where(context.inputs)}; look for "
                                  "brackets or indentation nested hundreds of levels deep, or a file that is not "
                                  "what it should be")
    if isinstance(err, UnicodeError):
        return Failure("encoding", f"text in an encoding other than UTF-8{_where(context.inputs)} ({_first(err)}); "
                                   "save the file as UTF-8")
    if isinstance(err, OSError) and err.filename is not None:
        return Failure("file", _file_problem(err))
    library = library_of(err)
    if library is not None:
        return Failure(library, _library_problem(library, err, context))
    if isinstance(err, OSError):
        return Failure("file", f"{_first(err)}{_where(context.inputs)}")
    if isinstance(err, ValueError):
        return Failure("setting", one_line(str(err)))
    return Failure("bug", f"internal error: {type(err).__name__}: {_first(err)}. This is a bug in redumix; please "
                          "report it with the command you ran and the traceback above")


def library_of(err: BaseException) -> str | None:
    """The library `err` came from (a kind of `EXIT_CODES`): its class's module, else the innermost
    frame of the traceback in a known library before our own code; None for our own errors."""
    kind = _LIBRARIES.get(type(err).__module__.split(".")[0])
    if kind is not None:
        return kind
    if isinstance(err, RuntimeError) and str(err).startswith(("CUDA error", "CUDA out of memory", "MPS backend")):
        return "torch"  # raised by a torch operator in C++, so no frame of torch's own is on the traceback
    for frame, _ in reversed(list(traceback.walk_tb(err.__traceback__))):
        top = str(frame.f_globals.get("__name__", "")).split(".")[0]
        if top in _OURS:
            return None
        if top in _LIBRARIES:
            return _LIBRARIES[top]
    return None


def one_line(text: str) -> str:
    """`text` with its lines joined by spaces (some library messages span several lines)."""
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _disk_full(err: OSError, context: Context) -> str:
    path = err.filename or "a file"
    kept = context.kept()
    if kept is None:
        return f"disk full writing {path}; free space and run the same command again"
    return f"disk full writing {path}: {kept} records kept; free space and run the same command to resume"


def _file_problem(err: OSError) -> str:
    files = str(err.filename) + (f" -> {err.filename2}" if getattr(err, "filename2", None) else "")
    why = err.strerror or type(err).__name__
    fixes = {errno.EACCES: "check its permissions", errno.EPERM: "check its permissions",
             errno.ENOENT: "check the path", errno.EISDIR: "give a file, not a folder",
             errno.ENOTDIR: "a part of the path is a file, not a folder", errno.EROFS: "choose a writable place",
             errno.ENAMETOOLONG: "choose a shorter path"}
    return f"{files}: {why}; {fixes.get(err.errno, 'check the path and try again')}"


def _library_problem(library: str, err: BaseException, context: Context) -> str:
    named = context.ray_settings if library == "ray" and context.ray_settings else context.settings
    settings = f" (with {named})" if named else ""
    return (f"{_LIBRARY_NAMES[library]} failed{settings}: {type(err).__name__}: {_first(err)}; check "
            f"{'those settings' if named else 'the input'} (--debug shows the traceback)")


def _first(err: BaseException) -> str:
    text = one_line(str(err))
    return text[:300] + ("..." if len(text) > 300 else "") if text else type(err).__name__


def _detail(err: BaseException) -> str:
    text = _first(err)
    return f" ({text})" if text != type(err).__name__ else ""


def _where(inputs: str) -> str:
    return f" in {inputs}" if inputs else ""
