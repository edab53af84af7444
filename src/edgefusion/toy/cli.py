"""``edgefusion toy ...``: the embedded shapes world (data, training, evaluation, shipped models)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgefusion.cli_options import old_spellings
from edgefusion.eval.cli import (
    BackendOption,
    GuidanceOption,
    JsonOption,
    NumPromptsOption,
    PromptsOption,
    RendersOption,
    SchedulerOption,
    SeedOption,
    StepsOption,
    VaeOption,
    toy_evaluation,
)
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
    from edgefusion.config import load_config
    from edgefusion.toy.train import ToyTrainConfig, train_toy_world

    timings = train_toy_world(load_config(ToyTrainConfig, config, what="toy training setting"), work, out)
    console.print(f"[green]trained[/] -> {out} ({timings['total']:.0f} s)")


@toy_app.command("eval")
@old_spellings(num_prompts="--limit")
def eval_command(
    model: Annotated[
        str, typer.Option(help="Pipeline folder or shipped name (toy:teacher).")
    ] = "toy:teacher",
    prompts: PromptsOption = None,
    steps: StepsOption = None,
    guidance: GuidanceOption = None,
    seed: SeedOption = 0,
    scheduler: SchedulerOption = None,
    backend: BackendOption = "torch",
    vae: VaeOption = None,
    num_prompts: NumPromptsOption = None,
    renders: RendersOption = False,
    as_json: JsonOption = False,
) -> None:
    """Generate for the prompts and score: attribute accuracy, toy CLIP score, FID_toy (the same
    as `edgefusion eval` without --out)."""
    toy_evaluation(
        model, prompts, steps, guidance, seed, scheduler, backend, vae, num_prompts, renders, as_json
    )
