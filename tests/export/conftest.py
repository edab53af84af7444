"""Saved micro SD pipelines (toy tokenizer, random weights) for the export tests: a CFG one and an
LCM one (a U-Net with a guidance-embedding input and an LCMScheduler)."""

from pathlib import Path

import pytest
from diffusers import LCMScheduler, StableDiffusionPipeline
from micro_models import micro_unet_config, random_unet, write_pipeline


@pytest.fixture(scope="session")
def micro_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("export") / "sd", random_unet())


@pytest.fixture(scope="session")
def micro_lcm_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_pipeline(
        tmp_path_factory.mktemp("export") / "lcm",
        random_unet({**micro_unet_config(), "time_cond_proj_dim": 16}),
    )
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(folder)
    return folder
