"""A recipe is checked whole before any stage runs, and each error names the line to fix."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from edgefusion.errors import EdgefusionError
from edgefusion.recipe.plan import make_plan
from edgefusion.recipe.run import run_recipe

ROOT = Path(__file__).resolve().parents[2]


def _recipe(teacher: Path, stages: str) -> str:
    """A recipe whose stage list (``stages``, YAML) starts on line 4."""
    return f"inputs:\n  teacher: {teacher}\nstages:\n" + textwrap.dedent(stages)


def _line_of(error: pytest.ExceptionInfo, path: Path) -> int:
    match = re.match(rf"{re.escape(str(path))}:(\d+): ", str(error.value))
    assert match, str(error.value)
    return int(match.group(1))


def _fails_before_running(path: Path, out: Path, calls) -> pytest.ExceptionInfo:
    with pytest.raises(EdgefusionError) as error:
        run_recipe(path, out, echo=lambda line: None)
    assert not calls and not out.exists()  # nothing ran, nothing was written
    return error


DATA = """\
- name: data
  kind: toy-data
  config: {num_prompts: 4, size: 32}
"""


def test_an_unknown_stage_kind_is_refused_at_its_line(tmp_path, teacher_pipeline, write_recipe, calls):
    path = write_recipe(
        _recipe(teacher_pipeline, DATA + "- name: cut\n  kind: compres\n  config: {model: x}\n")
    )
    error = _fails_before_running(path, tmp_path / "out", calls)
    assert _line_of(error, path) == 8
    assert "unknown stage kind 'compres'" in str(error.value) and "compress" in str(error.value)


def test_a_missing_input_path_is_refused_at_its_line(tmp_path, teacher_pipeline, write_recipe, calls):
    stages = (
        DATA
        + """\
- name: distill
  kind: distill
  config:
    teacher: ${teacher}
    variant: tiny
    data: {path: '${data.out}'}
  set:
    student_from: /no/such/model
"""
    )
    path = write_recipe(_recipe(teacher_pipeline, stages))
    error = _fails_before_running(path, tmp_path / "out", calls)
    assert _line_of(error, path) == 14
    assert "student_from: /no/such/model does not exist" in str(error.value)


def test_a_bad_setting_is_refused_by_the_stage_config_at_its_line(
    tmp_path, teacher_pipeline, write_recipe, calls
):
    stages = (
        DATA
        + """\
- name: lcm
  kind: lcm
  config:
    student: ${teacher}
    teacher: ${teacher}
    data:
      path: ${data.out}
    train:
      steps: 0
"""
    )
    path = write_recipe(_recipe(teacher_pipeline, stages))
    error = _fails_before_running(path, tmp_path / "out", calls)
    assert _line_of(error, path) == 15
    assert "stage lcm (lcm): train.steps must be at least 1" in str(error.value)


def test_an_unknown_setting_names_its_line_and_the_valid_keys(
    tmp_path, teacher_pipeline, write_recipe, calls
):
    stages = DATA + "- name: q\n  kind: quantize\n  set:\n    model: ${teacher}\n    activation: float16\n"
    path = write_recipe(_recipe(teacher_pipeline, stages))
    error = _fails_before_running(path, tmp_path / "out", calls)
    assert _line_of(error, path) == 11 and "unknown quantize setting activation" in str(error.value)


@pytest.mark.parametrize(
    "reference,message",
    [
        ("${later.out}", "stage later (stage 3) runs after q (stage 2)"),
        ("${nowhere.out}", "no stage named nowhere"),
        ("${q.out}", "a stage cannot use its own output (its folder is ${q.dir})"),
        ("${studnet}", "no input named studnet (inputs: teacher)"),
        ("${data.output}", "is not a reference"),
    ],
)
def test_a_reference_to_a_later_or_unknown_stage_is_refused_at_its_line(
    tmp_path, teacher_pipeline, write_recipe, calls, reference, message
):
    stages = DATA + f"- name: q\n  kind: quantize\n  config:\n    model: '{reference}'\n"
    stages += "- name: later\n  kind: toy-data\n"
    path = write_recipe(_recipe(teacher_pipeline, stages))
    error = _fails_before_running(path, tmp_path / "out", calls)
    assert _line_of(error, path) == 10 and message in str(error.value)


def test_a_bad_setting_in_the_data_pipeline_stage_is_refused_before_the_first_data_stage_runs(
    tmp_path, teacher_pipeline, write_recipe, calls
):
    stages = """\
