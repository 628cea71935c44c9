from __future__ import annotations

import pytest

from tests.tiny import tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny model saved as a local Hugging Face folder (what users pass to --model)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    loaded = tiny_model()
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder
