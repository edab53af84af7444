"""Per-layer tiling of a U-Net: the shape of every attention call, a plan, and the in-place verb.

Shapes come from tracing one U-Net call on PyTorch's meta device (no memory, no weights), so any
diffusers U-Net config works: SD-v1.x, BK-SDM variants, the toy models.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from edgefusion.errors import EdgefusionError
from edgefusion.limits import check_image_size, check_traceable, size_factor
from edgefusion.tiling.planner import AttentionShape, TilePlan, plan_tiles
from edgefusion.tiling.processor import TiledAttnProcessor

TILING_FILE = "tiling.json"


@dataclass(frozen=True)
class LayerPlan:
    """The plan of one attention module (its processor name, as in ``unet.attn_processors``)."""

    name: str
    shape: AttentionShape
    plan: TilePlan

    def to_dict(self) -> dict:
        return {"name": self.name, **self.shape.__dict__, **self.plan.to_dict()}


class _ShapeRecorder:
    """An attention processor that records (q_len, kv_len, heads, head_dim) and does no attention."""

    def __init__(self, name: str, seen: dict[str, tuple[int, int, int, int]]):
        self.name, self.seen = name, seen

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        q_len = (
            hidden_states.shape[-2] * hidden_states.shape[-1]
            if hidden_states.ndim == 4
            else hidden_states.shape[1]
        )
        kv_len = q_len if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        self.seen[self.name] = (q_len, kv_len, attn.heads, attn.to_q.out_features // attn.heads)
        return hidden_states


def attention_shapes(
    unet_config: dict, resolution: int, text_len: int = 77, vae_scale: int = 8
) -> dict[str, tuple[int, int, int, int]]:
    """``{processor name: (q_len, kv_len, heads, head_dim)}`` for one U-Net call at ``resolution`` px."""
    from diffusers import UNet2DConditionModel

    check_image_size(resolution, size_factor(unet_config, vae_scale), "resolution")
    latent = resolution // vae_scale
    check_traceable(latent, unet_config["block_out_channels"][0])
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
    seen: dict[str, tuple[int, int, int, int]] = {}
    unet.set_attn_processor({name: _ShapeRecorder(name, seen) for name in unet.attn_processors})
    cond_dim = unet_config.get("time_cond_proj_dim")
    with torch.no_grad():
        unet(
            torch.zeros(1, unet_config.get("in_channels", 4), latent, latent, device="meta"),
            torch.zeros((), dtype=torch.long, device="meta"),
            torch.zeros(1, text_len, unet_config["cross_attention_dim"], device="meta"),
            timestep_cond=None if cond_dim is None else torch.zeros(1, cond_dim, device="meta"),
        )
    return seen


def plan_unet(
    unet_config: dict,
    sram_bytes: int,
    resolution: int = 512,
    batch: int = 1,
    act_dtype: str = "int16",
    score_dtype: str = "int16",
    tile_overhead_bytes: int = 4096,
    text_len: int = 77,
    vae_scale: int = 8,
) -> list[LayerPlan]:
    """A :class:`TilePlan` for every attention module of a U-Net at ``resolution`` px."""
    plans = []
    shapes = attention_shapes(unet_config, resolution, text_len, vae_scale)
    for name, (q_len, kv_len, heads, head_dim) in shapes.items():
        shape = AttentionShape(heads, q_len, kv_len, head_dim, batch, act_dtype, score_dtype)
        plans.append(LayerPlan(name, shape, plan_tiles(shape, sram_bytes, tile_overhead_bytes)))
    return plans


def tile_attention_(unet, num_tiles: dict[str, int] | int, filter_fn: Callable[[str], bool] | None = None):
    """Give each chosen attention module a :class:`TiledAttnProcessor`, in place; returns ``unet``.

    ``num_tiles``: one count for all, or ``{processor name: count}`` (e.g. from :func:`plan_unet`);
    modules the dict leaves out keep their processor.
    """
    current = unet.attn_processors
    if isinstance(num_tiles, dict):
        unknown = sorted(set(num_tiles) - set(current))
        if unknown:
            raise EdgefusionError(
                f"tiling names attention layers this U-Net does not have: {', '.join(unknown[:3])}"
            )
    processors = {}
    for name, processor in current.items():
        count = num_tiles.get(name) if isinstance(num_tiles, dict) else num_tiles
        chosen = count is not None and (filter_fn is None or filter_fn(name))
        processors[name] = TiledAttnProcessor(count) if chosen else processor
    unet.set_attn_processor(processors)
    return unet


def read_tiling(path: str | Path) -> dict[str, int] | None:
    """The per-layer tile counts of a tiled pipeline folder, or None for an untiled one."""
    file = Path(path) / "unet" / TILING_FILE
    if not file.exists():
        return None
    return {layer["name"]: layer["num_tiles"] for layer in json.loads(file.read_text())["layers"]}