- name: data
  kind: data
  config:
    input: ${teacher}
    stages:
      - stage: ingest
      - stage: crop
        sise: 64
"""
    path = write_recipe(_recipe(teacher_pipeline, stages))
    error = _fails_before_running(path, tmp_path / "out", calls)
    assert _line_of(error, path) == 11 and "unknown crop stage setting sise" in str(error.value)


def test_the_real_scale_template_asks_for_its_paths_by_line(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    path = Path("recipes/sd-v1.yaml")
    with pytest.raises(EdgefusionError) as error:
        make_plan(path, tmp_path / "out")
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("  teacher:"))
    assert _line_of(error, path) == line and "fill in the path at inputs.teacher" in str(error.value)


def test_the_real_scale_template_plans_once_its_paths_are_filled_in(tmp_path, monkeypatch, teacher_pipeline):
    """Every stage of the template builds with its own config class once the paths exist."""
    monkeypatch.chdir(ROOT)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo\n")
    text = Path("recipes/sd-v1.yaml").read_text()
    text = re.sub(r'"<fill in: path to the COCO[^"]*"', str(prompts), text)
    text = re.sub(r'"<fill in:[^"]*"', str(teacher_pipeline), text)
    path = tmp_path / "sd-v1.yaml"
    path.write_text(text)
    plan = make_plan(path, tmp_path / "out")
    assert [s.kind.name for s in plan.stages] == [
        "data", "compress", "distill", "lcm", "quantize", "export", "eval", "sheet", "bench"
    ]  # fmt: skip
    assert plan.stage("distill").config.train.gradient_accumulation == 4


def test_the_toy_recipe_plans_every_stage_as_new(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    plan = make_plan("recipes/toy-edgefusion.yaml", tmp_path / "out")
    assert [(s.name, s.action) for s in plan.stages][:3] == [
        ("data", "new"),
        ("distill", "new"),
        ("lcm", "new"),
    ]
    kd, lcm = plan.stage("distill").config, plan.stage("lcm").config
    assert (kd.train.steps, kd.train.batch_size, kd.caption_dropout, kd.save_dtype) == (
        2000,
        32,
        0.1,
        "float16",
    )
    lcm_settings = (lcm.train.steps, lcm.num_ddim_steps, lcm.teacher_steps, lcm.w_min, lcm.w_max)
    assert lcm_settings == (1000, 4, 4, 1.0, 1.0)
    assert lcm.student == str(tmp_path / "out/distill/out") and kd.data.path == str(tmp_path / "out/data/out")
    data = plan.stage("data").config
    assert (data.kind, data.num_prompts, data.seed, data.size) == ("clean", 20000, 7, 64)


def test_the_curated_toy_variant_trains_on_its_own_ladder(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    plan = make_plan("recipes/toy-edgefusion-curated.yaml", tmp_path / "out")
    assert [s.kind.name for s in plan.stages] == [
        "toy-data",
        "data",
        "data",
        "distill",
        "lcm",
        "eval",
        "eval",
    ]
    ladder = plan.stage("data").config
    assert [step.out.name for step in ladder.steps] == [
        "01-ingest", "02-dedup", "03-filter", "04-crop", "05-caption", "06-shard"
    ]  # fmt: skip
    assert plan.stage("distill").config.data.path == str(plan.stage("data").output)
    assert plan.stage("lcm").config.train.steps == 1000
