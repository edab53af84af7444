"""Models in and out of the distillation stages: U-Nets by name, the shared pipeline, the result.

Every model argument accepts what the rest of the toolkit accepts: a diffusers pipeline or U-Net
folder, a single-file original-layout ``.safetensors`` checkpoint, or a shipped ``toy:NAME``.
The result of a stage is the input pipeline with its U-Net replaced, so plain
``StableDiffusionPipeline.from_pretrained`` loads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from edgefusion import __version__
from edgefusion.arch.compression import copy_pipeline_without_unet
from edgefusion.arch.removal import VARIANTS, plan_removal
from edgefusion.atomic import atomic_output_dir, check_output_free
from edgefusion.config import save_config
from edgefusion.errors import EdgefusionError
from edgefusion.paths import check_output_apart
from edgefusion.pipeline.load import cast_
from edgefusion.pipeline.sources import load_teacher_unet, resolve_model_path, resolve_source
from edgefusion.provenance import PROVENANCE_FILE

# The config entries that fix a U-Net's block structure (what BK-SDM removal changes).
_STRUCTURE_KEYS = (
    "block_out_channels",
    "down_block_types",
    "up_block_types",
    "layers_per_block",
    "mid_block_type",
)
_DEFAULT_MID_BLOCK = "UNetMidBlock2DCrossAttn"


def load_unet(spec: str, role: str) -> UNet2DConditionModel:
    """The U-Net of ``spec`` with its weights, in the dtype it was stored in; ``role`` names it in
    errors (e.g. "teacher")."""
    unet = load_teacher_unet(resolve_source(spec))
    if unet is None:
        raise EdgefusionError(
            f"{role} {spec} holds no weights (an architecture only): give a pipeline or U-Net folder "
            "with weights"
        )
    return unet


def input_folders(specs: list[str | None]) -> list[Path]:
    """The folders or files behind a stage's model and data settings (``toy:NAME`` resolved;
    built-in names and unset ones left out): the paths its outputs must stay apart from."""
    folders = []
    for spec in specs:
        if spec is None:
            continue
        try:
            folders.append(resolve_model_path(spec))
        except EdgefusionError:  # a built-in architecture name: nothing on disk
            continue
    return folders


def check_stage_paths(out: Path, run_dir: Path, overwrite: bool, inputs: list[str | None]) -> None:
    """Before a training stage starts: ``out`` is free (or ``overwrite``), and neither ``out`` nor
    ``run_dir`` is one of the stage's inputs, lies inside one or holds one (a replaced output or a
    rotated checkpoint would delete it)."""
    folders = input_folders(inputs)
    check_output_free(out, overwrite, folders)
    check_output_apart(run_dir, folders, "run_dir")


def is_pipeline(spec: str) -> bool:
    """Whether ``spec`` names a diffusers pipeline folder (``model_index.json`` inside)."""
    try:
        return (resolve_model_path(spec) / "model_index.json").is_file()
    except EdgefusionError:
        return False


def shared_pipeline(explicit: str | None, candidates: tuple[str | None, ...], fallback: str) -> Path:
    """The folder a stage takes text encoder, VAE, tokenizer and schedule from: ``explicit`` when
    set, else the first of ``candidates`` that is a pipeline folder, else ``fallback`` (whose error
    then says that a pipeline is needed)."""
    found = next((c for c in candidates if c is not None and is_pipeline(c)), fallback)
    return pipeline_folder(explicit or found)


def pipeline_folder(spec: str, role: str = "pipeline") -> Path:
    """The folder of the pipeline ``spec``, or an error saying that a pipeline is needed."""
    path = resolve_model_path(spec)
    if not (path / "model_index.json").is_file():
        raise EdgefusionError(
            f"{role} {spec} is not a diffusers pipeline folder (no model_index.json): the text encoder, "
            "VAE, tokenizer and scheduler come from one; set pipeline to such a folder"
        )
    return path


def infer_variant(teacher_config: dict[str, Any], student_config: dict[str, Any]) -> str | None:
    """The BK-SDM variant whose removal turns the teacher's block structure into the student's, or
    None when none does (then feature pairs cannot be derived)."""
    for variant in VARIANTS:
        try:
            expected = plan_removal(teacher_config, variant).student_config
        except EdgefusionError:
            continue
        if all(_structure(expected, key) == _structure(student_config, key) for key in _STRUCTURE_KEYS):
            return variant
    return None


def save_student_pipeline(
    unet: UNet2DConditionModel,
    pipeline: Path,
    out: Path,
    dtype: torch.dtype,
    provenance: dict[str, Any],
    config: Any,
    config_name: str,
    overwrite: bool = False,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``pipeline`` with ``unet`` (cast to ``dtype``, in place) as its U-Net to ``out``,
    atomically; ``provenance`` goes beside the U-Net's config, the stage config at the root, and
    ``extra(folder)`` changes or adds a stage's own parts before the folder is moved into place."""
    with atomic_output_dir(out, overwrite) as staging:
        copy_pipeline_without_unet(pipeline, staging)
        if unet.dtype != dtype:
            cast_(unet, dtype)
        unet.save_pretrained(staging / "unet")
        record = {**provenance, "edgefusion_version": __version__}
        (staging / "unet" / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        save_config(config, staging / config_name)
        if extra is not None:
            extra(staging)
    return out


def check_conditioning(teacher: nn.Module, student: nn.Module, text_embeds: torch.Tensor) -> None:
    """Teacher and student must read the pipeline's text embeddings and latents."""
    width = text_embeds.shape[-1]
    for role, unet in (("teacher", teacher), ("student", student)):
        if unet.config.cross_attention_dim != width:
            raise EdgefusionError(
                f"the {role} U-Net expects text embeddings of width {unet.config.cross_attention_dim}, "
                f"but the pipeline's text encoder gives {width}: use a pipeline of the same model family"
            )
    if teacher.config.in_channels != student.config.in_channels:
        raise EdgefusionError("teacher and student U-Nets take latents of different channel counts")


def _structure(config: dict[str, Any], key: str) -> Any:
    value = config.get(key, _DEFAULT_MID_BLOCK if key == "mid_block_type" else None)
    return list(value) if isinstance(value, list | tuple) else value
