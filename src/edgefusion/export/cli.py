"""``edgefusion export``: a thin wrapper over :func:`edgefusion.export.onnx.export_pipeline`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgefusion.quant.cli import ReportGuidance, ReportSteps

console = Console()


def export_command(
    src: Annotated[str, typer.Argument(help="Pipeline folder (fp32, possibly tiled) or shipped toy name.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder of the ONNX export.")],
    format: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    precision: Annotated[
        str, typer.Option("--precision", help="fp32, fp16 or w8a16 (int8 QDQ U-Net).")
    ] = "fp32",
    size: Annotated[
        int | None, typer.Option("--size", help="Image side the graphs are traced at (default: the model's).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it already exists.")] = False,
    vae: Annotated[
        str | None,
        typer.Option("--vae", help="Export this decoder as vae_decoder (decoder folder or pipeline's vae/)."),
    ] = None,
    report: Annotated[
        bool, typer.Option("--report", help="Print JSON: PSNR of onnxruntime vs torch fp32 images, sizes.")
    ] = False,
    prompts: Annotated[int, typer.Option("--prompts", help="Report on the first N toy eval prompts.")] = 20,
    steps: ReportSteps = None,
    guidance: ReportGuidance = None,
) -> None:
    """Export text encoder, U-Net and VAE decoder to ONNX, for onnxruntime and NPU toolchains."""
    from edgefusion.errors import EdgefusionError
    from edgefusion.export.onnx import export_pipeline
    from edgefusion.quant.quantize import ReportSettings

    if format != "onnx":
        raise EdgefusionError(f"unknown export format {format!r}; only onnx is supported")
    # The report settings are checked before the export, not after it.
    settings = ReportSettings(num_prompts=prompts, steps=steps, guidance=guidance)
    export_pipeline(src, out, precision, height=size, width=size, overwrite=overwrite, vae=vae)
    console.print(f"wrote [bold]{out}[/] (text_encoder, unet, vae_decoder; {precision})")
    if report:
        from edgefusion.export.report import export_report

        typer.echo(json.dumps(export_report(src, out, settings, vae=vae)))


def register(app: typer.Typer) -> None:
    """Add ``export`` to the main ``edgefusion`` app."""
    app.command("export")(export_command)
