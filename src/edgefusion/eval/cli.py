"""``edgefusion eval`` (the COCO protocol, and without ``--out`` the toy world's in-memory
evaluation that ``edgefusion toy eval`` also runs) and ``edgefusion eval stats``: thin wrappers
over :mod:`edgefusion.eval.protocol` and :mod:`edgefusion.toy.metrics`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgefusion.cli_options import SettingsGroup, config_file, old_spellings
from edgefusion.eval.clip import DEFAULT_OPEN_CLIP_ARCH
from edgefusion.eval.inception import WEIGHTS_FILE

eval_app = typer.Typer(
    help="Score a model or an image folder on a prompt file: IS, FID, KID, CLIP score, toy metrics.",
    invoke_without_command=True,
    cls=SettingsGroup,
)
console = Console()

_INCEPTION_HELP = f"Local pytorch-fid Inception weights ({WEIGHTS_FILE}); needed for IS, FID and KID."
_TOY_HELP = "Toy-world metrics (default: for toy-world models)."
PromptsOption = Annotated[
    Path | None,
    typer.Option(
        help="Prompt file: COCO-30K metadata.csv (file_name,text), CSV/JSONL with a text column, or .txt; "
        "or a prompt set: eval (the toy eval prompts, for reported numbers) or val (200 others, for "
        "choosing checkpoints and settings)."
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option(help="Folder for images/ (when generating), metrics.json/.md; without it: toy metrics."),
]
NumPromptsOption = Annotated[int | None, typer.Option(help="Use only the first N prompts (N >= 1).")]
RendersOption = Annotated[
    bool, typer.Option(help="Without --out: score renders of the prompts instead (the ceiling).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Without --out: print one JSON object.")]
# The generation settings `edgefusion eval` shares with its `toy eval` alias.
StepsOption = Annotated[int | None, typer.Option(help="Sampling steps (default: 2 for LCM models, else 25).")]
GuidanceOption = Annotated[
    float | None, typer.Option(help="Guidance scale (default: the one the model records, else 7.5).")
]
SeedOption = Annotated[int, typer.Option(help="Image k uses seed + k.")]
SchedulerOption = Annotated[
    str | None, typer.Option(help="pndm, ddim, dpm, euler or lcm (default: the model's).")
]
BackendOption = Annotated[str, typer.Option(help="torch, or onnxruntime for an export folder.")]
VaeOption = Annotated[
    str | None, typer.Option(help="Decode with this decoder (a decoder folder or a pipeline's vae/).")
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
@config_file("eval")
@old_spellings(num_prompts="--limit")
def eval_command(
    ctx: typer.Context,
    prompts: PromptsOption = None,
    out: OutOption = None,
    model: Annotated[str | None, typer.Option(help="Pipeline folder or toy:NAME to generate with.")] = None,
    images: Annotated[
        Path | None, typer.Option(help="Score this image folder instead of generating.")
    ] = None,
    steps: StepsOption = None,
    guidance: GuidanceOption = None,
    seed: SeedOption = 0,
    n: Annotated[int, typer.Option(help="Images per prompt.")] = 1,
    size: Annotated[
        int | None, typer.Option(help="Generation size in pixels (default: the model's).")
    ] = None,
    scheduler: SchedulerOption = None,
    backend: BackendOption = "torch",
    vae: VaeOption = None,
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
    num_prompts: NumPromptsOption = None,
    renders: RendersOption = False,
    as_json: JsonOption = False,
) -> None:
    """Generate for a prompt file (resumable, seeded) and score as BK-SDM does: 512 px, resized to 256.

    Without --out, the toy world's evaluation: generate in memory with a toy-world model (default
    toy:teacher) for --prompts (default: the eval set) and print attribute accuracy, toy CLIP
    score and FID_toy (`edgefusion toy eval` is this)."""
    if ctx.invoked_subcommand is not None:
        return
    from edgefusion.errors import EdgefusionError
    from edgefusion.eval.protocol import EvalConfig, evaluate

    if out is None:
        if images is not None or fid_ref is not None or clip is not None or toy is False:
            raise EdgefusionError(
                "edgefusion eval needs --out FOLDER for --images, --fid-ref, --clip, --no-toy"
            )
        toy_evaluation(
            model or "toy:teacher", prompts, steps, guidance, seed, scheduler, backend, vae,
            num_prompts, renders, as_json,
        )  # fmt: skip
        return
    if prompts is None or renders:
        raise EdgefusionError("edgefusion eval --out FOLDER needs --prompts FILE (and scores no --renders)")
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
        limit=num_prompts,
    )
    evaluate(config)
    console.print((out / "metrics.md").read_text())
    console.print(f"[green]wrote[/] {out / 'metrics.json'} and {out / 'metrics.md'}")


def toy_evaluation(
    model: str,
    prompts: Path | None,
    steps: int | None,
    guidance: float | None,
    seed: int,
    scheduler: str | None,
    backend: str,
    vae: str | None,
    num_prompts: int | None,
    renders: bool,
    as_json: bool,
) -> None:
    """Generate for the prompts and print the toy world's scores: attribute accuracy, toy CLIP
    score, FID_toy; with ``renders``, of renders of the prompts instead (the ceiling)."""
    from edgefusion.toy.metrics import ToyEvaluator, evaluate_toy_model, render_prompts, score_images
    from edgefusion.toy.prompts import load_prompts

    texts = load_prompts(prompts or "eval", num_prompts)
    if renders:
        result = score_images(render_prompts(texts, seed=seed + 1), texts, ToyEvaluator())
        result["settings"] = {"model": "renders", "seed": seed}
    else:
        result = evaluate_toy_model(
            model,
            texts,
            steps=steps,
            guidance=guidance,
            seed=seed,
            scheduler=scheduler,
            backend=backend,
            vae=vae,
        )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"{result['settings']['model']}: {result['n']} prompts")
    table.add_column("group")
    table.add_column("n", justify="right")
    table.add_column("all-correct", justify="right")
    for group in ("one_object", "two_object", "held_out"):
        g = result[group]
        table.add_row(group, str(g["n"]), f"{g.get('accuracy_all', float('nan')):.3f}")
    table.add_row("all", str(result["n"]), f"{result['accuracy_all']:.3f}")
    console.print(table)
    console.print(f"CLIP score {result['clip_score']:.4f}   FID_toy {result['fid']:.2f}")


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
