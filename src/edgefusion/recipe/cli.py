"""``edgefusion recipe run / plan / report / kinds``: thin wrappers over :mod:`edgefusion.recipe`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

recipe_app = typer.Typer(
    help="The whole recipe from one YAML file: run its stages in order, resume, redo what changed.",
    no_args_is_help=True,
)
console = Console()

RecipeFile = Annotated[Path, typer.Argument(help="Recipe YAML: out, inputs, stages (see docs/recipe.md).")]
OutOption = Annotated[Path | None, typer.Option("--out", help="The recipe's folder (default: its 'out').")]


@recipe_app.command("run")
def run_command(
    recipe: RecipeFile,
    out: OutOption = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Stop after this stage (it runs; later ones do not).")
    ] = None,
) -> None:
    """Check every stage, then run them in order: finished ones are skipped, an interrupted one
    resumes, and a stage whose settings or inputs changed is redone with those after it that use it."""
    from edgefusion.recipe.run import run_recipe

    plan = run_recipe(recipe, out, until, echo=typer.echo)
    console.print(f"[green]done[/] {plan.out} (edgefusion recipe report {plan.out})")


@recipe_app.command("plan")
def plan_command(
    recipe: RecipeFile,
    out: OutOption = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Mark the stages a run --until would leave.")
    ] = None,
) -> None:
    """Check the recipe and print what a run would do with each stage and why; runs nothing."""
    from edgefusion.recipe.plan import make_plan
    from edgefusion.recipe.run import describe_plan

    plan = make_plan(recipe, out)
    typer.echo(f"recipe {recipe} -> {plan.out}")
    for line in describe_plan(plan, until):
        typer.echo(line)


@recipe_app.command("report")
def report_command(
    folder: Annotated[Path, typer.Argument(help="The recipe's folder (its recipe-state.json).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file (default: FOLDER/report.html).")
    ] = None,
) -> None:
    """Write one self-contained HTML page: per stage its time, loss curves, metrics and contact sheet."""
    from edgefusion.recipe.report import write_report

    console.print(f"[green]wrote[/] {write_report(folder, out)}")


@recipe_app.command("kinds")
def kinds_command() -> None:
    """List the stage kinds a recipe can use."""
    from edgefusion.recipe.kinds import STAGE_KINDS

    for name in sorted(STAGE_KINDS):
        typer.echo(f"{name}: {STAGE_KINDS[name].help}")
