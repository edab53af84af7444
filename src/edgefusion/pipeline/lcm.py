"""What makes a model an LCM, and the guidance embedding it is sampled with.

An LCM-distilled U-Net (EdgeFusion) takes the guidance scale as an input, ``timestep_cond``, of
width ``time_cond_proj_dim``, instead of running the batch twice for classifier-free guidance.
Loading, sampling, export, benchmarks and LCM training all ask "is this an LCM" and build that
input; both answers live here, once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


def is_lcm(model: Any) -> bool:
    """Whether ``model`` embeds the guidance scale (a U-Net config with ``time_cond_proj_dim``).

    ``model`` is a pipeline, a U-Net or a U-Net config (a mapping or a diffusers config); an
    onnxruntime pipeline, whose U-Net is a graph, states its config in its export info.
    """
    if not isinstance(model, Mapping):
        unet = getattr(model, "unet", model)
        model = getattr(unet, "config", None) or model.config
    if isinstance(model, Mapping):
        return model.get("time_cond_proj_dim") is not None
    return getattr(model, "time_cond_proj_dim", None) is not None


def guidance_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of ``1000 w`` (width ``dim``), as diffusers' LCM pipeline computes it.

    ``w`` is LCM's guidance weight: a CFG scale of ``1 + w`` (the pipeline embeds ``scale - 1``).
    """
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    angles = (w.float() * 1000.0)[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)
