"""``edgefusion train``, ``distill``, ``lcm`` and ``dreambooth``: thin wrappers over the training stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgefusion.cli_options import Command, old_spellings

console = Console()

Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="KEY=VALUE settings over the config file, e.g. train.steps=200 data.path=DIR."),
]


def _config_option(what: str) -> Any:
    return typer.Option("--config", help=f"YAML/JSON file of {what} fields (see configs/).")


def train_command(
    overrides: Overrides = None,
    config: Annotated[Path | None, _config_option("DenoiseConfig")] = None,
) -> None:
    """Train a U-Net with SD's denoising objective, from scratch or from an init; writes a
    diffusers pipeline folder (the teacher of the other stages).

    Re-running the same command resumes from the newest checkpoint in run_dir.

    Example: edgefusion train --config configs/toy/teacher.yaml train.steps=100
    """
    from edgefusion.config import load_config
    from edgefusion.train.denoise import DenoiseConfig, train_unet

    _print_report("trained", train_unet(load_config(DenoiseConfig, config, overrides or [])))


def distill_command(
    overrides: Overrides = None,
    config: Annotated[Path | None, _config_option("KDConfig")] = None,
) -> None:
    """BK-SDM knowledge distillation of a compact U-Net; writes a diffusers pipeline folder.

    Re-running the same command resumes from the newest checkpoint in run_dir. Multi-GPU:
    accelerate launch -m edgefusion.cli distill --config kd.yaml

    Example: edgefusion distill --config configs/kd/toy-bk-tiny-kd.yaml train.steps=100
    """
    from edgefusion.config import load_config
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
    from edgefusion.config import load_config
    from edgefusion.train.lcm import LCMConfig, lcm_distill

    _print_report("LCM-distilled", lcm_distill(load_config(LCMConfig, config, overrides or [])))


def dreambooth_command(
    overrides: Overrides = None,
    config: Annotated[Path | None, _config_option("DreamBoothConfig")] = None,
    model: Annotated[str | None, typer.Option(help="Pipeline folder or toy:NAME to personalize.")] = None,
    instance_images: Annotated[
        Path | None, typer.Option(help="Folder of the subject's images (a handful).")
    ] = None,
    instance_prompt: Annotated[
        str | None, typer.Option(help="Prompt of the instance images, with the identifier: 'a sks star'.")
    ] = None,
    class_prompt: Annotated[
        str | None, typer.Option(help="The subject's class: 'a star' (the prior-preservation images).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="The personalized pipeline (or LoRA folder) to write.")
    ] = None,
    lora: Annotated[
        int | None, typer.Option(help="Train LoRA adapters of this rank instead of the whole U-Net.")
    ] = None,
) -> None:
    """DreamBooth: teach a model one subject from a few images (prior preservation with class
    images the model generates itself); writes a pipeline folder, or with --lora a LoRA folder
    that diffusers' load_lora_weights and every sampling command (--model) take.

    Options given here win over the config file and KEY=VALUE settings. Re-running the same
    command resumes from the newest checkpoint in run_dir and reuses its class images.

    Example: edgefusion dreambooth --config configs/dreambooth/toy-full.yaml --model toy:teacher
    """
    from edgefusion.config import apply_overrides, config_from_dict
    from edgefusion.inputs import read_config_mapping
    from edgefusion.train.dreambooth import DreamBoothConfig, dreambooth

    data = read_config_mapping(config, "config file") if config is not None else {}
    data = apply_overrides(data, overrides or [])
    # Typed options go in as they are (a prompt is not parsed as YAML the way a setting is).
    given = {
        "model": model,
        "instance_images": instance_images and str(instance_images),
        "instance_prompt": instance_prompt,
        "class_prompt": class_prompt,
        "out": out and str(out),
    }
    data.update({key: value for key, value in given.items() if value is not None})
    if lora is not None:
        data["lora"] = {**(data.get("lora") or {}), "rank": lora}
    _print_report("personalized", dreambooth(config_from_dict(DreamBoothConfig, data)))


checkpoint_app = typer.Typer(
    help="Carry a training run between machines: its newest checkpoint, compacted.", no_args_is_help=True
)


@checkpoint_app.command("pack", cls=Command)
@old_spellings(out="OUT")
def pack_command(
    run_dir: Annotated[Path, typer.Argument(help="A run folder of train, distill or lcm.")],
    out: Annotated[Path, typer.Option(help="The packed run folder to write (replaced if it exists).")],
) -> None:
    """Pack a run's newest checkpoint (fp16 weights and EMA, bf16 Adam moments) with its config
    and logs, half a checkpoint's size; unpack it to resume elsewhere."""
    from edgefusion.train.checkpoint import PACKED_TENSORS, pack_run

    pack_run(run_dir, out)
    size = sum((out / name).stat().st_size for name in PACKED_TENSORS) / 2**20
    console.print(f"[green]packed[/] {run_dir} -> {out} ({size:.1f} MiB)")


@checkpoint_app.command("unpack", cls=Command)
@old_spellings(out="RUN_DIR")
def unpack_command(
    packed: Annotated[Path, typer.Argument(help="A folder written by `edgefusion checkpoint pack`.")],
    out: Annotated[Path, typer.Option(help="The new run folder; re-run the stage with it to resume.")],
) -> None:
    """Unpack a packed run into a run folder, so that re-running the stage's command resumes it."""
    from edgefusion.train.checkpoint import unpack_run

    checkpoint = unpack_run(packed, out)
    console.print(f"[green]unpacked[/] {packed} -> {checkpoint}; re-run the stage with run_dir={out}")


def _print_report(verb: str, report: Any) -> None:
    """One summary per run (not per process under ``accelerate launch``)."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    skipped = ", ".join(f"{count} {reason}" for reason, count in report.skipped.items())
    losses = ", ".join(f"{name} {value:.4g}" for name, value in report.last_losses.items() if "/" not in name)
    last = f" (last: {losses})" if losses else " (nothing left to train: the output was written)"
    console.print(f"[green]{verb}[/] {report.steps} steps in {report.seconds:.0f} s{last}")
    console.print(f"skipped samples: {skipped}; run folder {report.run_dir}; wrote [bold]{report.out}[/]")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``distill``, ``lcm`` and ``dreambooth`` to the ``edgefusion`` app."""
    app.command("train")(train_command)
    app.command("distill")(distill_command)
    app.command("lcm")(lcm_command)
    app.command("dreambooth")(dreambooth_command)
    app.add_typer(checkpoint_app, name="checkpoint")
