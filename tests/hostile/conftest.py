"""Fixtures of the hostile-input tests: a small toy dataset and micro SD and LCM pipelines, made
once per session (each command under test copies what it will damage)."""

from __future__ import annotations

from pathlib import Path

import pytest
from micro_models import random_unet, write_lcm_pipeline, write_pipeline

from edgefusion.toy.dataset import write_toy_dataset


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy", n=6, size=32, progress=False)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("model") / "pipe", random_unet())


@pytest.fixture(scope="session")
def lcm_pipeline(tmp_path_factory) -> Path:
    """A micro LCM (guidance embedding, LCMScheduler): the pipeline kind ``generate`` rebuilds."""
    return write_lcm_pipeline(tmp_path_factory.mktemp("lcm") / "pipe", guidance_weights_std=None)
