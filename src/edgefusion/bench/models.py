"""What ``edgefusion bench`` times: the three components of an SD pipeline, built or loaded.

Latency does not depend on weight values, so the paper's architectures are built from the shipped
configs with random weights at any resolution, and no checkpoint is needed: SD-v1.4, SD-v2.1-base,
BK-SDM Base/Small/Tiny cut from SD-v1.4 (``compress``), and EdgeFusion-Tiny, BK-SDM-Tiny with the
LCM guidance embedding (``time_cond_proj_dim=256``, as in the released LCM U-Nets). Any
pipeline folder or ``toy:NAME`` is benchmarked with its own weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgefusion.arch.removal import plan_removal
from edgefusion.pipeline.configs import builtin_config, vae_scale_factor
from edgefusion.pipeline.lcm import is_lcm
from edgefusion.pipeline.load import load_pipeline

#: Built-in architecture -> (config family, BK-SDM variant or None, LCM guidance embedding width).
ARCHITECTURES: dict[str, tuple[str, str | None, int | None]] = {
    "sd-v1.4": ("sd-v1", None, None),
    "sd-v2.1-base": ("sd-v2-base", None, None),
    "bk-base": ("sd-v1", "base", None),
    "bk-small": ("sd-v1", "small", None),
    "bk-tiny": ("sd-v1", "tiny", None),
    "edgefusion-tiny": ("sd-v1", "tiny", 256),
}


@dataclass
class PipelineParts:
    """The modules of one model and the shapes its inputs take; ``tiny_decoder`` is another decoder
    timed beside the VAE's (``--vae``)."""

    text_encoder: nn.Module
    unet: nn.Module
    vae: nn.Module
    text_length: int
    vocab_size: int
    tiny_decoder: nn.Module | None = None

    @property
    def lcm(self) -> bool:
        """An LCM U-Net embeds the guidance scale instead of running the batch twice (no CFG)."""
        return is_lcm(self.unet)

    @property
    def vae_scale_factor(self) -> int:
        return vae_scale_factor(self.vae.config)


def unet_config(name: str) -> dict[str, Any]:
    """The U-Net config of a built-in architecture."""
    family, variant, guidance_dim = ARCHITECTURES[name]
    config = builtin_config(family, "unet")
    if variant is not None:
        config = plan_removal(config, variant).student_config
    if guidance_dim is not None:
        config["time_cond_proj_dim"] = guidance_dim
    return config


def build_parts(name: str, seed: int = 0) -> PipelineParts:
    """A built-in architecture with random weights (seeded), or a loaded pipeline folder / toy:NAME."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if name not in ARCHITECTURES:
        pipe = load_pipeline(name)
        return PipelineParts(
            pipe.text_encoder,
            pipe.unet,
            pipe.vae,
            pipe.tokenizer.model_max_length,
            pipe.text_encoder.config.vocab_size,
        )
    family = ARCHITECTURES[name][0]
    text_config = CLIPTextConfig.from_dict(builtin_config(family, "text_encoder"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = PipelineParts(
            CLIPTextModel(text_config),
            UNet2DConditionModel.from_config(unet_config(name)),
            AutoencoderKL.from_config(builtin_config(family, "vae")),
            text_config.max_position_embeddings,
            text_config.vocab_size,
        )
    for module in (parts.text_encoder, parts.unet, parts.vae):
        module.eval().requires_grad_(False)
    return parts
