"""``edgefusion tile plan`` and ``edgefusion tile apply``: thin wrappers over :mod:`edgefusion.tiling`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgefusion.cli_options import Command, config_file, old_spellings

tile_app = typer.Typer(help="Model-level tiling of attention for an NPU's SRAM.", no_args_is_help=True)
console = Console()

_Sram = Annotated[str, typer.Option("--sram", help="On-chip SRAM, e.g. 2MiB, 512KiB, 1048576.")]
_ActDtype = Annotated[str, typer.Option("--act-dtype", help="Q, K, V, A element type (int16, fp16, ...).")]
_ScoreDtype = Annotated[str, typer.Option("--score-dtype", help="S_in and S_out element type.")]
_Overhead = Annotated[
    int, typer.Option("--tile-overhead", help="Modelled DRAM bytes each extra tile costs (DMA set-up).")
]


@tile_app.command("plan")
@config_file("tile plan")
@old_spellings(size="--resolution")
def plan_command(
    sram: _Sram,
    heads: Annotated[int, typer.Option("--heads", help="Attention heads.")] = 8,
    q: Annotated[int, typer.Option("--q", help="Query length (latent pixels).")] = 4096,
    kv: Annotated[int, typer.Option("--kv", help="Key length (77 for cross-attention).")] = 77,
    head_dim: Annotated[int, typer.Option("--head-dim", help="Head dimension.")] = 40,
    batch: Annotated[int, typer.Option("--batch", help="Batch (2 with classifier-free guidance).")] = 1,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Plan every attention layer of this model (sd-v1.4, a folder, toy:NAME)."
        ),
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option("--variant", help="With --model: BK-SDM block removal first (base/small/tiny)."),
    ] = None,
    size: Annotated[int, typer.Option("--size", help="With --model: image side in px.")] = 512,
    act_dtype: _ActDtype = "int16",
    score_dtype: _ScoreDtype = "int16",
    tile_overhead: _Overhead = 4096,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Fewest query tiles whose working set fits SRAM, and the modelled DRAM bytes with and without."""
    from edgefusion.pipeline.configs import vae_scale_factor
    from edgefusion.tiling.layers import plan_unet
    from edgefusion.tiling.planner import AttentionShape, parse_bytes, plan_tiles

    sram_bytes = parse_bytes(sram)
    if model is None:
        shape = AttentionShape(heads, q, kv, head_dim, batch, act_dtype, score_dtype)
        result = plan_tiles(shape, sram_bytes, tile_overhead).to_dict()
        if as_json:
            typer.echo(json.dumps(result))
            return
        rows = [("attention", shape, result)]
    else:
        from edgefusion.arch.removal import plan_removal
        from edgefusion.pipeline.sources import resolve_source

        source = resolve_source(model)
        config = source.unet_config
        if variant:
            config = plan_removal(config, variant).student_config
        vae_scale = vae_scale_factor(source.configs.get("vae"))
        plans = plan_unet(
            config, sram_bytes, size, batch, act_dtype, score_dtype, tile_overhead, vae_scale=vae_scale
        )
        if as_json:
            typer.echo(json.dumps([p.to_dict() for p in plans]))
            return
        rows = [(p.name.removesuffix(".processor"), p.shape, p.plan.to_dict()) for p in plans]
    table = Table(title=f"attention tiling for {sram_bytes:,} bytes of SRAM")
    for column in (
        "layer",
        "heads x q x kv x d",
        "tiles",
        "SRAM used",
        "DRAM untiled",
        "DRAM tiled",
        "saved",
    ):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for name, shape, r in rows:
        table.add_row(
            name,
            f"{shape.heads}x{shape.q_len}x{shape.kv_len}x{shape.head_dim}",
            str(r["num_tiles"]),
            f"{r['sram_utilization']:.0%}",
            f"{r['dram_bytes_untiled'] / 2**20:,.2f} MiB",
            f"{r['dram_bytes_tiled'] / 2**20:,.2f} MiB",
            f"{r['dram_reduction']:.1%}",
        )
    console.print(table)


@tile_app.command("apply", cls=Command)
@config_file("tile apply")
@old_spellings(model="SRC", size="--resolution")
def apply_command(
    model: Annotated[str, typer.Option("--model", help="Pipeline folder or shipped toy name.")],
    out: Annotated[Path, typer.Option("--out", help="Output pipeline folder with unet/tiling.json.")],
    sram: _Sram,
    size: Annotated[int, typer.Option("--size", help="Image side in px the plan is for.")] = 512,
    batch: Annotated[int, typer.Option("--batch", help="Batch the plan is for (2: CFG).")] = 2,
    act_dtype: _ActDtype = "int16",
    score_dtype: _ScoreDtype = "int16",
    tile_overhead: _Overhead = 4096,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it already exists.")] = False,
) -> None:
    """Write a copy of --model whose attention layers each carry a planned tile count."""
    from edgefusion.tiling.apply import tile_pipeline
    from edgefusion.tiling.layers import read_tiling
    from edgefusion.tiling.planner import parse_bytes

    tile_pipeline(
        model,
        out,
        parse_bytes(sram),
        size,
        batch,
        act_dtype,
        score_dtype,
        tile_overhead,
        overwrite=overwrite,
    )
    counts = read_tiling(out) or {}
    console.print(
        f"wrote [bold]{out}[/]: {len(counts)} attention layers, tiles {sorted(set(counts.values()))}"
    )
