"""``edgefusion quantize``: a thin wrapper over :mod:`edgefusion.quant.quantize`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgefusion.cli_options import Command, config_file, old_spellings, prompts_or_count

console = Console()

# Report settings shared by `quantize --report` and `export --report`: None is the model kind's.
ReportSteps = Annotated[
    int | None,
    typer.Option(
        "--steps", help="Sampling steps of the report's images (default: 2 for LCM models, else 25)."
    ),
]
ReportGuidance = Annotated[
    float | None,
    typer.Option("--guidance", help="Guidance scale of the report (default: the one the model records)."),
]
ReportPrompts = Annotated[
    str | None,
    typer.Option(
        "--prompts", help="Prompt file, one prompt a line, or a prompt set (default: the toy eval prompts)."
    ),
]


def report_num_prompts(default: int) -> object:
    """``--num-prompts`` of a report: how many of its prompts it generates for."""
    return typer.Option("--num-prompts", help=f"Report on the first N prompts (default {default}).")


@config_file("quantize")
@old_spellings(model="SRC", prompts="--prompts-file")
def quantize_command(
    model: Annotated[
        str, typer.Option("--model", help="Pipeline folder or shipped toy name (toy:bk-tiny-adv).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the W8A16 pipeline.")],
    activation_dtype: Annotated[
        str, typer.Option("--activation-dtype", help="16-bit activations: float16 or bfloat16.")
    ] = "float16",
    keep: Annotated[
        str,
        typer.Option(
            "--keep-16bit", help="Comma-separated layer names left in 16 bits ('' = int8 everywhere)."
        ),
    ] = "conv_out",
    report: Annotated[
        bool, typer.Option("--report", help="Compare with the fp32 model: size, PSNR, toy metrics.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    prompts: ReportPrompts = None,
    num_prompts: Annotated[int, report_num_prompts(200)] = 200,
    steps: ReportSteps = None,
    guidance: ReportGuidance = None,
    seed: Annotated[int, typer.Option("--seed", help="Image i uses seed + i.")] = 0,
    calibrate: Annotated[
        int, typer.Option("--calibrate", help="Record activation ranges over this many prompts (0: off).")
    ] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it already exists.")] = False,
) -> None:
    """Quantize a pipeline's U-Net to W8A16 (int8 per-channel weights); text encoder and VAE to fp16.

    Calibration and --report use the first --num-prompts of --prompts."""
    from edgefusion.quant.quantize import ReportSettings, quantization_report, quantize_pipeline
    from edgefusion.quant.w8a16 import W8A16Config

    prompts_file, num_prompts = prompts_or_count(prompts, num_prompts)
    settings = ReportSettings(
        num_prompts=num_prompts, steps=steps, guidance=guidance, seed=seed, prompts_file=prompts_file
    )
    calibration = settings.prompts()[:calibrate] if calibrate else None
    quantize_pipeline(
        model,
        out,
        W8A16Config(activation_dtype=activation_dtype, skip=tuple(n for n in keep.split(",") if n)),
        overwrite=overwrite,
        calibration_prompts=calibration,
        calibration_steps=steps,
        calibration_guidance=guidance,
    )
    if not report:
        console.print(f"wrote [bold]{out}[/]")
        return
    result = quantization_report(model, out, settings)
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"W8A16 {model} -> {out} ({result['settings']['prompts']} prompts, same seeds)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("U-Net bytes, fp32", f"{result['unet_bytes_fp32']:,}")
    table.add_row(
        "U-Net bytes, W8A16", f"{result['unet_bytes_quantized']:,} ({result['unet_size_ratio']:.3f}x)"
    )
    table.add_row("PSNR vs fp32", f"{result['psnr_db']:.2f} dB")
    for name, delta in result.get("toy_delta", {}).items():
        table.add_row(
            f"toy {name}", f"{result['toy_fp32'][name]:.4f} -> {result['toy_w8a16'][name]:.4f} ({delta:+.4f})"
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``quantize`` to the main ``edgefusion`` app."""
    app.command("quantize", cls=Command)(quantize_command)
