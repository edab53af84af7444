"""TiledAttnProcessor: tiled attention equals untiled attention; per-layer plans; `tile apply`."""

import json

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from micro_models import random_unet
from typer.testing import CliRunner

from edgefusion.cli import _register_subcommands, app
from edgefusion.errors import EdgefusionError
from edgefusion.tiling.layers import read_tiling, tile_attention_
from edgefusion.tiling.processor import TiledAttnProcessor


def _run(unet):
    g = torch.Generator().manual_seed(0)
    args = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([500, 20]), torch.randn(2, 7, 32, generator=g)
    with torch.no_grad():
        return unet(*args).sample


@pytest.mark.parametrize("num_tiles", [1, 3, 7, 64])
def test_tiled_equals_untiled(num_tiles):
    unet = random_unet()
    unet.set_attn_processor(AttnProcessor2_0())
    expected = _run(unet)
    tile_attention_(unet, num_tiles)
    assert all(isinstance(p, TiledAttnProcessor) for p in unet.attn_processors.values())
    assert (_run(unet) - expected).abs().max() <= 1e-5


def test_per_layer_counts_and_unknown_layers():
    unet = random_unet()
    names = list(unet.attn_processors)
    tile_attention_(unet, {names[0]: 4})
    processors = unet.attn_processors
    assert processors[names[0]].num_tiles == 4
    assert not isinstance(processors[names[1]], TiledAttnProcessor)
    with pytest.raises(EdgefusionError, match="does not have"):
        tile_attention_(unet, {"down_blocks.9.attn1.processor": 2})


def test_cli_apply_writes_a_count_per_attention_layer(micro_pipeline, tmp_path):
    _register_subcommands()
    out = tmp_path / "tiled"
    result = CliRunner().invoke(
        app,
        ["tile", "apply", str(micro_pipeline), "--out", str(out), "--sram", "16KiB", "--resolution", "16"],
    )
    assert result.exit_code == 0, result.output
    counts = read_tiling(out)
    assert set(counts) == set(random_unet().attn_processors)
    assert max(counts.values()) > 1  # 16 KiB forces every micro attention into tiles
    record = json.loads((out / "unet" / "tiling.json").read_text())
    assert all(layer["working_set_bytes"] <= 16 * 1024 for layer in record["layers"])
