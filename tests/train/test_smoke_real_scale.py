"""Real scale, smoke: one BK-SDM KD step with an SD-v1.4-sized teacher and a BK-Tiny student.

Random weights, 16x16 latents (128 px images), batch 1, on the CPU: it checks that the real
layer names, feature pairs and shapes line up and that a step fits in memory (about 9 GB), not
quality. Measured on 2 busy CPU cores: about 1 minute with one thread (see docs/results/kd.md).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from edgefusion.arch import compress, plan_removal
from edgefusion.pipeline.sources import load_unet_config
from edgefusion.train.config import LoopConfig
from edgefusion.train.kd import KDLossConfig, kd_loss
from edgefusion.train.loop import make_optimizer


def _random_sd_unet(config: dict) -> UNet2DConditionModel:
    """An SD-v1.4-sized U-Net with small random weights, built without diffusers' slow init."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    unet.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.normal_(0.0, 0.02, generator=gen)
    return unet


def test_one_kd_step_with_an_sd_v14_teacher_and_a_bk_tiny_student() -> None:
    config = load_unet_config("sd-v1.4")
    teacher = _random_sd_unet(config).eval().requires_grad_(False)
    student = compress(teacher, "tiny").train()
    assert sum(p.numel() for p in student.parameters()) == 323_384_964
    pairs = plan_removal(config, "tiny").feature_pairs
    optimizer = make_optimizer(list(student.parameters()), LoopConfig())
    latents, text = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 768)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear")
    before = student.conv_in.weight.detach().clone()

    terms = kd_loss(student, teacher, scheduler, latents, text, pairs, KDLossConfig(), torch.Generator())
    terms["loss"].backward()
    optimizer.step()

    assert len([name for name in terms if name.startswith("feature_kd/")]) == 6
    assert all(torch.isfinite(value) for value in terms.values())
    assert not torch.equal(before, student.conv_in.weight)
