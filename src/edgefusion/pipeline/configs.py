"""Built-in Stable Diffusion architectures, shipped as diffusers/transformers configs (no weights).

They are model names like any other for the resolver (:mod:`edgefusion.pipeline.sources`), so
every architecture tool (block removal, parameter and MAC counts, tiling plans, benchmarks) runs
offline on the real SD-v1.x and SD-v2.x-base shapes. The JSON files in ``edgefusion/configs``
reproduce the official diffusers configs: SD-v1.4 and SD-v1.5 share one U-Net (cross-attention
width 768, CLIP ViT-L/14 text encoder); SD-v2.x-base uses linear attention projections, per-stage
head dims and the OpenCLIP-H text encoder (cross-attention width 1024).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from edgefusion.errors import EdgefusionError

#: Public model names and the config family each resolves to.
BUILTIN_MODELS: dict[str, str] = {
    "sd-v1.4": "sd-v1",
    "sd-v1.5": "sd-v1",
    "sd-v2-base": "sd-v2-base",
    "sd-v2.1-base": "sd-v2-base",
}

#: Image-to-latent downscaling of the SD VAE, used when no VAE config says otherwise.
DEFAULT_VAE_SCALE_FACTOR = 8

#: Components each built-in family ships a config for (diffusers pipeline subfolder names).
BUILTIN_COMPONENTS: tuple[str, ...] = ("unet", "text_encoder", "vae")


def builtin_config(family: str, component: str) -> dict[str, Any]:
    """Return a fresh copy of the shipped config of ``component`` for a built-in ``family``."""
    resource = resources.files("edgefusion") / "configs" / f"{family}-{component}.json"
    return json.loads(resource.read_text(encoding="utf-8"))


def builtin_family(name: str) -> str:
    """Resolve a public model name (e.g. ``sd-v1.4``) to its config family, or raise listing them."""
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        raise EdgefusionError(
            f"unknown built-in model {name!r}: use one of {', '.join(BUILTIN_MODELS)} or a path"
        ) from None


def vae_scale_factor(vae_config: Mapping[str, Any] | None) -> int:
    """Image pixels per latent pixel, computed as diffusers' pipelines do (2 ** (levels - 1)); SD's 8
    when there is no VAE config."""
    if not vae_config:
        return DEFAULT_VAE_SCALE_FACTOR
    return 2 ** (len(vae_config["block_out_channels"]) - 1)
