"""``edgefusion recipe plan / run / report / kinds`` on the command line."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from edgefusion.cli import _register_subcommands, app

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: object):
    _register_subcommands()
    return CliRunner().invoke(app, [str(a) for a in args])


def test_plan_prints_each_stage_and_why_without_running_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = _run(
        "recipe", "plan", "recipes/toy-edgefusion.yaml", "--out", tmp_path / "out", "--until", "lcm"
    )
    assert result.exit_code == 0, result.output
    assert "1/9 data (toy-data): new: never run here" in result.output
    assert "4/9 eval-teacher (eval): new: never run here [after --until, not run]" in result.output
    assert not (tmp_path / "out").exists()


def test_run_then_report_on_the_command_line(tmp_path, write_recipe):
    stages = [{"name": "data", "kind": "toy-data", "config": {"num_prompts": 2, "size": 32}}]
    recipe = write_recipe(yaml.safe_dump({"out": str(tmp_path / "out"), "stages": stages}))
    result = _run("recipe", "run", recipe)
    assert result.exit_code == 0, result.output
    assert "stage 1/1 data (toy-data): new: never run here" in result.output
    assert _run("recipe", "run", recipe).output.startswith("stage 1/1 data (toy-data): done:")
    assert _run("recipe", "report", tmp_path / "out").exit_code == 0
    assert (tmp_path / "out/report.html").is_file()


def test_kinds_lists_the_built_in_kinds_and_the_toy_worlds():
    output = _run("recipe", "kinds").output
    for kind in (
        "data",
        "compress",
        "train",
        "distill",
        "lcm",
        "quantize",
        "export",
        "eval",
        "sheet",
        "toy-data",
    ):
        assert f"\n{kind}: " in "\n" + output
