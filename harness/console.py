"""What the console shows: our own notes (one line each on stderr, clear of progress bars) and
our own progress bars always; third-party output (transformers' and huggingface_hub's
progress bars and logged warnings, the GGUF loader's bar, warnings about library internals)
only with --verbose.

The quiet set-up is scoped: the command line runs each command inside
`third_party_output(verbose)`, which restores every setting it changed on the way out.
Importing `harness` changes nothing, so a program that uses it as a library keeps its own
logging and progress-bar settings.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Iterator

from tqdm.auto import tqdm

# Warnings that third-party code raises about other third-party code: nothing a user of
# redumix can act on. (category, regex matched against the start of the message)
UNACTIONABLE_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # peft and TRL still call transformers' old name while training (distill --lora, --objective dpo).
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)

_quiet = False


def note(message: str) -> None:
    tqdm.write(f"note: {message}", file=sys.stderr)


def is_quiet() -> bool:
    """True while a command runs without --verbose (inside `third_party_output(False)`)."""
    return _quiet


@contextlib.contextmanager
def third_party_output(verbose: bool) -> Iterator[None]:
    """Inside the block, third-party progress bars and logging below ERROR are hidden and the
    `UNACTIONABLE_WARNINGS` ignored, unless `verbose`; on exit every setting is as it was.

    Settings the user made through the libraries' own environment variables win:
    TRANSFORMERS_VERBOSITY keeps transformers' log level, HF_HUB_DISABLE_PROGRESS_BARS keeps
    the progress bars as it says.
    """
    global _quiet
    if verbose:
        yield
        return
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    own_verbosity = "TRANSFORMERS_VERBOSITY" not in os.environ
    own_bars = "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    verbosity = hf_logging.get_verbosity()
    bars_shown = hf_logging.is_progress_bar_enabled()
    hub_bars_hidden = hub_utils.are_progress_bars_disabled()
    was_quiet = _quiet
    try:
        if own_verbosity:
            hf_logging.set_verbosity_error()
        if own_bars:
            hf_logging.disable_progress_bar()  # transformers' bars, and huggingface_hub's with them
        _quiet = True
        with warnings.catch_warnings():
            for category, message in UNACTIONABLE_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        _quiet = was_quiet
        if own_verbosity:
            hf_logging.set_verbosity(verbosity)
        if own_bars:
            (hf_logging.enable_progress_bar if bars_shown else hf_logging.disable_progress_bar)()
            (hub_utils.disable_progress_bars if hub_bars_hidden else hub_utils.enable_progress_bars)()


@contextlib.contextmanager
def third_party_stderr_held() -> Iterator[None]:
    """While a command runs quietly, hold back what the block writes to stderr, for third-party
    code whose progress bars have no switch (transformers' GGUF loader calls tqdm itself). If the
    block raises, the held text is written out after all, since it may say why. Outside a quiet
    command this does nothing."""
    if not _quiet:
        yield
        return
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    except Exception:
        sys.stderr.write(held.getvalue())
        raise
