"""What the console shows: third-party output hidden for a command unless --verbose, and the
libraries' settings left as they were for programs that use harness as a library."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from huggingface_hub import utils as hub_utils
from transformers.utils import logging as hf_logging

from harness import cli, console

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def library_defaults(monkeypatch):
    """transformers and huggingface_hub as a fresh process has them (WARNING, bars shown),
    whatever earlier tests did; put back as found afterwards."""
    for name in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    verbosity, bars, hub_hidden = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(),
                                   hub_utils.are_progress_bars_disabled())
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    yield
    hf_logging.set_verbosity(verbosity)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
    (hub_utils.disable_progress_bars if hub_hidden else hub_utils.enable_progress_bars)()


def settings() -> tuple[int, bool, bool, bool]:
    """(transformers' level, its bars shown, huggingface_hub's bars shown, console quiet)."""
    return (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(),
            not hub_utils.are_progress_bars_disabled(), console.is_quiet())


SHOWN = (hf_logging.WARNING, True, True, False)
HIDDEN = (hf_logging.ERROR, False, False, True)


def test_quiet_hides_third_party_output_and_puts_every_setting_back(library_defaults):
    with console.third_party_output(verbose=False):
        assert settings() == HIDDEN
    assert settings() == SHOWN


def test_quiet_puts_back_a_library_users_own_settings(library_defaults):
    hf_logging.set_verbosity_info()
    hf_logging.disable_progress_bar()
    hub_utils.enable_progress_bars()
    with console.third_party_output(verbose=False):
        assert settings() == HIDDEN
    assert settings() == (hf_logging.INFO, False, True, False)


def test_quiet_is_put_back_when_the_command_fails(library_defaults):
    with pytest.raises(ValueError), console.third_party_output(verbose=False):
        raise ValueError("bad flag")
    assert settings() == SHOWN


def test_verbose_changes_nothing(library_defaults):
    with console.third_party_output(verbose=True):
        assert settings() == SHOWN


def test_settings_made_through_the_libraries_environment_variables_win(library_defaults, monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    hf_logging.set_verbosity_info()
    with console.third_party_output(verbose=False):
        assert settings() == (hf_logging.INFO, True, True, True)


def test_quiet_ignores_only_the_listed_warnings(library_defaults):
    internal = "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing`"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with console.third_party_output(verbose=False):
            warnings.warn(internal, FutureWarning, stacklevel=1)
            warnings.warn("something the user should see", UserWarning, stacklevel=1)
        warnings.warn(internal, FutureWarning, stacklevel=1)  # outside a command: the caller's filters
    assert [(w.category, str(w.message)) for w in caught] == [(UserWarning, "something the user should see"),
                                                               (FutureWarning, internal)]


def test_stderr_is_held_only_while_quiet(capsys):
    with console.third_party_stderr_held():
        print("a bar", file=sys.stderr)
    with console.third_party_output(verbose=False), console.third_party_stderr_held():
        print("a hidden bar", file=sys.stderr)
    assert capsys.readouterr().err == "a bar\n"


def test_importing_harness_leaves_the_libraries_settings_alone():
    code = ("import harness.cli, harness.engine.models, harness.runs.sweep, harness.analysis.report\n"
            "from transformers.utils import logging\n"
            "from huggingface_hub import utils\n"
            "print(logging.get_verbosity(), logging.is_progress_bar_enabled(), utils.are_progress_bars_disabled())")
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(hf_logging.WARNING), "True", "False"]


COMMANDS = {
    "run": ["run", "--env", "basic_arithmetic"],
    "sweep": ["sweep", "configs/quick.yaml"],
    "report": ["report", "results/quick"],
    "distill": ["distill", "results/quick", "--out", "results/distilled"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("verbose", [False, True])
def test_each_command_runs_quiet_unless_verbose(command, verbose, library_defaults, monkeypatch):
    seen = []

    def handler(args):
        seen.append((args.verbose, settings()))
        return 0

    monkeypatch.setattr(cli, f"_cmd_{command}", handler)
    assert cli.main(COMMANDS[command] + (["--verbose"] if verbose else [])) == 0
    assert seen == [(verbose, SHOWN if verbose else HIDDEN)]
    assert settings() == SHOWN


@pytest.mark.parametrize("verbose", [False, True])
def test_lm_eval_takes_verbose_and_hands_lm_eval_the_rest(verbose, library_defaults, monkeypatch):
    from harness.lmeval import cli as lm_eval_cli

    seen = []

    def lm_eval_main(argv):
        seen.append((argv, settings()))
        return 0

    monkeypatch.setattr(lm_eval_cli, "main", lm_eval_main)
    flag = ["--verbose"] if verbose else []
    assert cli.main(["lm-eval", *flag, "run", "--model", "redumix", *flag, "--tasks", "rg_easy"]) == 0
    assert seen == [(["run", "--model", "redumix", "--tasks", "rg_easy"], SHOWN if verbose else HIDDEN)]
    assert settings() == SHOWN


def test_commands_that_load_nothing_leave_the_settings_alone(library_defaults, monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "_cmd_list", lambda args: seen.append(settings()) or 0)
    assert cli.main(["list", "models"]) == 0
    assert seen == [SHOWN]
