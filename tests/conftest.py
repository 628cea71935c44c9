from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from tests.helpers.sweeps import small_sweep_data
from tests.tiny import tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny model saved as a local Hugging Face folder (what users pass to --model)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    loaded = tiny_model()
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for the module: the tiny model is far faster that way on a
    shared, busy pair of cores. Opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    """A finished sweep (greedy, sample, redumix at lambda 0 and 1) and its config file."""
    from harness.runs.sweep import run_sweep
    from harness.runs.sweep_config import parse_config

    base = tmp_path_factory.mktemp("faults")
    config = base / "c.yaml"
    config.write_text(yaml.safe_dump(small_sweep_data(tiny_model_dir)))
    run_sweep(parse_config(small_sweep_data(tiny_model_dir)), base / "sw", progress=False)
    return base / "sw", config


@pytest.fixture
def sw(finished, tmp_path):
    """A private copy of the finished sweep folder, and its config."""
    folder, config = finished
    shutil.copytree(folder, tmp_path / "sw")
    return tmp_path / "sw", config
