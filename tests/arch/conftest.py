"""Micro SD-layout models for the architecture tests: random weights, a few thousand parameters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import UNet2DConditionModel
from micro_models import random_unet, save_micro_pipeline
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

MICRO_TEXT_WIDTH = 32
MICRO_TEXT_LENGTH = 77


def micro_unet_config(widths: tuple[int, ...] = (32, 64, 64, 64), v2: bool = False) -> dict[str, Any]:
    """An SD-layout U-Net config at micro size: cross-attention stages, then one plain stage.

    ``v2`` switches to SD-v2 style: linear attention projections and per-stage head dims.
    """
    n = len(widths)
    return {
        "_class_name": "UNet2DConditionModel",
        "block_out_channels": list(widths),
        "down_block_types": ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        "layers_per_block": 2,
        "cross_attention_dim": MICRO_TEXT_WIDTH,
        "attention_head_dim": [w // 16 for w in widths] if v2 else 2,
        "use_linear_projection": v2,
        "norm_num_groups": 8,
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
    }


def write_micro_pipeline(folder: Path, unet: UNet2DConditionModel) -> Path:
    """Save a StableDiffusionPipeline of micro components (tokenizer from a 4-token vocabulary)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}
    folder.parent.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder.parent / "vocab.json", folder.parent / "merges.txt"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=MICRO_TEXT_LENGTH)
    torch.manual_seed(1)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=MICRO_TEXT_WIDTH,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=len(vocab),
            max_position_embeddings=MICRO_TEXT_LENGTH,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    return save_micro_pipeline(folder, unet, text_encoder, tokenizer, image_size=16)


@pytest.fixture
def micro_config() -> Callable[..., dict[str, Any]]:
    return micro_unet_config


@pytest.fixture
def make_unet() -> Callable[..., UNet2DConditionModel]:
    return random_unet


@pytest.fixture
def micro_pipeline(tmp_path: Path) -> Path:
    """A saved micro SD pipeline folder with a random 4-stage teacher U-Net."""
    return write_micro_pipeline(tmp_path / "pipeline" / "sd", random_unet(micro_unet_config()))
