"""A recipe on micro models: end to end, interrupted and resumed, and redone where it changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from micro_recipes import PROMPTS, micro_recipe

from edgefusion.recipe.plan import make_plan
from edgefusion.recipe.report import write_report
from edgefusion.recipe.run import run_recipe
from edgefusion.recipe.state import STATE_FILE

EVAL_AND_SHEET = [
    {"name": "eval", "kind": "eval", "config": {"model": "${lcm.out}", "prompts": "eval", "limit": 2}},
    {
        "name": "sheet",
        "kind": "sheet",
        "config": {
            "models": {"teacher": "${teacher}", "lcm": "${lcm.out}"},
            "prompts": PROMPTS,
            "steps": {"teacher": 2},
        },
    },
]


def _state(out: Path) -> dict:
    return json.loads((out / STATE_FILE).read_text())["stages"]


def _actions(recipe: Path, out: Path) -> dict[str, str]:
    return {stage.name: stage.action for stage in make_plan(recipe, out).stages}


def test_a_recipe_runs_every_stage_in_order_and_a_rerun_runs_none(
    tmp_path, teacher_pipeline, write_recipe, calls
):
    recipe = write_recipe(micro_recipe(teacher_pipeline, extra=EVAL_AND_SHEET))
    out = tmp_path / "out"
    lines: list[str] = []
    run_recipe(recipe, out, echo=lines.append)

    assert [line.split(":")[0] for line in lines] == [
        "stage 1/6 data (toy-data)", "stage 2/6 distill (distill)", "stage 3/6 lcm (lcm)",
        "stage 4/6 quantize (quantize)", "stage 5/6 eval (eval)", "stage 6/6 sheet (sheet)",
    ]  # fmt: skip
    state = _state(out)
    assert all(record["status"] == "done" for record in state.values())
    lcm = json.loads((out / "lcm/out/unet/edgefusion.json").read_text())
    assert lcm["stage"] == "lcm" and lcm["teacher"] == str(teacher_pipeline)
    lcm_config = yaml.safe_load((out / "lcm/out/lcm.yaml").read_text())
    assert lcm_config["student"] == str(out.resolve() / "distill/out")  # ${distill.out}, resolved
    assert (out / "quantize/out/unet").is_dir() and (out / "sheet/out/sheet.png").is_file()
    assert "toy" in json.loads((out / "eval/out/metrics.json").read_text())
    assert state["lcm"]["inputs"]["distill"]["fingerprint"] == state["distill"]["fingerprint"]

    before = dict(calls)
    mtime = (out / "distill/out/unet").stat().st_mtime_ns
    lines.clear()
    run_recipe(recipe, out, echo=lines.append)
    assert calls == before  # nothing ran again
    assert all(": done: " in line for line in lines)
    assert (out / "distill/out/unet").stat().st_mtime_ns == mtime


def test_until_stops_after_a_stage_and_the_next_run_continues_from_there(
    tmp_path, teacher_pipeline, write_recipe, calls
):
    recipe = write_recipe(micro_recipe(teacher_pipeline))
    out = tmp_path / "out"
    run_recipe(recipe, out, until="distill", echo=lambda line: None)
    assert set(_state(out)) == {"data", "distill"} and not (out / "lcm").exists()
    assert _actions(recipe, out) == {"data": "done", "distill": "done", "lcm": "new", "quantize": "new"}

    distilled = (out / "distill/out/unet").stat().st_mtime_ns
    run_recipe(recipe, out, echo=lambda line: None)
    assert calls == {"toy-data": 1, "distill": 1, "lcm": 1, "quantize": 1}
    assert (out / "distill/out/unet").stat().st_mtime_ns == distilled


def test_a_stage_interrupted_mid_training_resumes_from_its_checkpoint(
    tmp_path, teacher_pipeline, write_recipe, monkeypatch, calls
):
    """Ctrl-C after the LCM stage's first checkpoint: the state says it is running, the report
    reads the run in progress, and the next run resumes it at step 1 without redoing KD."""
    import edgefusion.train.loop as loop
    from edgefusion.recipe.kinds import STAGE_KINDS

    recipe = write_recipe(micro_recipe(teacher_pipeline))
    out = tmp_path / "out"
    save = loop.save_training_state

    def save_then_interrupt(accelerator, checkpoints, step, *args):
        save(accelerator, checkpoints, step, *args)
        if "lcm" in str(checkpoints):
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_training_state", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, out, echo=lambda line: None)
    assert _state(out)["lcm"]["status"] == "running" and "quantize" not in _state(out)
    assert "running (or interrupted)" in write_report(out).read_text()
    assert _actions(recipe, out)["lcm"] == "resume"

    monkeypatch.setattr(loop, "save_training_state", save)
    reports = []
    lcm_run = STAGE_KINDS["lcm"].run
    monkeypatch.setitem(STAGE_KINDS, "lcm", STAGE_KINDS["lcm"].__class__(
        **{**vars(STAGE_KINDS["lcm"]), "run": lambda config: reports.append(lcm_run(config))}
    ))  # fmt: skip
    run_recipe(recipe, out, echo=lambda line: None)
    assert reports[0].resumed_from == 1 and reports[0].steps == 2
    assert calls["distill"] == 1 and calls["toy-data"] == 1
    assert _state(out)["lcm"]["runs"] == 2 and _state(out)["lcm"]["status"] == "done"


def test_a_changed_setting_redoes_that_stage_and_those_that_use_it_only(
    tmp_path, teacher_pipeline, write_recipe, calls
):
    other = [{"name": "other-data", "kind": "toy-data", "config": {"num_prompts": 2, "size": 32}}]
    out = tmp_path / "out"
    run_recipe(write_recipe(micro_recipe(teacher_pipeline, extra=other)), out, echo=lambda line: None)
    calls.clear()

    changed = write_recipe(micro_recipe(teacher_pipeline, learning_rate=2.0e-3, extra=other))
    plan = make_plan(changed, out)
    reasons = {stage.name: (stage.action, stage.reason) for stage in plan.stages}
    assert reasons["data"][0] == reasons["other-data"][0] == "done"
    assert reasons["distill"] == ("redo", "setting train.learning_rate (0.001 -> 0.002) changed")
    assert reasons["lcm"] == ("redo", "its input stage distill changed")
    assert reasons["quantize"] == ("redo", "its input stage lcm changed")

    run_recipe(changed, out, echo=lambda line: None)
    assert calls == {"distill": 1, "lcm": 1, "quantize": 1}
    rows = (out / "distill/run/losses.csv").read_text().splitlines()
    assert len(rows) == 3 and ",0.002," in rows[1]  # trained again from step 1, at the new rate
    assert set(_actions(changed, out).values()) == {"done"}


def test_a_deleted_output_is_remade_and_so_are_the_stages_that_read_it(
    tmp_path, teacher_pipeline, write_recipe, calls
):
    import shutil

    recipe = write_recipe(micro_recipe(teacher_pipeline))
    out = tmp_path / "out"
    run_recipe(recipe, out, echo=lambda line: None)
    shutil.rmtree(out / "lcm/out")
    plan = {stage.name: (stage.action, stage.reason) for stage in make_plan(recipe, out).stages}
    assert plan["lcm"][0] == "redo" and "missing" in plan["lcm"][1]
    assert plan["quantize"] == ("redo", "its input stage lcm runs again")
    assert plan["distill"][0] == "done"
