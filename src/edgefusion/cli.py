"""The ``edgefusion`` command line: one typer app; each command is a thin wrapper over a function.

Errors a user can cause are :class:`~edgefusion.errors.EdgefusionError` and print as one line;
``edgefusion --debug <command>`` shows the full traceback instead.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import typer
from rich.console import Console

from edgefusion.cli_options import config_file
from edgefusion.errors import EdgefusionError

app = typer.Typer(
    help="EdgeFusion toolkit: compress, distill and deploy Stable Diffusion for edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
_state = {"debug": False}
_INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C (128 + SIGINT)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("outputs/demo"), help="Folder for the PNGs and contact sheet."),
    model: str = typer.Option("toy:edgefusion", help="Pipeline folder or shipped toy name."),
    steps: int | None = typer.Option(None, help="Sampling steps (default: 2 for LCM models, else 25)."),
    guidance: float | None = typer.Option(None, help="Guidance scale (default: the one the model records)."),
    seed: int = typer.Option(0, help="Image i uses seed + i."),
) -> None:
    """Generate a few shapes-world images with a shipped toy model (no download) and a contact sheet."""
    from edgefusion.demo import run_demo

    sheet = run_demo(out, model=model, steps=steps, guidance=guidance, seed=seed)
    Console().print(f"[green]wrote[/] {out}/*.png and {sheet}")


@app.command("generate")
@config_file("generate", shares="prompt")
def generate_command(
    prompt: list[str] | None = typer.Argument(None, help="Prompt(s); or give --prompts FILE."),
    model: str = typer.Option("toy:edgefusion", help="Diffusers SD folder, ONNX export or toy:NAME."),
    out: Path = typer.Option(Path("outputs/generate"), help="Folder for the PNGs and generations.jsonl."),
    prompts: Path | None = typer.Option(
        None, help="Prompt file: text (one per line), CSV or JSONL; or a prompt set (eval, val)."
    ),
    steps: int | None = typer.Option(None, help="Sampling steps (default: 2 for LCM models, else 25)."),
    guidance: float | None = typer.Option(
        None, help="Guidance scale (default: the one the model records, else 7.5)."
    ),
    seed: int = typer.Option(0, help="Image k uses seed + k."),
    n: int = typer.Option(1, help="Images per prompt."),
    size: int | None = typer.Option(
        None,
        help="Image side in pixels, a multiple of the model's size factor (64 for SD; default: the model's).",
    ),
    scheduler: str | None = typer.Option(None, help="ddim, pndm, dpm, euler (non-LCM models) or lcm."),
    backend: str = typer.Option(
        "auto",
        help="auto (the fastest that draws fp32's images here: OpenVINO if installed, else torch; bf16 for "
        "LCM models on CPUs with hardware bf16, else fp32), torch, "
        "torch-bf16, torch-compile[-bf16], openvino[-bf16], or onnxruntime (an `edgefusion export` folder).",
    ),
    vae: str | None = typer.Option(
        None, help="Decode with this decoder (AutoencoderTiny or AutoencoderKL folder, or a pipeline's vae/)."
    ),
    batch_size: int = typer.Option(8, help="Images per pipeline call."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Delete numbered images in OUT this run does not make, and remake those made with other "
        "settings.",
    ),
) -> None:
    """Generate images; LCM models (EdgeFusion) use their own scheduler with embedded guidance.

    Re-running into the same --out resumes: finished images are kept. OUT holds one run: numbered
    images an earlier run made with other settings, or beyond this run's prompts x --n, are
    refused (nothing is deleted) unless --overwrite; other files in OUT are never touched. Example:
    edgefusion generate "a large red circle at the left on a blue background" --steps 2 --n 4
    """
    from edgefusion.eval.prompts import read_prompts
    from edgefusion.generate import generate

    texts = list(prompt or [])
    if prompts is not None:
        texts += [row.text for row in read_prompts(prompts)]
    records = generate(
        texts,
        model,
        out=out,
        steps=steps,
        guidance=guidance,
        seed=seed,
        n=n,
        size=size,
        scheduler=scheduler,
        backend=backend,
        vae=vae,
        batch_size=batch_size,
        overwrite=overwrite,
    )
    first = records[0]
    Console().print(
        f"[green]wrote[/] {len(records)} images to {out} ({first['scheduler']}, {first['steps']} steps, "
        f"guidance {first['guidance']:g})"
    )


def _register_subcommands() -> None:
    """Attach each stage's commands (once); imports stay here so `edgefusion --help` lists them all."""
    if _state.get("registered"):
        return
    _state["registered"] = True
    from edgefusion.arch.cli import register as register_arch
    from edgefusion.bench.cli import register as register_bench
    from edgefusion.data.cli import data_app
    from edgefusion.decoder.cli import decoder_app
    from edgefusion.eval.cli import eval_app
    from edgefusion.export.cli import register as register_export
    from edgefusion.quant.cli import register as register_quant
    from edgefusion.recipe.cli import recipe_app
    from edgefusion.review.cli import review_app
    from edgefusion.tiling.cli import tile_app
    from edgefusion.toy.cli import toy_app
    from edgefusion.train.cli import register as register_train

    register_arch(app)
    register_bench(app)
    register_train(app)
    register_quant(app)
    register_export(app)
    app.add_typer(toy_app, name="toy")
    app.add_typer(data_app, name="data")
    app.add_typer(eval_app, name="eval")
    app.add_typer(tile_app, name="tile")
    app.add_typer(review_app, name="review")
    app.add_typer(decoder_app, name="decoder")
    app.add_typer(recipe_app, name="recipe")


class _TorchvisionFallbackNotice(logging.Filter):
    """Drops transformers' notice that an image processor falls back to its PIL version because
    torchvision is not installed. diffusers' pipeline modules import ``CLIPImageProcessor`` and
    ``SiglipImageProcessor`` for components edgefusion never loads (safety checker, IP-adapter
    encoders), and the PIL version is the one we want; the notice says nothing about our run."""

    _NOTICE = re.compile(
        r"`\w+ImageProcessor` requires torchvision \(not installed\); falling back to `\w+Pil`"
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._NOTICE.match(record.getMessage())


def quiet_library_notices() -> None:
    """Silence, by exact message, the library notices a fresh install prints on every run that
    concern nothing we do (see each filter's docstring); everything else still shows."""
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _TorchvisionFallbackNotice) for f in logger.filters):
        logger.addFilter(_TorchvisionFallbackNotice())


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one clear line.

    Exit codes: 0 done, 1 a user error (one line, ``--debug`` for the traceback), 2 a usage error
    (typer's usage message), 130 interrupted (Ctrl-C; the stages resume when run again)."""
    quiet_library_notices()
    _register_subcommands()
    try:
        # Outside standalone mode typer returns the exit code of an interrupted or exited command.
        code = app(standalone_mode=False)
    except EdgefusionError as err:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {err}")
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        code = _INTERRUPTED
    except typer.Exit as err:
        code = err.exit_code
    except typer.TyperException as err:  # usage errors: typer's own message and exit code (2)
        err.show()
        code = err.exit_code
    if code == _INTERRUPTED:
        console.print("interrupted: run the same command again to resume (finished work is kept)")
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
