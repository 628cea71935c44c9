from __future__ import annotations

import pytest
import torch

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
