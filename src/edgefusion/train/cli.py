"""``edgefusion distill`` and ``edgefusion lcm``: thin wrappers over the training stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()

Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="KEY=VALUE settings over the config file, e.g. train.steps=200 data.path=DIR."),
]


def _config_option(what: str) -> Any:
    return typer.Option("--config", help=f"YAML/JSON file of {what} fields (see configs/).")


def distill_command(
    overrides: Overrides = None,
    config: Annotated[Path | None, _config_option("KDConfig")] = None,
) -> None:
    """BK-SDM knowledge distillation of a compact U-Net; writes a diffusers pipeline folder.

    Re-running the same command resumes from the newest checkpoint in run_dir. Multi-GPU:
    accelerate launch -m edgefusion.cli distill --config kd.yaml

    Example: edgefusion distill --config configs/kd/toy-bk-tiny-kd.yaml train.steps=100
    """
    from edgefusion.train.config import load_config
    from edgefusion.train.kd import KDConfig, distill

    _print_report("distilled", distill(load_config(KDConfig, config, overrides or [])))


def lcm_command(
    overrides: Overrides = None,
    config: Annotated[Path | None, _config_option("LCMConfig")] = None,
) -> None:
    """Latent consistency distillation for 1-4 step sampling (EdgeFusion: compact student, the
    original large model as teacher); writes a pipeline folder with an LCMScheduler.

    Re-running the same command resumes from the newest checkpoint in run_dir.

    Example: edgefusion lcm --config configs/lcm/toy-edgefusion.yaml train.steps=100
    """
    from edgefusion.train.config import load_config
    from edgefusion.train.lcm import LCMConfig, lcm_distill

    _print_report("LCM-distilled", lcm_distill(load_config(LCMConfig, config, overrides or [])))


def _print_report(verb: str, report: Any) -> None:
    """One summary per run (not per process under ``accelerate launch``)."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    skipped = ", ".join(f"{count} {reason}" for reason, count in report.skipped.items())
    losses = ", ".join(f"{name} {value:.4g}" for name, value in report.last_losses.items() if "/" not in name)
    console.print(f"[green]{verb}[/] {report.steps} steps in {report.seconds:.0f} s (last: {losses})")
    console.print(f"skipped samples: {skipped}; run folder {report.run_dir}; wrote [bold]{report.out}[/]")


def register(app: typer.Typer) -> None:
    """Add ``distill`` and ``lcm`` to the ``edgefusion`` app."""
    app.command("distill")(distill_command)
    app.command("lcm")(lcm_command)
