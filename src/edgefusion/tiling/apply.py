"""``edgefusion tile apply``: a pipeline folder in, the same pipeline with a tiling plan out.

Attention processors are code, not weights, so diffusers cannot save them: the tiled model is the
unchanged pipeline plus ``unet/tiling.json`` (one planned tile count per attention layer, and the
SRAM and shapes it was planned for). :func:`apply_saved_tiling` and the ONNX exporter read it back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgefusion.atomic import atomic_output_dir, check_output_free
from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.configs import vae_scale_factor
from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.tiling.layers import TILING_FILE, plan_unet, read_tiling, tile_attention_


def tile_pipeline(
    src: str | Path,
    out: str | Path,
    sram_bytes: int,
    resolution: int = 512,
    batch: int = 2,
    act_dtype: str = "int16",
    score_dtype: str = "int16",
    tile_overhead_bytes: int = 4096,
    overwrite: bool = False,
) -> Path:
    """Copy pipeline ``src`` to ``out`` with a tile count for each attention layer of its U-Net,
    planned for ``sram_bytes`` of SRAM at ``resolution`` px (``batch`` 2: CFG's doubled batch)."""
    out = Path(out)
    path = resolve_model_path(src)
    check_output_free(out, overwrite, [path])
    config_file = path / "unet" / "config.json"
    if not config_file.exists():
        raise EdgefusionError(f"{path} is not a pipeline folder with a U-Net (no unet/config.json)")
    vae_config = path / "vae" / "config.json"
    plans = plan_unet(
        json.loads(config_file.read_text()),
        sram_bytes,
        resolution,
        batch,
        act_dtype,
        score_dtype,
        tile_overhead_bytes,
        vae_scale=vae_scale_factor(json.loads(vae_config.read_text()) if vae_config.exists() else None),
    )
    with atomic_output_dir(out, overwrite) as staging:
        shutil.copytree(path, staging, dirs_exist_ok=True)
        record = {
            "sram_bytes": sram_bytes,
            "resolution": resolution,
            "tile_overhead_bytes": tile_overhead_bytes,
            "layers": [plan.to_dict() for plan in plans],
        }
        (staging / "unet" / TILING_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return out


def apply_saved_tiling(path: str | Path, unet):
    """Apply the tiling plan of pipeline folder ``path`` (if it has one) to ``unet``, in place."""
    counts = read_tiling(resolve_model_path(path))
    return unet if counts is None else tile_attention_(unet, counts)
