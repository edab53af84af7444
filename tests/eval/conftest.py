"""Tiny stand-ins for the evaluation networks: an Inception-compatible feature net and a CLIP."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from transformers import CLIPConfig, CLIPModel

from edgefusion.toy.tokenizer import TOKENIZER_DIR


class TinyInception(nn.Module):
    """The FIDInception contract at micro size: images in [0, 1] -> (16-d features, 10 logits)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, kernel_size=4, stride=4)
        self.fc = nn.Linear(16, 10)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool = torch.tanh(self.conv(images * 2 - 1)).mean(dim=(2, 3))
        return pool, pool @ self.fc.weight.T


def write_images(folder: Path, arrays: np.ndarray) -> list[Path]:
    """Save (N, H, W, 3) uint8 arrays as {k:05d}.png."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{k:05d}.png" for k in range(len(arrays))]
    for path, array in zip(paths, arrays, strict=True):
        Image.fromarray(array).save(path)
    return paths


@pytest.fixture(name="write_images")
def write_images_fixture():
    return write_images


@pytest.fixture
def tiny_inception() -> TinyInception:
    return TinyInception().eval()


@pytest.fixture
def image_arrays() -> np.ndarray:
    """40 smooth random 32x32 images: a colour gradient per image plus mild noise."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 32)[None, :, None, None]
    base = rng.uniform(0, 255, size=(40, 1, 1, 3)) * (0.5 + 0.5 * ramp)
    return np.clip(base + rng.normal(0, 10, size=(40, 32, 32, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def tiny_clip(tmp_path: Path) -> Path:
    """A randomly initialized CLIP folder (32 px images) with the toy CLIP tokenizer."""
    torch.manual_seed(0)
    vocab = 789
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
            pad_token_id=vocab - 1,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    folder = tmp_path / "clip"
    CLIPModel(config).save_pretrained(folder)
    for f in TOKENIZER_DIR.iterdir():
        shutil.copy(f, folder / f.name)
    return folder
