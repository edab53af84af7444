"""``edgefusion export``: a thin wrapper over :func:`edgefusion.export.onnx.export_pipeline`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgefusion.cli_options import Command, config_file, old_spellings, prompts_or_count
from edgefusion.quant.cli import ReportGuidance, ReportPrompts, ReportSteps, report_num_prompts

console = Console()


@config_file("export")
@old_spellings(model="SRC")
def export_command(
    model: Annotated[
        str, typer.Option("--model", help="Pipeline folder (fp32, possibly tiled) or shipped toy name.")
    ],
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
    prompts: ReportPrompts = None,
    num_prompts: Annotated[int, report_num_prompts(20)] = 20,
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
    prompts_file, num_prompts = prompts_or_count(prompts, num_prompts)
    settings = ReportSettings(
        num_prompts=num_prompts, steps=steps, guidance=guidance, prompts_file=prompts_file
    )
    export_pipeline(model, out, precision, height=size, width=size, overwrite=overwrite, vae=vae)
    console.print(f"wrote [bold]{out}[/] (text_encoder, unet, vae_decoder; {precision})")
    if report:
        from edgefusion.export.report import export_report

        typer.echo(json.dumps(export_report(model, out, settings, vae=vae)))


def register(app: typer.Typer) -> None:
    """Add ``export`` to the main ``edgefusion`` app."""
    app.command("export", cls=Command)(export_command)
