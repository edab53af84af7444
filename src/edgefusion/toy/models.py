"""Configurations of the toy world's tiny models, all standard diffusers / transformers classes.

Only the attribute classifier is our own module (it is an evaluator, like Inception for FID);
everything a generation pipeline holds is the class Stable Diffusion uses, so the toy pipeline
is an ordinary ``StableDiffusionPipeline`` folder and every stage of the recipe runs on it
unchanged. Sizes are chosen so the whole world trains on 2 CPU cores in about an hour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgefusion.toy.world import COLORS, LAYOUTS, POSITIONS, SHAPES, SIZES

IMAGE_SIZE = 64


@dataclass
class ToyModelSizes:
    """Widths of the toy models; the micro sizes of the tests use the same builders."""

    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_patch: int = 8
    projection_dim: int = 128
    vae_widths: tuple[int, ...] = (32, 64, 64)
    vae_norm_groups: int = 16
    unet_widths: tuple[int, ...] = (32, 64, 128, 128)
    # diffusers' ``attention_head_dim`` is the number of heads per stage: 1/2/4/4 makes every head
    # 32 wide, twice as fast per training step on CPU kernels as v1's 8 heads of 4-16.
    unet_head_dim: int | tuple[int, ...] = (1, 2, 4, 4)
    unet_norm_groups: int = 32
    image_size: int = IMAGE_SIZE


def clip_config(vocab_size: int, eos_token_id: int, bos_token_id: int, sizes: ToyModelSizes):
    """A tiny transformers ``CLIPConfig``: its text tower becomes the pipeline's text encoder."""
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=sizes.text_hidden,
        intermediate_size=4 * sizes.text_hidden,
        num_hidden_layers=sizes.text_layers,
        num_attention_heads=sizes.text_heads,
        max_position_embeddings=77,
        projection_dim=sizes.projection_dim,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        pad_token_id=eos_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=sizes.vision_hidden,
        intermediate_size=4 * sizes.vision_hidden,
        num_hidden_layers=sizes.vision_layers,
        num_attention_heads=4,
        image_size=sizes.image_size,
        patch_size=sizes.vision_patch,
        projection_dim=sizes.projection_dim,
    )
    return CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=sizes.projection_dim
    )


def build_vae(sizes: ToyModelSizes):
    """An f=4 ``AutoencoderKL`` with SD's 4 latent channels (f=8 loses colours at 64 px)."""
    from diffusers import AutoencoderKL

    n = len(sizes.vae_widths)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=sizes.vae_widths,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=sizes.vae_norm_groups,
        sample_size=sizes.image_size,
    )


def build_unet(sizes: ToyModelSizes, latent_size: int):
    """A teacher ``UNet2DConditionModel`` with SD-v1.x's block layout at small widths.

    Four stages, cross-attention in the first three, a cross-attention mid block, two resnets per
    down stage and three per up stage: BK-SDM's Base/Small/Tiny removal applies unchanged.
    """
    from diffusers import UNet2DConditionModel

    n = len(sizes.unet_widths)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        block_out_channels=sizes.unet_widths,
        layers_per_block=2,
        cross_attention_dim=sizes.text_hidden,
        attention_head_dim=sizes.unet_head_dim,
        norm_num_groups=sizes.unet_norm_groups,
    )


# Heads of the attribute classifier: (name, number of classes).
CLASSIFIER_HEADS = (
    ("background", len(COLORS)),
    ("layout", len(LAYOUTS)),
    ("shape_1", len(SHAPES)),
    ("color_1", len(COLORS)),
    ("size", len(SIZES)),
    ("position", len(POSITIONS)),
    ("shape_2", len(SHAPES)),
    ("color_2", len(COLORS)),
)


class AttributeClassifier(nn.Module):
    """Reads a scene's attributes from an image: the ruler of the toy metrics.

    A plain CNN keeps spatial layout (no global pooling: position matters). Its penultimate
    features also serve as the toy feature space of FID_toy. For two-object scenes, object 1 is
    the left (or top) one, so the heads need no notion of which object the caption named first.
    """

    def __init__(self, width: int = 32, feature_dim: int = 256, image_size: int = IMAGE_SIZE):
        super().__init__()
        self.config = {"width": width, "feature_dim": feature_dim, "image_size": image_size}
        w = width
        layers, c_in = [], 3
        # Strided convolutions down to 1/16 of the side; one extra 3x3 conv at the two coarsest
        # levels, where shapes are told apart. Cheap enough to train in minutes on 2 cores.
        for level, c_out in enumerate((w, 2 * w, 4 * w, 4 * w)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
            if level >= 2:
                layers += [nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        spatial = image_size // 16
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * w * spatial * spatial, feature_dim), nn.SiLU()
        )
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, k) for name, k in CLASSIFIER_HEADS})

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features of images in [-1, 1], shape (B, feature_dim)."""
        return self.features(self.body(images))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.embed(images)
        return {name: head(feats) for name, head in self.heads.items()}
