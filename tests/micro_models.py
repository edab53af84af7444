"""Micro Stable Diffusion pipelines shared by the test folders: random micro components around an
SD-layout U-Net (the toy tokenizer, so captions tokenize). Imported as ``micro_models`` (the suite's
root conftest puts this folder on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from edgefusion.toy.tokenizer import load_toy_tokenizer

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
    return save_micro_pipeline(folder, unet, text_encoder, tokenizer, IMAGE_SIZE)


def save_micro_pipeline(folder: Path, unet, text_encoder, tokenizer, image_size: int) -> Path:
    """Save ``unet``, ``text_encoder`` and ``tokenizer`` with a micro f=2 VAE and SD's PNDM."""
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=image_size,
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


def write_lcm_pipeline(folder: Path, guidance_weights_std: float | None = 0.5) -> Path:
    """Save a micro LCM: a guidance embedding (its weights drawn with ``guidance_weights_std`` so
    the scale matters; None keeps them at zero) and an LCMScheduler."""
    from diffusers import DDIMScheduler

    from edgefusion.train.lcm import add_guidance_embedding, write_lcm_scheduler

    unet = add_guidance_embedding(random_unet(), 16)
    if guidance_weights_std is not None:
        torch.nn.init.normal_(unet.time_embedding.cond_proj.weight, std=guidance_weights_std)
    write_pipeline(folder, unet)
    write_lcm_scheduler(folder, DDIMScheduler(beta_schedule="scaled_linear").config, 50)
    return folder


def write_tiny_decoder(folder: Path) -> Path:
    """A random ``AutoencoderTiny`` for the micro VAE's 2 levels, saved as TAESD is published
    (``config.json`` and ``diffusion_pytorch_model.safetensors``)."""
    torch.manual_seed(3)
    tiny = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    )
    tiny.save_pretrained(folder)
    return folder
