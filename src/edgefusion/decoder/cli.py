"""``edgefusion decoder distill`` and ``edgefusion decoder compare``: thin wrappers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgefusion.cli_options import old_spellings

decoder_app = typer.Typer(
    help="Tiny image decoders (TAESD layout): distil one from a pipeline's VAE, measure it.",
    no_args_is_help=True,
)
console = Console()


@decoder_app.command("distill")
def distill_command(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="KEY=VALUE settings over the config file, e.g. train.steps=200 channels=32."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Pipeline folder or toy:NAME whose VAE decoder is distilled.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="The pipeline folder to write, with the tiny decoder.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML/JSON file of DecoderDistillConfig fields.")
    ] = None,
) -> None:
    """Train a tiny decoder (diffusers' AutoencoderTiny, TAESD's layout) to reproduce a pipeline's
    VAE decoder; writes the pipeline with it as its vae (its encoder is left untrained).

    Re-running the same command resumes from the newest checkpoint in run_dir.

    Example: edgefusion decoder distill --config configs/toy/decoder.yaml train.steps=100
    """
    from edgefusion.decoder.distill import distill_decoder, load_decoder_config

    # Quoted, so that a name YAML would read as another type (``on``, ``1e3``) stays a path.
    options = [f"{key}={json.dumps(str(value))}" for key, value in (("model", model), ("out", out)) if value]
    report = distill_decoder(load_decoder_config(config, [*options, *(overrides or [])]))
    losses = ", ".join(f"{name} {value:.4g}" for name, value in report.last_losses.items())
    last = f" (last: {losses})" if losses else " (nothing left to train: the output was written)"
    console.print(f"[green]distilled[/] {report.steps} steps in {report.seconds:.0f} s{last}")
    skipped = ", ".join(f"{count} {reason}" for reason, count in report.skipped.items())
    console.print(f"skipped samples: {skipped}; run folder {report.run_dir}; wrote [bold]{report.out}[/]")


@decoder_app.command("compare")
@old_spellings(num_prompts="--limit")
def compare_command(
    vae: Annotated[str, typer.Option(help="The decoder to measure: a decoder or pipeline folder.")],
    model: Annotated[str, typer.Option(help="Pipeline folder or toy:NAME whose VAE is the reference.")] = (
        "toy:edgefusion"
    ),
    data: Annotated[
        Path | None, typer.Option(help="Dataset whose images' latents both decoders decode.")
    ] = None,
    latents: Annotated[int, typer.Option(help="How many dataset images to encode and decode.")] = 64,
    prompts: Annotated[
        Path | None, typer.Option(help="Prompt file (default: the evaluator's, e.g. the toy eval prompts).")
    ] = None,
    num_prompts: Annotated[int, typer.Option(help="Generate for the first N prompts.")] = 50,
    steps: Annotated[
        int | None, typer.Option(help="Sampling steps (default: 2 for LCM models, else 25).")
    ] = None,
    guidance: Annotated[
        float | None, typer.Option(help="Guidance scale (default: the one the model records).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Image k uses seed + k.")] = 0,
) -> None:
    """Print JSON: PSNR of the decoder against the model's VAE on the same latents and end to end
    (same prompts and seeds), parameters, and the median time of one decode of each."""
    from edgefusion.decoder.compare import compare_decoders
    from edgefusion.quant.quantize import ReportSettings

    settings = ReportSettings(
        num_prompts=num_prompts, steps=steps, guidance=guidance, seed=seed, prompts_file=prompts
    )
    typer.echo(json.dumps(compare_decoders(model, vae, settings, data, latents), indent=2))
