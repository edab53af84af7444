"""Micro models and data for the training tests: a saved SD pipeline of random micro components
(the toy tokenizer, so captions tokenize), a toy imagefolder, and a clean accelerate state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from edgefusion.toy.dataset import write_toy_dataset
from edgefusion.toy.tokenizer import load_toy_tokenizer
from edgefusion.train.config import load_config
from edgefusion.train.kd import KDConfig

TEXT_WIDTH = 32
IMAGE_SIZE = 16  # the micro VAE halves it: 8x8 latents


def micro_unet_config(widths: tuple[int, ...] = (32, 64, 64, 64)) -> dict[str, Any]:
    """An SD-layout U-Net at micro size: cross-attention stages, then one plain stage."""
    n = len(widths)
    return {
        "block_out_channels": list(widths),
        "down_block_types": ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        "layers_per_block": 2,
        "cross_attention_dim": TEXT_WIDTH,
        "attention_head_dim": 2,
        "norm_num_groups": 8,
        "sample_size": IMAGE_SIZE // 2,
        "in_channels": 4,
        "out_channels": 4,
    }


def random_unet(config: dict[str, Any] | None = None, seed: int = 0) -> UNet2DConditionModel:
    """A micro U-Net with distinct random weights (diffusers zero-initializes some output layers)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(config or micro_unet_config())
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.normal_(0.0, 0.05)
    return unet.eval()


def write_pipeline(folder: Path, unet: UNet2DConditionModel) -> Path:
    """Save a StableDiffusionPipeline of micro components around ``unet``."""
    tokenizer = load_toy_tokenizer()
    torch.manual_seed(1)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=TEXT_WIDTH,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)
    return folder


@pytest.fixture
def micro() -> SimpleNamespace:
    """The micro builders: ``micro.unet(config=None, seed=0)``, ``micro.unet_config(widths)``,
    ``micro.write_pipeline(folder, unet)``, and ``micro.text_width``."""
    return SimpleNamespace(
        unet=random_unet, unet_config=micro_unet_config, write_pipeline=write_pipeline, text_width=TEXT_WIDTH
    )


@pytest.fixture(scope="session")
def teacher_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved micro SD pipeline with a random 4-stage teacher U-Net."""
    return write_pipeline(tmp_path_factory.mktemp("teacher") / "sd", random_unet())


@pytest.fixture(scope="session")
def toy_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 32 px toy shapes as an HF imagefolder (images + metadata.jsonl)."""
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy", n=12, size=32, progress=False)


@pytest.fixture
def flawed_folder(tmp_path: Path, toy_images: Path) -> Path:
    """The toy imagefolder with one corrupt image, one missing file, a row without caption and a
    broken metadata line: 12 rows + 1 broken, 10 usable, 9 decodable."""
    folder = tmp_path / "flawed"
    shutil.copytree(toy_images, folder)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    (folder / rows[2]["file_name"]).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / rows[5]["file_name"]).unlink()
    del rows[7]["text"]
    lines = [json.dumps(row) for row in rows] + ['{"file_name": broken']
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def kd_config(tmp_path: Path, teacher_pipeline: Path, toy_images: Path):
    """``kd_config(*overrides)``: a micro BK-Tiny distillation config writing under ``tmp_path``."""

    def make(*overrides: str) -> KDConfig:
        base = [
            f"teacher={teacher_pipeline}",
            "variant=tiny",
            f"data.path={toy_images}",
            f"data.resolution={IMAGE_SIZE}",
            f"out={tmp_path / 'out'}",
            f"run_dir={tmp_path / 'run'}",
            "train.steps=4",
            "train.batch_size=2",
            "train.learning_rate=1e-3",
            "train.checkpoint_every=2",
            "train.ema_decay=0.9",
        ]
        return load_config(KDConfig, None, [*base, *overrides])

    return make


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps process-wide singletons; each test starts from none."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
