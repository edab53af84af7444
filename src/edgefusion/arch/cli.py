"""``edgefusion compress`` and ``edgefusion info``: thin wrappers over :mod:`edgefusion.arch`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgefusion.arch.removal import VARIANTS
from edgefusion.cli_options import Command, config_file, old_spellings
from edgefusion.pipeline.configs import BUILTIN_MODELS

_SOURCES_HELP = (
    f"built-in model ({', '.join(BUILTIN_MODELS)}), diffusers pipeline folder, U-Net folder, "
    "config folder (config.json only), or original-layout .safetensors checkpoint"
)
_COMPONENT_LABELS = {"text_encoder": "text encoder", "unet": "U-Net", "vae_decoder": "VAE decoder"}

console = Console()


@config_file("compress")
@old_spellings(model="--teacher")
def compress_command(
    model: Annotated[str, typer.Option("--model", help=f"Teacher to compress: {_SOURCES_HELP}.")],
    variant: Annotated[str, typer.Option("--variant", help=f"BK-SDM student: {', '.join(VARIANTS)}.")],
    out: Annotated[
        Path, typer.Option("--out", help="Output folder: a pipeline for a pipeline teacher, else a U-Net.")
    ],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it already exists.")] = False,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the random initialization of config-only teachers.")
    ] = 0,
    unet_config: Annotated[
        str | None,
        typer.Option(
            "--unet-config",
            help="U-Net config (built-in name or folder) of a .safetensors checkpoint that is not SD-v1/v2.",
        ),
    ] = None,
) -> None:
    """Remove U-Net blocks as BK-SDM does and initialize the student from the teacher's weights."""
    from edgefusion.arch.compression import compress_path  # torch and diffusers load only when run

    report = compress_path(model, variant, out, overwrite=overwrite, seed=seed, unet_config=unet_config)
    ratio = report.student_params / report.teacher_params
    table = Table(title=f"BK-SDM-{variant.capitalize()} from {model}")
    table.add_column("U-Net")
    table.add_column("parameters", justify="right")
    table.add_row("teacher", f"{report.teacher_params:,}")
    table.add_row("student", f"{report.student_params:,} ({ratio:.1%})")
    console.print(table)
    origin = "copied from the teacher" if report.initialized_from_teacher else f"random (seed {seed})"
    console.print(f"student weights: {origin}; wrote [bold]{report.out}[/]")


@old_spellings(model="SRC", size="--resolution")
def info_command(
    model: Annotated[str, typer.Option("--model", help=f"Model to describe: {_SOURCES_HELP}.")],
    variant: Annotated[
        str | None,
        typer.Option("--variant", help=f"Apply BK-SDM block removal first: {', '.join(VARIANTS)}."),
    ] = None,
    size: Annotated[
        int,
        typer.Option("--size", help="Image side in pixels; the latent is this over the VAE scale factor."),
    ] = 512,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Parameters and MACs per component for one U-Net call at --size pixels, batch 1.

    MACs: convolution and linear layers (BK-SDM's convention). Attention MACs: Q·K^T and softmax·V.
    """
    from edgefusion.arch.counting import count_model  # torch and diffusers load only when run

    counts = count_model(model, variant=variant, resolution=size)
    if as_json:
        typer.echo(json.dumps(counts.to_dict()))
        return
    title = f"{model}{f' -> BK-SDM-{variant.capitalize()}' if variant else ''}"
    table = Table(title=f"{title} at {size} px (latent {counts.latent_size}x{counts.latent_size})")
    for column in ("component", "parameters", "MACs", "attention MACs"):
        table.add_column(column, justify="left" if column == "component" else "right")
    for name, count in counts.components.items():
        table.add_row(
            _COMPONENT_LABELS.get(name, name),
            f"{count.params / 1e6:,.1f}M",
            f"{count.macs / 1e9:,.1f}G",
            f"{count.attention_macs / 1e9:,.1f}G",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``compress`` and ``info`` to the main ``edgefusion`` app."""
    app.command("compress")(compress_command)
    app.command("info", cls=Command)(info_command)
