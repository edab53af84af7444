"""Micro pipeline parts for the bench tests: random weights, a few thousand parameters."""

import pytest
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from edgefusion.bench.models import PipelineParts


def micro_pipeline_parts(lcm: bool) -> PipelineParts:
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=8,
        time_cond_proj_dim=8 if lcm else None,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=10,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=8,
        )
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=8,
    )
    return PipelineParts(text.eval(), unet.eval(), vae.eval(), text_length=8, vocab_size=10)


@pytest.fixture
def micro_parts():
    return micro_pipeline_parts
