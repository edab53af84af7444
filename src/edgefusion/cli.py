"""The ``edgefusion`` command line: one typer app; each command is a thin wrapper over a function.

Errors a user can cause are :class:`~edgefusion.errors.EdgefusionError` and print as one line;
``edgefusion --debug <command>`` shows the full traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from edgefusion.errors import EdgefusionError

app = typer.Typer(
    help="EdgeFusion toolkit: compress, distill and deploy Stable Diffusion for edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("outputs/demo"), help="Folder for the PNGs and contact sheet."),
    model: str = typer.Option("toy:teacher", help="Pipeline folder or shipped toy name."),
    steps: int = typer.Option(25, help="Denoising steps."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, help="Image i uses seed + i."),
) -> None:
    """Generate a few shapes-world images with a shipped toy model (no download) and a contact sheet."""
    from edgefusion.demo import run_demo

    sheet = run_demo(out, model=model, steps=steps, guidance=guidance, seed=seed)
    Console().print(f"[green]wrote[/] {out}/*.png and {sheet}")


def _register_subcommands() -> None:
    """Attach each stage's commands (once); imports stay here so `edgefusion --help` lists them all."""
    if _state.get("registered"):
        return
    _state["registered"] = True
    from edgefusion.arch.cli import register as register_arch
    from edgefusion.data.cli import data_app
    from edgefusion.toy.cli import toy_app
    from edgefusion.train.cli import register as register_train

    register_arch(app)
    register_train(app)
    app.add_typer(toy_app, name="toy")
    app.add_typer(data_app, name="data")


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one clear line."""
    _register_subcommands()
    try:
        app(standalone_mode=False)
    except EdgefusionError as err:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {err}")
        sys.exit(1)
    except Exception as err:  # click's own usage errors and aborts
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort | KeyboardInterrupt):
            console.print("aborted")
            sys.exit(130)
        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
