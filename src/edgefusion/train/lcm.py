"""Latent consistency distillation across architectures: ``edgefusion lcm``.

LCM (Luo et al. 2023) distills a guided diffusion model into one that jumps from any point of a
probability-flow trajectory to its start, so 1-4 steps suffice. EdgeFusion's change (paper
Fig. 2b) is who plays which role: the *student* is the compact, KD-improved U-Net
(BK-SDM-Adv-Tiny), the *teacher* that solves the ODE is the original large model, not a copy of
the student as in LCM's own recipe (Fig. 2a). One step of the
objective (latent consistency distillation):

1. Pick a DDIM grid index n; noise clean latents to ``t_{n+k}`` (skip k = T / num_ddim_steps).
2. Draw a guidance weight w ~ U[w_min, w_max]; the student sees it as an embedding through
   ``time_embedding.cond_proj`` (its ``time_cond_proj_dim``), added zero-initialized so training
   starts from the init model's behaviour. w is the LCM convention: the teacher's CFG scale is
   ``1 + w``, and at inference ``LatentConsistencyModelPipeline`` embeds ``guidance_scale - 1``.
3. The teacher (cond and uncond in one batched call) predicts x0 and eps at ``t_{n+k}``, mixed
   with w; one DDIM step gives the point at ``t_n`` (``teacher_steps`` > 1: that many steps down
   the grid, stopping at t = 0).
4. Online prediction ``c_skip(t_{n+k}) x + c_out(t_{n+k}) x0_student``; the target is the same
   made by the target network (an EMA of the student, decay 0.95) at ``t_n``, without gradient.
   At t = 0 the consistency function is the identity, so a chain of teacher steps that reaches
   it makes the teacher's own ODE solution the target, with no target network in between.
5. Loss: L2, or pseudo-Huber ``sqrt(d^2 + c^2) - c``.

Everything else is the run every training stage shares (:mod:`~edgefusion.train.stage`): data
and latent cache, the accelerate loop (whose EMA slot holds the target network, so it is
checkpointed and resumes exactly), logs, and the pipeline writer. The output pipeline carries an
``LCMScheduler``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import nn

from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.lcm import guidance_embedding, is_lcm
from edgefusion.train.config import DataConfig, LoopConfig
from edgefusion.train.ema import EMA
from edgefusion.train.models import check_conditioning, load_unet, shared_pipeline
from edgefusion.train.stage import StageReport, open_stage

CONFIG_NAME = "lcm.yaml"
#: LCM's boundary-condition constants (consistency models' sigma_data; diffusers' timestep scaling).
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


@dataclass
class LCMLoopConfig(LoopConfig):
    """The shared loop settings, without a student EMA by default: this stage's EMA is its
    target network (``LCMConfig.target_decay``), and LCM ships the online student."""

    ema_decay: float | None = None


@dataclass
class LCMConfig:
    """``edgefusion lcm``: the student's init, the ODE teacher, the solver, the loss, the data.

    - ``student``: the init model (EdgeFusion: the KD-improved compact U-Net, ``toy:bk-tiny-adv``).
    - ``teacher``: the model whose guided ODE is distilled (EdgeFusion: the original large model;
      vanilla LCM: the same model as ``student``). Both must share the pipeline's noise schedule.
    - ``pipeline``: text encoder, VAE, tokenizer and training schedule (default: the student's).
    - ``w_min``/``w_max``: guidance weight range (LCM convention, teacher CFG scale ``1 + w``).
    - ``num_ddim_steps``: the DDIM solver grid (50 of 1000 steps: skip k = 20).
    - ``teacher_steps``: grid steps the teacher solves per consistency pair (LCM: 1). The target
      network bridges the rest of the way to t = 0; at ``num_ddim_steps`` or more, every target is
      the teacher's guided DDIM solution itself (no bootstrapping, ``teacher_steps`` times the
      teacher's cost at the top of the grid).
    - ``target_decay``: EMA decay of the target network (0.95 in LCM).
    - ``time_cond_proj_dim``: width of the guidance embedding the student gains (256 as LCM SD).
    - ``loss``: ``l2`` or ``huber`` (pseudo-Huber with ``huber_c``).
    """

    student: str = ""
    teacher: str = ""
    pipeline: str | None = None
    out: str = "runs/lcm/out"
    run_dir: str = "runs/lcm/run"
    overwrite: bool = False
    w_min: float = 5.0
    w_max: float = 15.0
    num_ddim_steps: int = 50
    teacher_steps: int = 1
    target_decay: float = 0.95
    time_cond_proj_dim: int = 256
    loss: Literal["l2", "huber"] = "l2"
    huber_c: float = 0.001
    save_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    data: DataConfig = field(default_factory=DataConfig)
    train: LCMLoopConfig = field(default_factory=LCMLoopConfig)

    def __post_init__(self) -> None:
        if not self.student or not self.teacher:
            raise EdgefusionError("set student (the init U-Net, e.g. toy:bk-tiny-adv) and teacher")
        if not self.data.path:
            raise EdgefusionError("set data.path (an imagefolder or WebDataset .tar shards)")
        if not 0 <= self.w_min <= self.w_max:
            raise EdgefusionError(f"need 0 <= w_min <= w_max, got [{self.w_min}, {self.w_max}]")
        if not 0 < self.target_decay < 1:
            raise EdgefusionError("target_decay must lie in (0, 1)")
        if self.num_ddim_steps < 1:
            raise EdgefusionError("num_ddim_steps must be at least 1")
        if self.teacher_steps < 1:
            raise EdgefusionError("teacher_steps must be at least 1 (LCM: 1)")
        if self.time_cond_proj_dim < 2 or self.time_cond_proj_dim % 2:
            raise EdgefusionError("time_cond_proj_dim must be an even number (sin and cos halves)")
        if self.train.ema_decay is not None:
            raise EdgefusionError(
                "the LCM stage's EMA is its target network: set target_decay, and leave train.ema_decay null"
            )


class DDIMSolver:
    """The deterministic DDIM step on LCM's coarse grid of ``num_steps`` of the training timesteps.

    ``timesteps[n]`` is ``t_{n+k}`` (``k = T // num_steps``: 19, 39, ..., 999 for 50 of 1000, the
    "trailing" grid), ``alphas_prev[n]`` the cumulative alpha one grid step lower (at ``t = 0``
    for n = 0, as DDIMScheduler with ``set_alpha_to_one=False``).
    """

    def __init__(self, alphas_cumprod: torch.Tensor, num_steps: int) -> None:
        total = len(alphas_cumprod)
        if num_steps > total:
            raise EdgefusionError(f"num_ddim_steps {num_steps} exceeds the {total} training timesteps")
        self.skip = total // num_steps
        self.timesteps = (torch.arange(1, num_steps + 1) * self.skip).round().long() - 1
        alphas = alphas_cumprod.double()
        self.alphas_cumprod = alphas
        self.alphas_prev = torch.cat([alphas[:1], alphas[self.timesteps[:-1]]])

    def step(self, pred_x0: torch.Tensor, pred_eps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``x_{t_n} = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps`` (eta = 0) for grid indices ``index``."""
        a_prev = _per_sample(self.alphas_prev[index.cpu()], pred_x0)
        return a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * pred_eps


def boundary_scalings(timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LCM's ``c_skip(t)``, ``c_out(t)`` (diffusers' ``LCMScheduler`` with timestep scaling 10):
    ``c_skip -> 1`` and ``c_out -> 0`` at t = 0, so the consistency function is the identity there."""
    scaled = timesteps.double() * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2).sqrt()
    return c_skip, c_out


def x0_and_eps(
    model_output: torch.Tensor,
    timesteps: torch.Tensor,
    sample: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean sample and the noise implied by a U-Net output of ``prediction_type``."""
    alpha = _per_sample(alphas_cumprod[timesteps.cpu()], sample)
    a, s = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "v_prediction":
        return a * sample - s * model_output, a * model_output + s * sample
    if prediction_type == "epsilon":
        return (sample - s * model_output) / a, model_output
    if prediction_type == "sample":
        return model_output, (sample - a * model_output) / s
    raise EdgefusionError(f"unsupported prediction_type {prediction_type!r}")


def add_guidance_embedding(unet: UNet2DConditionModel, dim: int) -> UNet2DConditionModel:
    """A copy of ``unet`` that also takes a guidance embedding (``timestep_cond``) of width ``dim``.

    The new ``cond_proj`` is zero-initialized, so the copy computes exactly what ``unet`` does until
    training moves it. A U-Net that already has one (resuming from an LCM) is returned unchanged.
    """
    if is_lcm(unet):
        if unet.config.time_cond_proj_dim != dim:
            raise EdgefusionError(
                f"the student already has a guidance embedding of width {unet.config.time_cond_proj_dim}, "
                f"not {dim}: set time_cond_proj_dim to match"
            )
        return unet
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    student = UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": dim})
    missing, unexpected = student.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or set(missing) != {"time_embedding.cond_proj.weight"}:
        raise EdgefusionError(f"could not carry the init weights over: missing {missing}, extra {unexpected}")
    nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student.to(unet.dtype)


def guided_ddim_solve(
    teacher: nn.Module,
    solver: DDIMSolver,
    sample: torch.Tensor,
    index: torch.Tensor,
    steps: int,
    text_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor,
    w: torch.Tensor,
    prediction_type: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``steps`` guided DDIM steps of ``teacher`` down ``solver``'s grid from each sample's
    grid index; a sample stops at t = 0. Returns the points reached and their timesteps.

    Cond and uncond go through the teacher in one batched call, mixed with the LCM weight ``w``
    (CFG scale ``1 + w``); each round runs only the samples still above t = 0."""
    alphas = solver.alphas_cumprod
    x, current = sample, index.clone()
    for _ in range(steps):
        active = (current >= 0).nonzero().squeeze(1)
        if len(active) == 0:
            break
        t, x_now, text = solver.timesteps[current[active]], x[active], text_embeds[active]
        both = teacher(
            torch.cat([x_now, x_now]).to(teacher.dtype),
            torch.cat([t, t]).to(x.device),
            torch.cat([text, uncond_embeds.expand_as(text)]).to(teacher.dtype),
        ).sample.float()
        x0_both, eps_both = x0_and_eps(
            both, torch.cat([t, t]), torch.cat([x_now, x_now]), alphas, prediction_type
        )
        (x0_c, x0_u), (eps_c, eps_u) = x0_both.chunk(2), eps_both.chunk(2)
        w_b = _per_sample(w[active.cpu()].double(), x_now)
        stepped = solver.step(x0_c + w_b * (x0_c - x0_u), eps_c + w_b * (eps_c - eps_u), current[active])
        x = x.clone()
        x[active] = stepped.to(x.dtype)
        current[active] -= 1
    reached = torch.where(current >= 0, solver.timesteps[current.clamp(min=0)], torch.zeros_like(current))
    return x, reached


def lcm_loss(
    student: nn.Module,
    target: nn.Module,
    teacher: nn.Module,
    solver: DDIMSolver,
    noise_scheduler: Any,
    latents: torch.Tensor,
    text_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor,
    config: LCMConfig,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """One evaluation of the consistency distillation objective (steps 1-5 of the module doc)."""
    batch, device = latents.shape[0], latents.device
    prediction_type = noise_scheduler.config.prediction_type
    alphas = noise_scheduler.alphas_cumprod

    # 1. Grid index n, the noisy latents at t_{n+k}.
    index = torch.randint(0, len(solver.timesteps), (batch,), generator=gen)
    start = solver.timesteps[index]
    noise = torch.randn(latents.shape, generator=gen).to(latents)
    noisy = noise_scheduler.add_noise(latents, noise, start.to(device))

    # 2. The guidance weight and its embedding.
    w = config.w_min + (config.w_max - config.w_min) * torch.rand(batch, generator=gen)
    w_embed = guidance_embedding(w, config.time_cond_proj_dim).to(device)

    # 4a. Online consistency prediction at t_{n+k}.
    c_skip_start, c_out_start = (_per_sample(c, latents) for c in boundary_scalings(start))
    output = student(noisy, start.to(device), text_embeds, timestep_cond=w_embed).sample
    x0_student, _ = x0_and_eps(output, start, noisy, alphas, prediction_type)
    online = c_skip_start * noisy + c_out_start * x0_student

    with torch.no_grad():
        # 3. The teacher's guided DDIM step(s) down the grid, to t_n.
        x_prev, prev = guided_ddim_solve(
            teacher,
            solver,
            noisy,
            index,
            config.teacher_steps,
            text_embeds,
            uncond_embeds,
            w,
            prediction_type,
        )

        # 4b. The target network's consistency prediction at t_n (the identity at t = 0).
        c_skip_prev, c_out_prev = (_per_sample(c, latents) for c in boundary_scalings(prev))
        consistency_target = x_prev
        if (prev > 0).any():
            output_prev = target(x_prev, prev.to(device), text_embeds, timestep_cond=w_embed).sample
            x0_target, _ = x0_and_eps(output_prev, prev, x_prev, alphas, prediction_type)
            consistency_target = c_skip_prev * x_prev + c_out_prev * x0_target

    # 5. The distance.
    online, consistency_target = online.float(), consistency_target.float()
    if config.loss == "huber":
        distance = torch.sqrt((online - consistency_target) ** 2 + config.huber_c**2) - config.huber_c
        loss = distance.mean()
    else:
        loss = F.mse_loss(online, consistency_target)
    return {"loss": loss}


def lcm_distill(config: LCMConfig) -> StageReport:
    """Distill ``config.student`` for few-step sampling from ``config.teacher``'s guided ODE and
    write it as a pipeline with an ``LCMScheduler``. Re-running resumes from the newest checkpoint
    in ``config.run_dir``; under ``accelerate launch`` it runs data-parallel."""
    # 1. The run (accelerator, run folder, a free output), the shared pipeline and its training
    #    schedule (alphas for the noise, the solver and the targets).
    run = open_stage(config, [config.teacher, config.student, config.pipeline, config.data.path])
    pipeline = shared_pipeline(config.pipeline, (config.student, config.teacher), config.student)
    noise_scheduler = run.noise_schedule(pipeline)
    solver = DDIMSolver(noise_scheduler.alphas_cumprod, config.num_ddim_steps)

    # 2. The frozen ODE teacher; the student with its (zero-initialized) guidance embedding, and
    #    the target network as the loop's EMA, so it is checkpointed and restored with the run.
    teacher = run.freeze(load_unet(config.teacher, "teacher"))
    student = add_guidance_embedding(load_unet(config.student, "student"), config.time_cond_proj_dim)
    student.float().requires_grad_(True).train()
    target = EMA(student, config.target_decay, warmup=False)

    # 3. Data: cached latents and text embeddings when configured, as in KD.
    data = run.data(pipeline)
    check_conditioning(teacher, student, data.uncond_embeds)

    def objective(model: nn.Module, batch: dict[str, Any], gen: torch.Generator) -> dict[str, torch.Tensor]:
        latents, text = data.latents_and_text(batch, gen)
        return lcm_loss(
            model,
            target.module,
            teacher,
            solver,
            noise_scheduler,
            latents,
            text,
            data.uncond_embeds,
            config,
            gen,
        )

    # 4. Train (resumable), then write the pipeline with the trained student and an LCMScheduler
    #    of its schedule.
    result = run.train(student, objective, data, ema=target, desc="lcm")
    provenance = {
        "stage": "lcm",
        "method": "latent consistency distillation (EdgeFusion: compact student, separate teacher)",
        "teacher": config.teacher,
        "student_init": config.student,
        "w_range": [config.w_min, config.w_max],
        # The middle of the distilled range (CFG scale 1 + w): what sampling uses by default.
        "guidance_scale": 1.0 + (config.w_min + config.w_max) / 2,
        "num_ddim_steps": config.num_ddim_steps,
        "teacher_steps": config.teacher_steps,
        "loss": config.loss,
    }
    student = run.accelerator.unwrap_model(student)
    return run.finish(
        student,
        pipeline,
        CONFIG_NAME,
        provenance,
        result,
        data,
        extra=lambda folder: write_lcm_scheduler(folder, noise_scheduler.config, config.num_ddim_steps),
    )


def write_lcm_scheduler(folder: Path, schedule: Any, num_ddim_steps: int) -> None:
    """Make ``folder`` an LCM pipeline: an ``LCMScheduler`` of the same training schedule, and a
    model index naming it (``LatentConsistencyModelPipeline`` and ``StableDiffusionPipeline`` both
    load the folder).

    The scheduler's ``original_inference_steps`` is the distillation grid, so few-step sampling
    picks its timesteps among those the student was trained on (with 10 grid steps and 4 sampling
    steps: 999, 799, 499, 299, not points between the grid's)."""
    from diffusers import LCMScheduler

    scheduler = LCMScheduler.from_config(schedule, original_inference_steps=num_ddim_steps)
    scheduler.save_pretrained(folder / "scheduler")
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text(encoding="utf-8"))
    index["_class_name"] = "LatentConsistencyModelPipeline"
    index["scheduler"] = ["diffusers", "LCMScheduler"]
    index_file.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample scalars shaped to broadcast over ``like`` (B, C, H, W), in its dtype and device."""
    return values.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))
