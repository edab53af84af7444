"""BK-SDM's loss terms against hand computations, and the full objective against its definition."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from edgefusion.arch import compress, plan_removal
from edgefusion.errors import EdgefusionError
from edgefusion.train.kd import KDLossConfig, kd_loss
from edgefusion.train.losses import feature_kd_loss, output_kd_loss, task_loss


def test_task_loss_is_the_mean_squared_error() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert task_loss(pred, target).item() == pytest.approx((1 + 4 + 9 + 4) / 4)


def test_output_kd_loss_is_the_mean_squared_error_to_the_teacher() -> None:
    student = torch.tensor([0.5, -1.0, 2.0])
    teacher = torch.tensor([0.0, 1.0, 2.0])
    assert output_kd_loss(student, teacher).item() == pytest.approx((0.25 + 4 + 0) / 3)


def test_feature_kd_loss_gives_one_mse_per_pair() -> None:
    student = [torch.tensor([[1.0, 1.0]]), torch.tensor([[[3.0]]])]
    teacher = [torch.tensor([[0.0, 2.0]]), torch.tensor([[[1.0]]])]
    assert feature_kd_loss(student, teacher).tolist() == pytest.approx([(1 + 1) / 2, 4.0])
    # Normalized: each MSE over the teacher map's mean square, (0 + 4) / 2 and 1.
    assert feature_kd_loss(student, teacher, normalize=True).tolist() == pytest.approx([1.0 / 2.0, 4.0 / 1.0])


def test_feature_kd_loss_sends_no_gradient_to_the_teacher_and_rejects_mismatched_maps() -> None:
    student, teacher = torch.ones(2, 3, requires_grad=True), torch.zeros(2, 3, requires_grad=True)
    feature_kd_loss([student], [teacher]).sum().backward()
    assert teacher.grad is None and student.grad is not None
    with pytest.raises(EdgefusionError, match="differ in shape"):
        feature_kd_loss([torch.ones(1, 4, 2, 2)], [torch.ones(1, 8, 2, 2)])


def _replay_noise(latents: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise and timesteps kd_loss draws from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=gen)
    return noise, torch.randint(0, 1000, (latents.shape[0],), generator=gen)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_kd_objective_is_the_weighted_sum_of_the_three_terms(prediction_type: str, micro) -> None:
    teacher = micro.unet(seed=3)
    student = compress(teacher, "tiny")
    with torch.no_grad():  # move the student away from its teacher so every term is non-zero
        for parameter in student.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    pairs = plan_removal(dict(teacher.config), "tiny").feature_pairs
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", prediction_type=prediction_type)
    latents, text = torch.randn(2, 4, 8, 8), torch.randn(2, 5, micro.text_width)
    weights = KDLossConfig(task_weight=0.5, output_weight=2.0, feature_weight=0.25)

    terms = kd_loss(
        student, teacher, scheduler, latents, text, pairs, weights, torch.Generator().manual_seed(7)
    )

    noise, t = _replay_noise(latents, 7)
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = abar.sqrt() * latents + (1 - abar).sqrt() * noise
    target = noise if prediction_type == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * latents
    with torch.no_grad():
        student_pred, teacher_pred = student(noisy, t, text).sample, teacher(noisy, t, text).sample
    task = ((student_pred - target) ** 2).mean()
    output = ((student_pred - teacher_pred) ** 2).mean()
    assert terms["task"].item() == pytest.approx(task.item(), rel=1e-5)
    assert terms["output_kd"].item() == pytest.approx(output.item(), rel=1e-5)
    per_map = [terms[f"feature_kd/{p.student}"].item() for p in pairs]
    assert terms["feature_kd"].item() == pytest.approx(sum(per_map), rel=1e-6)
    assert min(per_map) > 0
    expected = 0.5 * task + 2.0 * output + 0.25 * terms["feature_kd"].item()
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_task_only_objective_never_runs_the_teacher(micro) -> None:
    class NoTeacher(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise AssertionError("the teacher ran")

    student = compress(micro.unet(), "tiny")
    weights = KDLossConfig(output_weight=0.0, feature_weight=0.0)
    terms = kd_loss(
        student,
        NoTeacher(),
        DDPMScheduler(),
        torch.randn(1, 4, 8, 8),
        torch.randn(1, 5, micro.text_width),
        plan_removal(micro.unet_config(), "tiny").feature_pairs,
        weights,
        torch.Generator().manual_seed(0),
    )
    assert set(terms) == {"loss", "task"}
    assert terms["loss"].item() == terms["task"].item()
