"""``edgefusion distill``: a thin wrapper over :func:`edgefusion.train.kd.distill`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def distill_command(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="KEY=VALUE settings over the config file, e.g. train.steps=200 loss.feature_weight=0."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML/JSON file of KDConfig fields (see configs/kd/).")
    ] = None,
) -> None:
    """BK-SDM knowledge distillation of a compact U-Net; writes a diffusers pipeline folder.

    Re-running the same command resumes from the newest checkpoint in run_dir. Multi-GPU:
    accelerate launch -m edgefusion.cli distill --config kd.yaml

    Example: edgefusion distill --config configs/kd/toy-bk-tiny-kd.yaml train.steps=100
    """
    from accelerate import PartialState

    from edgefusion.train.config import load_config
    from edgefusion.train.kd import KDConfig, distill

    report = distill(load_config(KDConfig, config, overrides or []))
    if not PartialState().is_main_process:  # one summary per run, not per process
        return
    skipped = ", ".join(f"{count} {reason}" for reason, count in report.skipped.items())
    losses = ", ".join(f"{name} {value:.4g}" for name, value in report.last_losses.items() if "/" not in name)
    console.print(f"[green]distilled[/] {report.steps} steps in {report.seconds:.0f} s (last: {losses})")
    console.print(f"skipped samples: {skipped}; run folder {report.run_dir}; wrote [bold]{report.out}[/]")


def register(app: typer.Typer) -> None:
    """Add ``distill`` to the ``edgefusion`` app."""
    app.command("distill")(distill_command)
