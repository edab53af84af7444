"""Latent consistency distillation: the pieces against diffusers' own, and ``lcm`` end to end on
micro models (the loss falls, the target follows the EMA rule, a killed run resumes exactly, the
output loads in plain diffusers)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    StableDiffusionPipeline,
)
from safetensors.torch import load_file

from edgefusion.arch import compress_path
from edgefusion.errors import EdgefusionError
from edgefusion.train import lcm
from edgefusion.train.config import DataConfig, load_config
from edgefusion.train.ema import EMA
from edgefusion.train.lcm import (
    DDIMSolver,
    LCMConfig,
    add_guidance_embedding,
    boundary_scalings,
    guidance_embedding,
    guided_ddim_solve,
    lcm_distill,
    lcm_loss,
    x0_and_eps,
)

ZERO_SNR_V = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "clip_sample": False,
    "set_alpha_to_one": False,
}
SD_EPS = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "clip_sample": False,
    "set_alpha_to_one": False,  # as SD-v1.x ships it; LCM's solver uses alpha_0 below the grid
}


@pytest.fixture
def lcm_config(tmp_path: Path, teacher_pipeline: Path, toy_images: Path):
    """``lcm_config(*overrides)``: a micro LCM run (student = teacher, vanilla LCM) under ``tmp_path``."""

    def make(*overrides: str) -> LCMConfig:
        base = [
            f"student={teacher_pipeline}",
            f"teacher={teacher_pipeline}",
            f"data.path={toy_images}",
            "data.resolution=16",
            f"out={tmp_path / 'out'}",
            f"run_dir={tmp_path / 'run'}",
            "time_cond_proj_dim=8",
            "train.steps=4",
            "train.batch_size=2",
            "train.learning_rate=1e-3",
            "train.checkpoint_every=2",
        ]
        return load_config(LCMConfig, None, [*base, *overrides])

    return make


@pytest.mark.parametrize(
    "grid,steps,expected",
    [
        (50, 1, [999]),
        (50, 2, [999, 499]),
        (50, 4, [999, 759, 499, 259]),
        (10, 2, [999, 499]),
        (10, 4, [999, 799, 499, 299]),
    ],
)
def test_lcm_scheduler_timesteps_of_a_written_model_lie_on_the_distillation_grid(
    tmp_path, grid, steps, expected
) -> None:
    folder = tmp_path / "model"
    (folder / "scheduler").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    schedule = DDIMScheduler(**ZERO_SNR_V, timestep_spacing="trailing").config
    lcm.write_lcm_scheduler(folder, schedule, grid)
    ours = LCMScheduler.from_pretrained(folder / "scheduler")
    ours.set_timesteps(steps)
    assert ours.timesteps.tolist() == expected
    # Every inference timestep lies on the solver's grid, where the student was trained.
    solver = DDIMSolver(ours.alphas_cumprod, grid)
    assert set(expected) <= set(solver.timesteps.tolist())
    assert ours.config.prediction_type == "v_prediction" and ours.config.rescale_betas_zero_snr


def test_boundary_scalings_match_the_formula_and_diffusers() -> None:
    timesteps = torch.tensor([0, 1, 19, 259, 499, 999])
    c_skip, c_out = boundary_scalings(timesteps)
    scaled = timesteps.double() * 10
    assert torch.allclose(c_skip, 0.25 / (scaled**2 + 0.25))
    assert torch.allclose(c_out, scaled / (scaled**2 + 0.25).sqrt())
    assert c_skip[0] == 1 and c_out[0] == 0  # the identity at t = 0: the boundary condition
    scheduler = LCMScheduler()
    for t, skip, out in zip(timesteps.tolist(), c_skip.tolist(), c_out.tolist(), strict=True):
        expected_skip, expected_out = scheduler.get_scalings_for_boundary_condition_discrete(t)
        assert skip == pytest.approx(float(expected_skip), rel=1e-12)
        assert out == pytest.approx(float(expected_out), rel=1e-12)


@pytest.mark.parametrize("config", [ZERO_SNR_V, SD_EPS])
def test_ddim_solver_step_equals_diffusers_ddim_step(config) -> None:
    """Our one-step DDIM (from the model output's x0 and eps) is DDIMScheduler's eta=0 step on
    the trailing 50-step grid, at every grid index including the first and the last."""
    scheduler = DDIMScheduler(**config, timestep_spacing="trailing")
    scheduler.set_timesteps(50)
    solver = DDIMSolver(scheduler.alphas_cumprod, 50)
    assert solver.timesteps.flip(0).tolist() == scheduler.timesteps.tolist() and solver.skip == 20
    gen = torch.Generator().manual_seed(0)
    for index in (0, 1, 24, 48, 49):
        t = solver.timesteps[index]
        if config is SD_EPS or t < 999:  # eps cannot recover x0 at zero SNR; v can
            sample, output = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
            kind = scheduler.config.prediction_type
            x0, eps = x0_and_eps(output, torch.tensor([t, t]), sample, scheduler.alphas_cumprod, kind)
            ours = solver.step(x0, eps, torch.tensor([index, index]))
            theirs = scheduler.step(output, int(t), sample, eta=0.0).prev_sample
            assert torch.allclose(ours, theirs, atol=1e-5), index


def test_teacher_steps_solve_the_guided_ode_as_diffusers_ddim_does(micro) -> None:
    """``guided_ddim_solve`` is DDIMScheduler with classifier-free guidance on the same grid, each
    sample from its own grid index, stopping at t = 0."""
    teacher = micro.unet(seed=1).eval()
    scheduler = DDIMScheduler(**SD_EPS, timestep_spacing="trailing")
    scheduler.set_timesteps(4)
    solver = DDIMSolver(scheduler.alphas_cumprod, 4)
    gen = torch.Generator().manual_seed(0)
    x, text = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 5, micro.text_width, generator=gen)
    uncond, w = torch.zeros(1, 5, micro.text_width), torch.tensor([1.0, 2.5])

    def diffusers_ddim(sample: torch.Tensor, row: int, timesteps: list[int]) -> torch.Tensor:
        for t in timesteps:
            both = teacher(torch.cat([sample, sample]), t, torch.cat([text[row : row + 1], uncond])).sample
            eps_c, eps_u = both.chunk(2)
            sample = scheduler.step(eps_u + (1 + w[row]) * (eps_c - eps_u), t, sample, eta=0.0).prev_sample
        return sample

    with torch.no_grad():
        ours, reached = guided_ddim_solve(
            teacher, solver, x, torch.tensor([3, 1]), 3, text, uncond, w, "epsilon"
        )
        full = diffusers_ddim(x[:1], 0, [999, 749, 499])  # three of four steps: it ends at t = 249
        to_zero = diffusers_ddim(x[1:], 1, [499, 249])  # two steps reach t = 0; the third is skipped
    assert reached.tolist() == [249, 0]
    assert torch.allclose(ours[0], full[0], atol=1e-5) and torch.allclose(ours[1], to_zero[0], atol=1e-5)


def test_a_teacher_solve_to_t0_is_the_target_itself(micro) -> None:
    """With ``teacher_steps`` >= the grid, the target is the teacher's ODE solution: the target
    network is never called, and one step still lowers the loss."""
    teacher, student = micro.unet(seed=1), add_guidance_embedding(micro.unet(seed=2), 8).train()
    scheduler = DDPMScheduler.from_config(DDIMScheduler(**SD_EPS).config)
    config = LCMConfig(
        student="s",
        teacher="t",
        data=DataConfig(path="d"),
        num_ddim_steps=4,
        teacher_steps=4,
        time_cond_proj_dim=8,
    )

    class Untouchable(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise AssertionError("the target network ran")

    latents, text = torch.randn(4, 4, 8, 8), torch.randn(4, 5, micro.text_width)

    def loss() -> torch.Tensor:
        gen = torch.Generator().manual_seed(3)
        solver = DDIMSolver(scheduler.alphas_cumprod, 4)
        uncond = torch.zeros(1, 5, micro.text_width)
        return lcm_loss(
            student, Untouchable(), teacher, solver, scheduler, latents, text, uncond, config, gen
        )["loss"]

    before = loss()
    before.backward()
    torch.optim.SGD(student.parameters(), lr=0.005).step()
    assert loss().item() < before.item()


def test_guidance_embedding_equals_the_lcm_pipelines() -> None:
    w = torch.tensor([0.0, 1.5, 7.0])
    theirs = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=256)
    assert torch.allclose(guidance_embedding(w, 256), theirs, atol=1e-6)


def test_the_added_guidance_embedding_starts_as_a_no_op(micro) -> None:
    unet = micro.unet()
    student = add_guidance_embedding(unet, 16).eval()
    assert student.config.time_cond_proj_dim == 16
    x, t, text = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.randn(2, 5, micro.text_width)
    with torch.no_grad():
        before = unet(x, t, text).sample
        after = student(x, t, text, timestep_cond=guidance_embedding(torch.tensor([3.0, 8.0]), 16)).sample
    assert torch.equal(before, after)
    assert add_guidance_embedding(student, 16) is student
    with pytest.raises(EdgefusionError, match="width 16"):
        add_guidance_embedding(student, 32)


def test_one_training_step_lowers_the_loss_and_the_target_follows_the_ema_rule(micro) -> None:
    teacher = micro.unet(seed=1)
    student = add_guidance_embedding(micro.unet(seed=2), 8).train()
    target = EMA(student, 0.95, warmup=False)
    scheduler = DDPMScheduler.from_config(DDIMScheduler(**SD_EPS).config)
    solver = DDIMSolver(scheduler.alphas_cumprod, 50)
    config = LCMConfig(
        student="s", teacher="t", data=DataConfig(path="d"), w_min=1, w_max=3, time_cond_proj_dim=8
    )
    latents, text, uncond = (
        torch.randn(4, 4, 8, 8),
        torch.randn(4, 5, micro.text_width),
        torch.zeros(1, 5, micro.text_width),
    )

    def loss() -> torch.Tensor:
        gen = torch.Generator().manual_seed(3)
        return lcm_loss(
            student, target.module, teacher, solver, scheduler, latents, text, uncond, config, gen
        )["loss"]

    optimizer = torch.optim.SGD(student.parameters(), lr=0.05)
    before = loss()
    before.backward()
    optimizer.step()
    old_target = {k: v.clone() for k, v in target.module.state_dict().items()}
    target.update(student)
    assert loss().item() < before.item()
    for name, weight in student.state_dict().items():
        expected = 0.95 * old_target[name] + 0.05 * weight
        assert torch.allclose(target.module.state_dict()[name], expected, atol=1e-7), name


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "losses.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_lcm_writes_a_model_that_plain_diffusers_loads_both_ways(lcm_config, micro, tmp_path) -> None:
    """EdgeFusion's setting: a BK-Tiny student cut from one model, the large model as teacher."""
    compress_path(micro.write_pipeline(tmp_path / "large", micro.unet(seed=1)), "tiny", tmp_path / "tiny")
    report = lcm_distill(lcm_config(f"student={tmp_path / 'tiny'}", f"teacher={tmp_path / 'large'}"))
    assert report.steps == 4 and report.skipped == {"missing": 0, "corrupt": 0, "no_caption": 0, "outside": 0}

    lcm_pipe = LatentConsistencyModelPipeline.from_pretrained(report.out, safety_checker=None)
    assert isinstance(lcm_pipe.scheduler, LCMScheduler)
    assert lcm_pipe.unet.config.time_cond_proj_dim == 8
    assert list(lcm_pipe.unet.config.block_out_channels) == [32, 64, 64]
    image = lcm_pipe(
        "a red circle", num_inference_steps=2, guidance_scale=3.0, height=16, width=16, output_type="np"
    ).images
    assert image.shape == (1, 16, 16, 3) and (0 <= image).all() and (image <= 1).all()
    sd_pipe = StableDiffusionPipeline.from_pretrained(report.out, safety_checker=None)
    image = sd_pipe(
        "a red circle", num_inference_steps=2, guidance_scale=1.0, height=16, width=16, output_type="np"
    ).images
    assert image.shape == (1, 16, 16, 3)
    assert load_config(LCMConfig, report.out / lcm.CONFIG_NAME) == lcm_config(
        f"student={tmp_path / 'tiny'}", f"teacher={tmp_path / 'large'}"
    )


def test_a_killed_lcm_run_resumes_exactly(lcm_config, tmp_path, monkeypatch) -> None:
    settings = ("train.steps=5", "loss=huber")
    straight = lcm_distill(lcm_config(*settings, f"run_dir={tmp_path / 'a'}", f"out={tmp_path / 'a-out'}"))

    calls = {"n": 0}
    real_loss = lcm.lcm_loss

    def killed_at_step_four(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # steps 1-3 logged, checkpoint at 2 (with the target network)
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(lcm, "lcm_loss", killed_at_step_four)
    config = lcm_config(*settings, f"run_dir={tmp_path / 'b'}", f"out={tmp_path / 'b-out'}")
    with pytest.raises(KeyboardInterrupt):
        lcm_distill(config)
    monkeypatch.setattr(lcm, "lcm_loss", real_loss)
    resumed = lcm_distill(config)

    assert resumed.resumed_from == 2
    assert _rows(tmp_path / "b") == _rows(tmp_path / "a")
    a = load_file(str(straight.out / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed.out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_errors_are_clear() -> None:
    base = ["student=s", "teacher=t", "data.path=d"]
    with pytest.raises(EdgefusionError, match="target network"):
        load_config(LCMConfig, None, [*base, "train.ema_decay=0.999"])
    with pytest.raises(EdgefusionError, match="w_min <= w_max"):
        load_config(LCMConfig, None, [*base, "w_min=5", "w_max=2"])
    with pytest.raises(EdgefusionError, match="set student"):
        load_config(LCMConfig, None, ["teacher=t", "data.path=d"])
    with pytest.raises(EdgefusionError, match="teacher_steps"):
        load_config(LCMConfig, None, [*base, "teacher_steps=0"])
