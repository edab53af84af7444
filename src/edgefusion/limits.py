"""What a request may ask of a model, checked before any work.

Each check here stands for a failure that would otherwise come late and unclear: a guidance of
nan or inf gives NaN latents (black images, NaN in the logs); a seed beyond 64 bits overflows
torch's generator after the model has loaded; an image side the U-Net cannot halve down to its
innermost level fails deep in a convolution, or silently makes a tiny model; a size or batch that
cannot fit in memory grows until the machine kills the process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from edgefusion.errors import EdgefusionError

#: torch.Generator.manual_seed takes seeds up to 2**64 - 1.
MAX_SEED = 2**64 - 1
#: torch counts a tensor's bytes in a signed 64-bit integer, even on the meta device.
MAX_TENSOR_BYTES = 2**63 - 1


def check_guidance(guidance: float) -> float:
    """``guidance`` if finite: nan or inf turns every latent into NaN, a black image."""
    if not math.isfinite(guidance):
        raise EdgefusionError(f"guidance must be a finite number, got {guidance}")
    return guidance


def check_seeds(seed: int, count: int) -> None:
    """Image ``k`` of ``count`` uses seed ``seed + k``: all of them must fit torch's generator."""
    last = seed + max(count, 1) - 1
    if seed < 0 or last > MAX_SEED:
        used = f"{seed}" if last == seed else f"{seed} .. {last} (seed + image index)"
        raise EdgefusionError(f"seed {seed} is out of range: seeds {used} must lie in 0 .. 2**64 - 1")


def check_limit(limit: int | None, what: str = "--num-prompts") -> None:
    """A "first N" limit is None (all) or at least 1: a negative one would drop items from the end
    as a slice does, and 0 leaves nothing to do."""
    if limit is not None and limit < 1:
        raise EdgefusionError(f"{what} must be at least 1 (leave it out for all), got {limit}")


def size_factor(unet_config: Mapping[str, Any], vae_scale: int) -> int:
    """The step of the image sides a model takes: the VAE's factor times 2 for each U-Net
    downsampling (every down block but the last halves the latent), so that every level of the
    U-Net sees a whole number of latent pixels (64 for SD-v1/v2)."""
    return vae_scale * 2 ** (len(unet_config["down_block_types"]) - 1)


def check_image_size(size: int, factor: int, what: str = "size") -> int:
    """``size`` if it is a positive multiple of the model's ``factor`` (see :func:`size_factor`)."""
    if size <= 0 or size % factor:
        nearest = max(factor, round(size / factor) * factor)
        raise EdgefusionError(
            f"{what} {size} is not a positive multiple of {factor}, the factor by which this model's VAE "
            f"and U-Net downsample: try {nearest}"
        )
    return size


def check_traceable(latent_side: int, channels: int, batch: int = 1) -> None:
    """Refuse a latent whose largest attention tensor torch cannot even describe. The first
    self-attention's score matrix holds batch x heads x tokens^2 entries (tokens = latent_side^2,
    at most one head per channel); above 2**63 bytes, shape arithmetic overflows on any device."""
    if batch * channels * latent_side**4 * 4 > MAX_TENSOR_BYTES:
        raise EdgefusionError(
            f"a {latent_side}x{latent_side} latent is too large: one attention layer's scores would "
            "exceed 2**63 bytes; choose a smaller resolution"
        )


def available_memory() -> int:
    """Bytes of RAM available to a new allocation now (psutil comes with accelerate)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits_in_memory(needed: int, request: str, fix: str) -> None:
    """Refuse ``request`` when its estimated ``needed`` bytes exceed the available RAM."""
    available = available_memory()
    if needed > available:
        raise EdgefusionError(
            f"{request} needs at least {_gib(needed)} of memory, but {_gib(available)} are available: {fix}"
        )


def _gib(count: int) -> str:
    return f"{count / 2**30:,.1f} GiB"
