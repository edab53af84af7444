"""A saved micro SD pipeline (toy tokenizer, random weights) for the quantization tests."""

from pathlib import Path

import pytest
from micro_models import random_unet, write_pipeline


@pytest.fixture(scope="session")
def micro_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("quant") / "sd", random_unet())
