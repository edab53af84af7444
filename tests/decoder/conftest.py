"""Micro models and data for the tiny-decoder tests: a saved micro SD pipeline (f=2 VAE, toy
tokenizer), a micro LCM, a toy imagefolder, a random tiny decoder folder, and a clean accelerate
state."""

from __future__ import annotations

from pathlib import Path

import pytest
from micro_models import IMAGE_SIZE, random_unet, write_lcm_pipeline, write_pipeline, write_tiny_decoder

from edgefusion.decoder.distill import DecoderDistillConfig, load_decoder_config
from edgefusion.toy.dataset import write_toy_dataset


@pytest.fixture(scope="session")
def sd_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("sd") / "model", random_unet())


@pytest.fixture(scope="session")
def lcm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro LCM: guidance embedding and an LCMScheduler, saved as an LCM pipeline."""
    return write_lcm_pipeline(tmp_path_factory.mktemp("lcm") / "model")


@pytest.fixture(scope="session")
def toy_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 32 px toy shapes as an HF imagefolder (images + metadata.jsonl)."""
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy", n=12, size=32, progress=False)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ``AutoencoderTiny`` for the micro VAE's 2 levels, saved as TAESD is published."""
    return write_tiny_decoder(tmp_path_factory.mktemp("tiny") / "taesd-micro")


@pytest.fixture
def decoder_config(tmp_path: Path, sd_model: Path, toy_images: Path):
    """``decoder_config(*overrides)``: a micro decoder distillation writing under ``tmp_path``."""

    def make(*overrides: str) -> DecoderDistillConfig:
        base = [
            f"model={sd_model}",
            f"data.path={toy_images}",
            f"data.resolution={IMAGE_SIZE}",
            f"out={tmp_path / 'out'}",
            f"run_dir={tmp_path / 'run'}",
            "channels=8",
            "train.steps=4",
            "train.batch_size=4",
            "train.lr_warmup_steps=0",
            "train.checkpoint_every=2",
        ]
        return load_decoder_config(None, [*base, *overrides])

    return make
