"""BK-SDM knowledge distillation: ``edgefusion distill``.

BK-SDM (Kim et al., "BK-SDM: A Lightweight, Fast, and Cheap Version of Stable Diffusion", 2023)
retrains a block-removed U-Net (``edgefusion compress``) with three terms (BK-SDM's objective):

    loss = w_task * MSE(eps_student, eps)                     task loss, SD's own objective
         + w_out  * MSE(eps_student, eps_teacher)             output-level KD
         + w_feat * sum_l MSE(f_student_l, f_teacher_l)       feature-level KD

where the feature maps ``l`` are the block outputs paired by the removal plan. The teacher may
be another model than the one the student was cut from: BK-SDM-Adv, which EdgeFusion starts
from, distills the SD-v1.4 cut from a stronger teacher (Realistic Vision). VAE and text encoder
are frozen, as is the teacher; only the student trains.

The method is :func:`kd_loss` (one evaluation of the objective) and :func:`distill` (its numbered
steps). Everything else is shared with the other training stages: the run around them
(:mod:`~edgefusion.train.stage`), data and its cache (:mod:`~edgefusion.train.data`), the
accelerate loop, checkpoints and logs (:mod:`~edgefusion.train.loop`), EMA, feature hooks and
loss terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from edgefusion.arch import FeaturePair, compress, plan_removal
from edgefusion.arch.removal import VARIANTS
from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.provenance import DEFAULT_GUIDANCE, recorded_guidance
from edgefusion.train.config import DataConfig, LoopConfig
from edgefusion.train.data import drop_captions
from edgefusion.train.features import capture_features
from edgefusion.train.losses import feature_kd_loss, forward_process, output_kd_loss, task_loss
from edgefusion.train.models import check_conditioning, infer_variant, load_unet, shared_pipeline
from edgefusion.train.stage import StageReport, open_stage

CONFIG_NAME = "distill.yaml"


@dataclass
class KDLossConfig:
    """Weights of BK-SDM's three terms (1.0 each in the paper); ``normalize_features`` makes each
    feature term a relative error (see :func:`~edgefusion.train.losses.feature_kd_loss`)."""

    task_weight: float = 1.0
    output_weight: float = 1.0
    feature_weight: float = 1.0
    normalize_features: bool = False

    def __post_init__(self) -> None:
        weights = (self.task_weight, self.output_weight, self.feature_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise EdgefusionError("loss weights must be 0 or more, and at least one positive")


@dataclass
class KDConfig:
    """``edgefusion distill``: who teaches whom, on what data, for how long, and where it goes.

    - ``teacher``: the KD teacher U-Net (pipeline/U-Net folder, .safetensors, ``toy:NAME``).
    - ``student``: the student U-Net (e.g. the output of ``edgefusion compress``); when null, the
      student is cut with ``variant`` from ``student_from`` (default: the teacher).
    - ``variant``: BK-SDM base/small/tiny; it fixes the feature pairs. Inferred from the student's
      block structure when null.
    - ``pipeline``: where text encoder, VAE, tokenizer and schedulers come from (default: the
      first pipeline folder among student, student_from, teacher). The output carries them.
    - ``caption_dropout``: fraction of captions replaced by the empty prompt (0 in BK-SDM).
    - ``guidance_scale``: the guidance scale the student is meant to be sampled with, recorded in
      the output; null takes the one the teacher records (else SD's 7.5).
    """

    teacher: str = ""
    student: str | None = None
    variant: str | None = None
    student_from: str | None = None
    pipeline: str | None = None
    out: str = "runs/kd/out"
    run_dir: str = "runs/kd/run"
    overwrite: bool = False
    caption_dropout: float = 0.0
    guidance_scale: float | None = None
    save_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    loss: KDLossConfig = field(default_factory=KDLossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        if not self.teacher:
            raise EdgefusionError("set teacher (a pipeline or U-Net folder, or toy:teacher)")
        if not self.data.path:
            raise EdgefusionError("set data.path (an imagefolder or WebDataset .tar shards)")
        if self.variant is not None and self.variant not in VARIANTS:
            raise EdgefusionError(f"unknown variant {self.variant!r}: use one of {', '.join(VARIANTS)}")
        if self.student is None and self.variant is None:
            raise EdgefusionError("set variant (base, small, tiny) to cut the student, or student to a U-Net")
        if not 0 <= self.caption_dropout < 1:
            raise EdgefusionError("caption_dropout must lie in [0, 1)")
        if self.guidance_scale is not None and self.guidance_scale < 1:
            raise EdgefusionError("guidance_scale must be 1 (no guidance) or more, or null for the teacher's")


@dataclass
class DistillReport(StageReport):
    """What :func:`distill` wrote and how the data went, with the BK-SDM variant of its student."""

    variant: str | None = None


def kd_loss(
    student: nn.Module,
    teacher: nn.Module,
    noise_scheduler: Any,
    latents: torch.Tensor,
    text_embeds: torch.Tensor,
    pairs: tuple[FeaturePair, ...],
    weights: KDLossConfig,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """One evaluation of BK-SDM's objective on a batch of clean latents; returns every term and
    their weighted sum as ``loss``. ``student`` may be DDP-wrapped; hooks go on the inner model.
    Without output or feature weight the teacher is not run (the task-only baseline)."""
    from accelerate.utils import extract_model_from_parallel

    # a. SD's forward process: noise at uniformly drawn training timesteps.
    noisy, timesteps, target = forward_process(noise_scheduler, latents, gen)

    # b. The student, with its paired feature maps captured.
    pairs = pairs if weights.feature_weight > 0 else ()
    with capture_features(extract_model_from_parallel(student), [p.student for p in pairs]) as student_maps:
        student_pred = student(noisy, timesteps, text_embeds).sample
    terms = {"task": task_loss(student_pred, target)}

    # c. The frozen teacher on the same input, and the KD terms.
    if weights.output_weight > 0 or pairs:
        with torch.no_grad(), capture_features(teacher, [p.teacher for p in pairs]) as teacher_maps:
            teacher_pred = teacher(noisy, timesteps, text_embeds).sample
        terms["output_kd"] = output_kd_loss(student_pred, teacher_pred)
    if pairs:
        per_map = feature_kd_loss(
            [student_maps[p.student] for p in pairs],
            [teacher_maps[p.teacher] for p in pairs],
            weights.normalize_features,
        )
        terms["feature_kd"] = per_map.sum()
        terms.update({f"feature_kd/{p.student}": value for p, value in zip(pairs, per_map, strict=True)})

    # d. The weighted sum that is optimized.
    loss = weights.task_weight * terms["task"]
    if "output_kd" in terms:
        loss = loss + weights.output_weight * terms["output_kd"]
    if "feature_kd" in terms:
        loss = loss + weights.feature_weight * terms["feature_kd"]
    return {"loss": loss, **terms}


def distill(config: KDConfig) -> DistillReport:
    """Distill a compact student U-Net from a teacher, BK-SDM style, and write it as a pipeline.

    Re-running with the same config resumes from the newest checkpoint in ``config.run_dir``.
    Under ``accelerate launch`` it runs data-parallel on every process.
    """
    # 1. The run (accelerator, run folder, a free output), the shared pipeline (text encoder,
    #    VAE, tokenizer) and SD's training noise schedule.
    inputs = [config.teacher, config.student, config.student_from, config.pipeline, config.data.path]
    run = open_stage(config, inputs)
    pipeline = shared_pipeline(
        config.pipeline, (config.student, config.student_from, config.teacher), config.teacher
    )
    noise_scheduler = run.noise_schedule(pipeline)

    # 2. The teacher and the student. The student is cut before the teacher is cast to the
    #    mixed-precision dtype, so it starts from the stored weights; it trains in float32.
    teacher = load_unet(config.teacher, "teacher")
    student = _student(config, teacher)
    variant = config.variant or infer_variant(dict(teacher.config), dict(student.config))
    run.freeze(teacher)
    student.float().requires_grad_(True).train()
    pairs = _feature_pairs(config, dict(teacher.config), variant)

    # 3. Data: pairs (or their cached latents and text embeddings), skipping unusable samples.
    data = run.data(pipeline)
    check_conditioning(teacher, student, data.uncond_embeds)

    # 4. The objective of one micro-batch: latents from the VAE posterior, captions dropped to
    #    the empty prompt at ``caption_dropout``, then BK-SDM's three terms.
    def objective(model: nn.Module, batch: dict[str, Any], gen: torch.Generator) -> dict[str, torch.Tensor]:
        latents, text = data.latents_and_text(batch, gen)
        text = drop_captions(text, data.uncond_embeds, config.caption_dropout, gen)
        return kd_loss(model, teacher, noise_scheduler, latents, text, pairs, config.loss, gen)

    # 5. Train (resumable), with the student's EMA when asked (BK-SDM ships the EMA weights),
    #    and write the pipeline with the trained (EMA) student as its U-Net.
    ema = run.student_ema(student)
    result = run.train(student, objective, data, ema, desc="distill")
    provenance = {
        "stage": "distill",
        "method": "BK-SDM knowledge distillation",
        "teacher": config.teacher,
        "student_init": config.student
        or f"BK-SDM-{variant} cut from {config.student_from or config.teacher}",
        "variant": variant,
        "guidance_scale": _guidance_scale(config),
        "feature_pairs": [f"{p.student} <- {p.teacher}" for p in pairs],
        "ema_decay": config.train.ema_decay,
    }
    final = ema.module if ema is not None else student
    report = run.finish(final, pipeline, CONFIG_NAME, provenance, result, data)
    return DistillReport(**vars(report), variant=variant)


def _feature_pairs(
    config: KDConfig, teacher_config: dict[str, Any], variant: str | None
) -> tuple[FeaturePair, ...]:
    """BK-SDM's feature pairs, from the removal plan of the teacher's block structure (none
    without a feature term)."""
    if config.loss.feature_weight <= 0:
        return ()
    if variant is None:
        raise EdgefusionError(
            "the student is not a BK-SDM cut of the teacher's block structure, so feature pairs "
            "cannot be derived: set variant, or loss.feature_weight=0"
        )
    return plan_removal(teacher_config, variant).feature_pairs


def _guidance_scale(config: KDConfig) -> float:
    """The student samples as its teacher does, unless the config says otherwise."""
    if config.guidance_scale is not None:
        return config.guidance_scale
    try:
        recorded = recorded_guidance(resolve_model_path(config.teacher))
    except EdgefusionError:  # a built-in architecture name, not a folder: nothing recorded
        recorded = None
    return recorded if recorded is not None else DEFAULT_GUIDANCE


def _student(config: KDConfig, teacher: nn.Module) -> nn.Module:
    if config.student is not None:
        return load_unet(config.student, "student")
    cut_from = teacher if config.student_from is None else load_unet(config.student_from, "student_from")
    return compress(cut_from, config.variant)
