"""Batched, seeded image generation with a loaded pipeline, and the settings it samples with.

Image ``i`` uses its own generator seeded with ``seeds[i]``, so an image does not depend on the
batch it was generated in: resumed or re-batched runs give the same pixels. Every sampling
command (generate, eval, toy eval, synthesize, the quantize and export reports) comes through
:func:`generate_tensors`, so the checks of a request (finite guidance, seeds in range, an image
size the model takes and that fits in memory) hold for all of them, and through
:func:`sampling_defaults`, so they all sample a model with the same steps and guidance: the
model kind's steps (LCM: 2, else SD's 25) and the guidance the model records.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from edgefusion.errors import EdgefusionError
from edgefusion.limits import check_fits_in_memory, check_guidance, check_seeds, size_factor
from edgefusion.pipeline.lcm import is_lcm
from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.provenance import DEFAULT_GUIDANCE, recorded_guidance

#: Steps when a caller gives none: SD's 25; EdgeFusion's 2.
DEFAULT_STEPS = {"lcm": 2, "other": 25}
#: Guidance of an LCM that records none: diffusers' ``LatentConsistencyModelPipeline`` default.
LCM_DEFAULT_GUIDANCE = 8.5


def default_guidance(pipe: Any, model: str | Path) -> float:
    """The guidance scale the model records for sampling (see :mod:`edgefusion.provenance`), else
    the model kind's: CFG 7.5 (SD's), or diffusers' LCM default 8.5."""
    recorded = recorded_guidance(resolve_model_path(model))
    if recorded is not None:
        return recorded
    return LCM_DEFAULT_GUIDANCE if is_lcm(pipe) else DEFAULT_GUIDANCE


def sampling_defaults(
    pipe: Any, model: str | Path, steps: int | None, guidance: float | None
) -> tuple[int, float]:
    """``steps`` and ``guidance``, or the model kind's defaults where they are None; a guidance
    that is not finite (given, or recorded by the model) is refused."""
    if steps is None:
        steps = DEFAULT_STEPS["lcm" if is_lcm(pipe) else "other"]
    if steps < 1:
        raise EdgefusionError(f"steps must be at least 1, got {steps}")
    return steps, check_guidance(guidance if guidance is not None else default_guidance(pipe, model))


def warn_truncated(tokenizer: Any, prompts: Sequence[str]) -> None:
    """Warn, naming the prompt and what is lost, when a prompt exceeds the text encoder's tokens."""
    limit = tokenizer.model_max_length
    for index, prompt in enumerate(prompts):
        ids = tokenizer(prompt, truncation=False).input_ids
        if len(ids) > limit:
            kept = tokenizer.decode(ids[1 : limit - 1])
            warnings.warn(
                f"prompt {index} has {len(ids)} tokens but the text encoder reads {limit}: it is truncated "
                f"to {kept!r}",
                UserWarning,
                stacklevel=3,
            )


def generate_tensors(
    pipe,
    prompts: list[str],
    seeds: list[int],
    steps: int,
    guidance: float,
    batch_size: int = 50,
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Images in [0, 1], shape (N, 3, H, W), one per (prompt, seed)."""
    if len(prompts) != len(seeds):
        raise ValueError("need one seed per prompt")
    check_guidance(guidance)
    for seed in seeds:
        check_seeds(seed, 1)
    side = native_size(pipe)
    check_sampling_memory(pipe, min(batch_size, len(prompts)), height or side, width or side)
    out = []
    for i in range(0, len(prompts), batch_size):
        gens = [torch.Generator().manual_seed(s) for s in seeds[i : i + batch_size]]
        with torch.no_grad():
            images = pipe(
                prompt=prompts[i : i + batch_size],
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=gens,
                output_type="pt",
                height=height,
                width=width,
            ).images
        out.append(images.float().cpu())
    return torch.cat(out)


def native_size(pipe) -> int:
    """The image side the model was made for (an onnxruntime pipeline states it as ``default_size``)."""
    if getattr(pipe, "default_size", None):
        return int(pipe.default_size)
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def pipeline_size_factor(pipe) -> int:
    """The step of the image sides ``pipe`` takes (:func:`edgefusion.limits.size_factor`); an
    onnxruntime pipeline states it in its export info."""
    unet_config = getattr(pipe.unet, "config", None)
    if unet_config is None:
        return int(pipe.size_factor)
    return size_factor(unet_config, int(pipe.vae_scale_factor))


def sampling_bytes(pipe, batch: int, height: int, width: int) -> int:
    """A lower bound of the memory one pipeline call takes beyond the weights, in 16-bit elements
    (no pipeline computes in fewer): the VAE decoder's widest full-resolution feature maps (two
    alive at once, a convolution's input and output), the U-Net's first-level maps for the
    conditional and unconditional halves, and the images returned."""
    pixels = batch * height * width
    latent_pixels = pixels // int(pipe.vae_scale_factor) ** 2
    vae_config = getattr(getattr(pipe, "vae", None), "config", None)  # onnxruntime: no configs
    unet_config = getattr(pipe.unet, "config", None)
    vae_channels = vae_config.block_out_channels[0] if vae_config is not None else 0
    unet_channels = unet_config.block_out_channels[0] if unet_config is not None else 0
    return 2 * (2 * vae_channels * pixels + 2 * 2 * unet_channels * latent_pixels + 3 * pixels)


def check_sampling_memory(pipe, batch: int, height: int, width: int) -> None:
    """Refuse a call of ``pipe`` on ``batch`` images of ``height`` x ``width`` that cannot fit in
    the available memory, before anything is allocated."""
    check_fits_in_memory(
        sampling_bytes(pipe, batch, height, width),
        f"sampling {batch} image(s) of {width}x{height} px at a time",
        "lower the size or the batch size",
    )
