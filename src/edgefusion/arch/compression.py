"""``compress``: build a BK-SDM student U-Net and initialize it from its teacher.

BK-SDM (Kim et al. 2023) initializes every student tensor from the teacher tensor its removal
plan maps it to (same-named tensors, with the up-block remaps, as BK-SDM's release does); the student then
recovers through distillation (``edgefusion.train.kd``). The output
is a standard diffusers folder, so ``UNet2DConditionModel.from_pretrained`` or
``StableDiffusionPipeline.from_pretrained`` loads it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from edgefusion import __version__
from edgefusion.arch.counting import count_unet_parameters
from edgefusion.arch.removal import RemovalPlan, check_variant, plan_removal
from edgefusion.atomic import atomic_output_dir, check_output_free
from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.sources import SourceKind, load_teacher_unet, resolve_source
from edgefusion.provenance import PROVENANCE_FILE


@dataclass(frozen=True)
class CompressionReport:
    """What :func:`compress_path` wrote, for the CLI summary and for scripts."""

    out: Path
    source_kind: SourceKind
    variant: str
    teacher_params: int
    student_params: int
    initialized_from_teacher: bool


def compress(
    teacher: UNet2DConditionModel | Mapping[str, Any], variant: str, seed: int = 0
) -> UNet2DConditionModel:
    """Return BK-SDM's ``base``, ``small`` or ``tiny`` student of ``teacher``.

    Given a U-Net, every student tensor is a copy of its mapped teacher tensor (same dtype and
    device). Given only a config, the student is randomly initialized with ``seed``, for
    architecture work.
    """
    if isinstance(teacher, UNet2DConditionModel):
        return init_student_from_teacher(teacher, plan_removal(teacher.config, variant))
    plan = plan_removal(teacher, variant)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel.from_config(plan.student_config)


def init_student_from_teacher(teacher: UNet2DConditionModel, plan: RemovalPlan) -> UNet2DConditionModel:
    """Build ``plan``'s student and fill every tensor from the teacher tensor it maps to.

    The student is built on the meta device, so no memory is spent on a random initialization that
    would be overwritten; shapes must match exactly, otherwise the teacher is not the model its
    config describes.
    """
    teacher_state = teacher.state_dict()
    with torch.device("meta"):
        student = UNet2DConditionModel.from_config(plan.student_config)
    state: dict[str, torch.Tensor] = {}
    for name, slot in student.state_dict().items():
        teacher_name = plan.teacher_name(name)
        source = teacher_state.get(teacher_name)
        if source is None or source.shape != slot.shape:
            found = "missing" if source is None else f"shape {tuple(source.shape)}"
            raise EdgefusionError(
                f"cannot initialize student {name} {tuple(slot.shape)} from teacher {teacher_name} "
                f"({found}): the teacher's weights do not match its config"
            )
        state[name] = source.detach().clone()
    student.load_state_dict(state, strict=True, assign=True)
    return student


def compress_path(
    src: str | Path,
    variant: str,
    out: str | Path,
    overwrite: bool = False,
    seed: int = 0,
    unet_config: str | Path | None = None,
) -> CompressionReport:
    """Compress the teacher at ``src`` and write the student to ``out`` (``edgefusion compress``).

    ``src`` is a diffusers pipeline folder (``out`` is the same pipeline with the student U-Net,
    every other component copied), a U-Net folder, a single-file original-layout ``.safetensors``
    checkpoint (``out`` is a U-Net folder), or a built-in name / config folder (a randomly
    initialized U-Net folder). ``unet_config`` names the config of a single-file checkpoint that is
    not SD-v1.x/v2.x. ``out`` appears only when complete.
    """
    check_variant(variant)
    out = Path(out)
    source = resolve_source(src, unet_config)
    check_output_free(out, overwrite, [source.path] if source.kind != "builtin" else [])
    plan_removal(source.unet_config, variant)  # reject a wrong layout before loading any weights
    teacher = load_teacher_unet(source)
    student = compress(teacher if teacher is not None else source.unet_config, variant, seed)
    teacher_params = count_unet_parameters(source.unet_config)
    provenance = {
        "stage": "compress",
        "method": f"BK-SDM-{variant.capitalize()} block removal",
        "teacher": str(src),
        "teacher_kind": source.kind,
        "initialization": "teacher" if teacher is not None else f"random (seed {seed})",
        "edgefusion_version": __version__,
    }
    with atomic_output_dir(out, overwrite) as staging:
        unet_dir = staging
        if source.kind == "pipeline":
            copy_pipeline_without_unet(source.path, staging)
            unet_dir = staging / "unet"
        student.save_pretrained(unet_dir)
        (unet_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return CompressionReport(
        out=out,
        source_kind=source.kind,
        variant=variant,
        teacher_params=teacher_params,
        student_params=sum(p.numel() for p in student.parameters()),
        initialized_from_teacher=teacher is not None,
    )


def copy_pipeline_without_unet(pipeline: Path, dest: Path, component: str = "unet") -> None:
    """Copy every file and component folder of a diffusers pipeline except ``component`` (its
    U-Net unless told otherwise), for a writer that saves its own version of that part.

    A new U-Net also drops the root's stage records (``train.yaml``, ``distill.yaml``,
    ``lcm.yaml``: every root file but ``model_index.json``): they tell how the replaced U-Net was
    made, and the writer records its own. A new decoder keeps them, as the U-Net they describe
    stays."""
    for entry in pipeline.iterdir():
        if entry.name == component:
            continue
        if component == "unet" and entry.is_file() and entry.name != "model_index.json":
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name)
        else:
            shutil.copy2(entry, dest / entry.name)
