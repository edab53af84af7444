"""``edgefusion toy ...``: the embedded shapes world (data, training, evaluation, shipped models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgefusion.toy.dataset import data_command

toy_app = typer.Typer(help="The toy shapes world: data, tiny models, exact metrics.", no_args_is_help=True)
toy_app.command("data")(data_command)
console = Console()


@toy_app.command("path")
def path_command(name: Annotated[str, typer.Argument(help="Shipped toy model, e.g. teacher.")]) -> None:
    """Print the folder of a shipped toy model (usable wherever a model folder is accepted)."""
    from edgefusion.toy.registry import PREFIX, shipped_path

    print(shipped_path(name.removeprefix(PREFIX)))


@toy_app.command("train")
def train_command(
    out: Annotated[Path, typer.Option(help="Where the trained teacher/ and evaluator/ folders go.")] = Path(
        "runs/toy/out"
    ),
    work: Annotated[Path, typer.Option(help="Checkpoints and logs; re-running resumes from here.")] = Path(
        "runs/toy/work"
    ),
    config: Annotated[
        Path | None, typer.Option(help="JSON/YAML with ToyTrainConfig fields to override.")
    ] = None,
) -> None:
    """Train the toy world from scratch: classifier, toy CLIP, VAE, teacher U-Net (resumable).

    The classifier, toy CLIP and VAE defaults reproduce the shipped ones; the teacher stage runs
    `edgefusion train` on them. To retrain only the teacher on the shipped encoders, run
    `edgefusion train --config configs/toy/teacher.yaml` (docs/results/teacher.md).
    """
    from edgefusion.errors import EdgefusionError
    from edgefusion.inputs import read_config_mapping
    from edgefusion.toy.train import ToyTrainConfig, train_toy_world

    overrides = read_config_mapping(config, "toy training config") if config is not None else {}
    try:
        cfg = ToyTrainConfig.from_dict(overrides)
    except TypeError as err:
        raise EdgefusionError(f"bad toy training config {config}: {err}") from err
    timings = train_toy_world(cfg, work, out)
    console.print(f"[green]trained[/] -> {out} ({timings['total']:.0f} s)")


@toy_app.command("eval")
def eval_command(
    model: Annotated[
        str, typer.Option(help="Pipeline folder or shipped name (toy:teacher).")
    ] = "toy:teacher",
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="Text file, one prompt per line, or a shipped set: eval (the default, for reported "
            "numbers) or val (200 other prompts, for choosing checkpoints and settings)."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Sampling steps (default: 2 for LCM models, else 25).")
    ] = None,
    guidance: Annotated[
        float | None, typer.Option(help="Guidance scale (default: the one the model records, else 7.5).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Image i uses seed + i.")] = 0,
    scheduler: Annotated[
        str | None, typer.Option(help="pndm, ddim, dpm, euler, lcm (default: the model's).")
    ] = None,
    backend: Annotated[str, typer.Option(help="torch, or onnxruntime for an export folder.")] = "torch",
    vae: Annotated[
        str | None, typer.Option(help="Decode with this decoder (a decoder folder or a pipeline's vae/).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Score only the first N prompts (N >= 1).")] = None,
    renders: Annotated[
        bool, typer.Option(help="Score renders of the prompts instead (the ceiling).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Generate for the prompts and score: attribute accuracy, toy CLIP score, FID_toy."""
    from edgefusion.toy.metrics import ToyEvaluator, evaluate_toy_model, render_prompts, score_images
    from edgefusion.toy.prompts import EVAL_PROMPTS_PATH, load_prompts

    texts = load_prompts(prompts or EVAL_PROMPTS_PATH, limit)
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
