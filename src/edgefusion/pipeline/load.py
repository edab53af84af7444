"""Loading a Stable Diffusion pipeline folder (or a shipped toy name) for generation."""

from __future__ import annotations

from pathlib import Path

import torch

from edgefusion.errors import EdgefusionError
from edgefusion.toy.registry import resolve_model_path


def load_pipeline(spec: str | Path, dtype: torch.dtype = torch.float32):
    """The generation pipeline of a diffusers folder or ``toy:NAME``, with no safety checker.

    A W8A16 folder (``edgefusion quantize``) loads with its int8 U-Net, in its 16-bit dtype. Weights
    may be stored in fp16 (the shipped toy models are); they load as ``dtype``, because fp16
    matmuls are slow or missing on CPUs. The kind of pipeline follows the U-Net, see
    :func:`as_generation_pipeline`. The folder's JSON files and weight headers are checked first
    (:func:`~edgefusion.inputs.check_model_folder`), so a corrupt file is a one-line error.
    """
    import diffusers
    import transformers
    from diffusers import StableDiffusionPipeline

    from edgefusion.inputs import check_model_folder, first_line
    from edgefusion.quant.io import is_quantized_folder, load_quantized_pipeline

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    path = resolve_model_path(spec)
    if not (path / "model_index.json").exists():
        raise EdgefusionError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
    check_model_folder(path)
    if is_quantized_folder(path):
        return load_quantized_pipeline(path)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(path), dtype=dtype, safety_checker=None, requires_safety_checker=False
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise EdgefusionError(
            f"could not load the pipeline in {path}: {first_line(err)}; check that each component's "
            "config matches its weights"
        ) from err
    return as_generation_pipeline(pipe)


def as_generation_pipeline(pipe):
    """``pipe`` as the pipeline its U-Net samples with, progress bar off.

    A U-Net with a guidance embedding (``time_cond_proj_dim``: an LCM-distilled model) gets a
    ``LatentConsistencyModelPipeline`` with an ``LCMScheduler``: guidance is embedded, the batch is
    not doubled. Any other model stays a ``StableDiffusionPipeline`` with its own scheduler. Both
    take the same call arguments. The LCM pipeline is built from the same components, not with
    ``from_pipe``, which casts every component to float32 (a W8A16 pipeline computes in 16 bits).
    """
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    if is_lcm(pipe):
        pipe = LatentConsistencyModelPipeline(**pipe.components, requires_safety_checker=False)
        if not isinstance(pipe.scheduler, LCMScheduler):
            pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def is_lcm(pipe) -> bool:
    """Whether the pipeline's U-Net takes an embedded guidance scale (an LCM-distilled model)."""
    return getattr(pipe.unet.config, "time_cond_proj_dim", None) is not None


_SCHEDULERS = {
    "pndm": "PNDMScheduler",
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "lcm": "LCMScheduler",
}


def set_scheduler(pipe, name: str) -> None:
    """Swap the pipeline's sampler for a diffusers scheduler of the same training schedule. An
    LCM model samples with its own scheduler only (its steps are consistency jumps)."""
    import diffusers

    if name not in _SCHEDULERS:
        raise EdgefusionError(f"unknown scheduler {name!r}; choose one of {', '.join(_SCHEDULERS)}")
    if is_lcm(pipe) and name != "lcm":
        raise EdgefusionError(f"this is an LCM model: it samples with the lcm scheduler, not {name}")
    cls = getattr(diffusers, _SCHEDULERS[name])
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def cast_(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model.to(dtype)`` in place, without diffusers' warning that "there are modules that should
    be kept in float32: []": its ``ModelMixin.to`` prints it on every dtype cast, even when the
    list is empty, as it is for SD's U-Net and VAE. A model that does name such modules is cast by
    diffusers itself, warning included."""
    if getattr(model, "_keep_in_fp32_modules", None):
        return model.to(dtype)
    return torch.nn.Module.to(model, dtype)
