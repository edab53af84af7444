"""``edgefusion eval`` (the COCO protocol) and ``edgefusion eval stats``: thin wrappers over
:mod:`edgefusion.eval.protocol`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgefusion.eval.clip import DEFAULT_OPEN_CLIP_ARCH
from edgefusion.eval.inception import WEIGHTS_FILE

eval_app = typer.Typer(
    help="Score a model or an image folder on a prompt file: IS, FID, KID, CLIP score, toy metrics.",
    invoke_without_command=True,
)
console = Console()

_INCEPTION_HELP = f"Local pytorch-fid Inception weights ({WEIGHTS_FILE}); needed for IS, FID and KID."
_TOY_HELP = "Toy-world metrics (default: for toy-world models)."
PromptsOption = Annotated[
    Path | None,
    typer.Option(
        help="Prompt file: COCO-30K metadata.csv (file_name,text), CSV/JSONL with a text column, or .txt."
    ),
]
FidReferenceOption = Annotated[
    Path | None,
    typer.Option(help="FID reference: statistics .npz (edgefusion eval stats) or an image folder."),
]
ClipOption = Annotated[
    Path | None,
    typer.Option(help="transformers CLIP folder, or open_clip checkpoint file (see --clip-arch)."),
]
ClipArchOption = Annotated[str, typer.Option(help="open_clip architecture of a checkpoint file.")]


@eval_app.callback()
def eval_command(
    ctx: typer.Context,
    prompts: PromptsOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for images/ (when generating), metrics.json/.md.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Pipeline folder or toy:NAME to generate with.")] = None,
    images: Annotated[
        Path | None, typer.Option(help="Score this image folder instead of generating.")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: 25; LCM models 2).")] = None,
    guidance: Annotated[
        float | None, typer.Option(help="Guidance scale (default: the one the model records, else 7.5).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Image k uses seed + k.")] = 0,
    n: Annotated[int, typer.Option(help="Images per prompt.")] = 1,
    size: Annotated[
        int | None, typer.Option(help="Generation size in pixels (default: the model's).")
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="pndm, ddim, dpm, euler or lcm.")] = None,
    backend: Annotated[str, typer.Option(help="Generation backend: torch or onnxruntime.")] = "torch",
    vae: Annotated[
        str | None, typer.Option(help="Generate with this decoder (a decoder folder or a pipeline's vae/).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per generation and scoring batch.")] = 8,
    resize: Annotated[
        int, typer.Option(help="Resize to this square before scoring (BK-SDM: 256); 0 keeps.")
    ] = 256,
    inception_weights: Annotated[Path | None, typer.Option(help=_INCEPTION_HELP)] = None,
    fid_ref: FidReferenceOption = None,
    kid: Annotated[bool, typer.Option(help="Also compute KID against --fid-ref.")] = False,
    clip: ClipOption = None,
    clip_arch: ClipArchOption = DEFAULT_OPEN_CLIP_ARCH,
    toy: Annotated[bool | None, typer.Option("--toy/--no-toy", help=_TOY_HELP)] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
) -> None:
    """Generate for a prompt file (resumable, seeded) and score as BK-SDM does: 512 px, resized to 256."""
    if ctx.invoked_subcommand is not None:
        return
    from edgefusion.errors import EdgefusionError
    from edgefusion.eval.protocol import EvalConfig, evaluate

    if prompts is None or out is None:
        raise EdgefusionError("edgefusion eval needs --prompts FILE and --out FOLDER")
    config = EvalConfig(
        prompts=prompts,
        out=out,
        model=model,
        images=images,
        steps=steps,
        guidance=guidance,
        seed=seed,
        n=n,
        size=size,
        scheduler=scheduler,
        backend=backend,
        vae=vae,
        batch_size=batch_size,
        resize=resize or None,
        inception_weights=inception_weights,
        fid_reference=fid_ref,
        kid=kid,
        clip=clip,
        clip_arch=clip_arch,
        toy=toy,
        limit=limit,
    )
    evaluate(config)
    console.print((out / "metrics.md").read_text())
    console.print(f"[green]wrote[/] {out / 'metrics.json'} and {out / 'metrics.md'}")


@eval_app.command("stats")
def stats_command(
    folder: Annotated[Path, typer.Argument(help="Reference images (e.g. MS-COCO val2014).")],
    out: Annotated[Path, typer.Option(help="Statistics file to write (.npz with mu, sigma).")],
    inception_weights: Annotated[Path | None, typer.Option(help=_INCEPTION_HELP)] = None,
    resize: Annotated[int, typer.Option(help="Resize to this square first (BK-SDM: 256); 0 keeps.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Images per Inception batch.")] = 50,
    keep_features: Annotated[bool, typer.Option(help="Also store the features (needed for KID).")] = False,
) -> None:
    """Make an FID statistics file of an image folder with the pytorch-fid Inception."""
    from edgefusion.eval.protocol import compute_statistics

    path = compute_statistics(folder, out, inception_weights, resize or None, batch_size, keep_features)
    console.print(f"[green]wrote[/] {path}")
