"""The loss terms of BK-SDM knowledge distillation (Kim et al. 2023, "BK-SDM"), as plain functions.

``loss = w_task * task + w_out * output_kd + w_feat * sum(feature_kd)``; BK-SDM uses weight 1.0
for each term and plain MSE (as in BK-SDM).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from edgefusion.errors import EdgefusionError


def forward_process(
    noise_scheduler: Any, latents: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SD's forward process on clean ``latents``, every draw from ``gen``: noise at uniformly drawn
    training timesteps. Returns the noisy latents, the timesteps, and what the U-Net learns to
    predict from them (the noise, or the velocity for v-prediction)."""
    noise = torch.randn(latents.shape, generator=gen).to(latents)
    steps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (latents.shape[0],), generator=gen).to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return noisy, timesteps, noise_scheduler.get_velocity(latents, noise, timesteps)
    return noisy, timesteps, noise


def task_loss(student_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BK-SDM's task loss: MSE between the student's prediction and the true target (the sampled
    noise for epsilon prediction, the velocity for v-prediction): SD's own training loss."""
    return F.mse_loss(student_pred.float(), target.float())


def output_kd_loss(student_pred: torch.Tensor, teacher_pred: torch.Tensor) -> torch.Tensor:
    """BK-SDM's output-level KD: MSE between student and teacher predictions on the same input."""
    return F.mse_loss(student_pred.float(), teacher_pred.float())


def feature_kd_loss(
    student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor], normalize: bool = False
) -> torch.Tensor:
    """BK-SDM's feature-level KD: the MSE of each matched feature-map pair, one entry per pair.

    ``normalize`` divides each pair's MSE by the mean square of the teacher's map (a relative
    error), so every map weighs about the same and the sum no longer dwarfs the other terms (in
    BK-SDM the feature term dominates). The caller sums the entries.
    """
    if len(student_maps) != len(teacher_maps) or not student_maps:
        raise EdgefusionError(
            f"feature KD needs matched pairs: got {len(student_maps)} student and "
            f"{len(teacher_maps)} teacher maps"
        )
    losses = []
    for index, (student, teacher) in enumerate(zip(student_maps, teacher_maps, strict=True)):
        if student.shape != teacher.shape:
            raise EdgefusionError(
                f"feature pair {index}: student map {tuple(student.shape)} and teacher map "
                f"{tuple(teacher.shape)} differ in shape; the teacher's block layout must match the "
                "one the student was cut from (or set loss.feature_weight=0)"
            )
        student, teacher = student.float(), teacher.float().detach()
        loss = F.mse_loss(student, teacher)
        if normalize:
            loss = loss / teacher.pow(2).mean().clamp_min(1e-12)
        losses.append(loss)
    return torch.stack(losses)
