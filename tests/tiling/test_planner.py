"""The SRAM tile planner and the DRAM-traffic model of attention."""

import json

import pytest
from typer.testing import CliRunner

from edgefusion.arch.removal import plan_removal
from edgefusion.cli import _register_subcommands, app
from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.configs import builtin_config
from edgefusion.tiling.layers import plan_unet
from edgefusion.tiling.planner import (
    AttentionShape,
    parse_bytes,
    plan_tiles,
    traffic_bytes,
    working_set_bytes,
)

SELF_64 = AttentionShape(heads=8, q_len=4096, kv_len=4096, head_dim=40)  # SD-v1 down_blocks.0 attn1 at 512 px


def test_parse_bytes():
    assert parse_bytes("2MiB") == 2 * 1024**2
    assert parse_bytes("512kib") == 512 * 1024
    assert parse_bytes("1.5MB") == 1_500_000
    assert parse_bytes("4096") == 4096
    with pytest.raises(EdgefusionError, match="size"):
        parse_bytes("two megs")


@pytest.mark.parametrize("sram", ["768KiB", "2MiB", "8MiB"])
def test_plan_is_the_fewest_tiles_that_fit(sram):
    sram_bytes = parse_bytes(sram)
    plan = plan_tiles(SELF_64, sram_bytes)
    assert plan.working_set_bytes <= sram_bytes
    assert plan.rows_per_tile * plan.num_tiles >= SELF_64.q_len
    fewer = -(-SELF_64.q_len // (plan.num_tiles - 1))  # rows per tile with one tile less
    assert working_set_bytes(SELF_64, fewer) > sram_bytes


def test_traffic_model_counts_the_softmax_spills():
    untiled = traffic_bytes(SELF_64, None)
    scores = 8 * 4096 * 4096 * 2
    assert untiled["S_in"] == untiled["S_out"] == 2 * scores  # stored, then loaded back
    assert untiled["Q"] == untiled["A"] == 8 * 4096 * 40 * 2
    tiled = traffic_bytes(SELF_64, 10, tile_overhead_bytes=100)
    assert tiled["S_in"] == tiled["S_out"] == 0
    assert tiled["tile_overhead"] == 10 * 8 * 100
    assert tiled["total"] < traffic_bytes(SELF_64, 20, tile_overhead_bytes=100)["total"]  # tiles are not free


def test_sram_smaller_than_one_row_is_an_error():
    with pytest.raises(EdgefusionError, match="smaller than one query row"):
        plan_tiles(SELF_64, parse_bytes("512KiB"))


def test_cli_plan_json():
    _register_subcommands()
    result = CliRunner().invoke(
        app,
        [
            "tile",
            "plan",
            "--sram",
            "2MiB",
            "--heads",
            "8",
            "--q",
            "4096",
            "--kv",
            "77",
            "--head-dim",
            "40",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["num_tiles"] == 1
    assert plan["dram_bytes_untiled"] > plan["dram_bytes_tiled"] > 0


def test_every_attention_layer_of_sd_v1_and_bk_tiny_is_planned():
    sd = builtin_config("sd-v1", "unet")
    sd_plans = plan_unet(sd, parse_bytes("2MiB"))
    assert len(sd_plans) == 32  # 16 transformer blocks, self- and cross-attention each
    first = sd_plans[0]
    assert (first.shape.q_len, first.shape.kv_len, first.shape.heads, first.shape.head_dim) == (
        4096,
        4096,
        8,
        40,
    )
    assert all(p.plan.num_tiles >= 1 for p in sd_plans)
    tiny_plans = plan_unet(plan_removal(sd, "tiny").student_config, parse_bytes("2MiB"))
    assert len(tiny_plans) == 18  # 3 down x 1 + 3 up x 2 transformer blocks, 2 attentions each
    assert {p.shape.q_len for p in tiny_plans} == {4096, 1024, 256}
