"""``edgefusion export``: a thin wrapper over :func:`edgefusion.export.onnx.export_pipeline` (ONNX)
and :func:`edgefusion.export.openvino_ir.export_openvino` (OpenVINO IR, int8 activations)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgefusion.cli_options import Command, config_file, old_spellings, prompts_or_count
from edgefusion.limits import check_limit
from edgefusion.quant.cli import ReportGuidance, ReportPrompts, ReportSteps, report_num_prompts

console = Console()


@config_file("export")
@old_spellings(model="SRC")
def export_command(
    model: Annotated[
        str, typer.Option("--model", help="Pipeline folder (fp32, possibly tiled) or shipped toy name.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder of the ONNX export.")],
    format: Annotated[str, typer.Option("--format", help="onnx, or openvino (OpenVINO IR).")] = "onnx",
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="onnx: fp32, fp16 or w8a16 (int8 QDQ U-Net weights); openvino: fp32 or w8a8 (int8 U-Net "
            "weights and activations, calibrated).",
        ),
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
    calibration_prompts: Annotated[
        str,
        typer.Option(
            "--calibration-prompts",
            help="w8a8: prompt file or prompt set whose U-Net inputs set the activation scales.",
        ),
    ] = "val",
    num_calibration_prompts: Annotated[
        int, typer.Option("--num-calibration-prompts", help="w8a8: calibrate on the first N of them.")
    ] = 32,
) -> None:
    """Export text encoder, U-Net and VAE decoder to ONNX (onnxruntime, NPU toolchains) or to
    OpenVINO IR (the openvino backend; w8a8 runs the U-Net's matmuls in int8)."""
    from edgefusion.errors import EdgefusionError
    from edgefusion.export.onnx import export_pipeline
    from edgefusion.quant.quantize import ReportSettings

    if format not in ("onnx", "openvino"):
        raise EdgefusionError(f"unknown export format {format!r}; choose onnx or openvino")
    # The report settings are checked before the export, not after it.
    prompts_file, num_prompts = prompts_or_count(prompts, num_prompts)
    settings = ReportSettings(
        num_prompts=num_prompts, steps=steps, guidance=guidance, prompts_file=prompts_file
    )
    if format == "openvino":
        from edgefusion.eval.prompts import read_prompts
        from edgefusion.export.openvino_ir import export_openvino

        check_limit(num_calibration_prompts, "--num-calibration-prompts")
        calibration = None
        if precision == "w8a8":
            calibration = [row.text for row in read_prompts(calibration_prompts, num_calibration_prompts)]
        export_openvino(model, out, precision, size, overwrite, vae, calibration)
    else:
        export_pipeline(model, out, precision, height=size, width=size, overwrite=overwrite, vae=vae)
    console.print(f"wrote [bold]{out}[/] (text_encoder, unet, vae_decoder; {format}, {precision})")
    if report:
        from edgefusion.export.report import export_report

        typer.echo(json.dumps(export_report(model, out, settings, vae=vae)))


def register(app: typer.Typer) -> None:
    """Add ``export`` to the main ``edgefusion`` app."""
    app.command("export", cls=Command)(export_command)
