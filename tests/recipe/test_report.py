"""``recipe report``: one HTML file, images embedded, nothing fetched."""

from __future__ import annotations

import base64
import json
import re

import pytest
import yaml
from micro_recipes import PROMPTS, training

from edgefusion.errors import EdgefusionError
from edgefusion.recipe.report import write_report
from edgefusion.recipe.run import run_recipe
from edgefusion.toy.dataset import write_toy_dataset


def test_the_report_embeds_loss_curves_metrics_and_the_contact_sheet(
    tmp_path, teacher_pipeline, write_recipe
):
    distill = {"teacher": "${teacher}", "variant": "tiny", **training(2)}
    evaluation = {"model": "${distill.out}", "prompts": "eval", "limit": 2, "steps": 2}
    sheet = {
        "models": {"teacher": "${teacher}", "bk-tiny": "${distill.out}"},
        "prompts": PROMPTS,
        "steps": {"teacher": 2, "bk-tiny": 2},
    }
    stages = [
        {"name": "data", "kind": "toy-data", "config": {"num_prompts": 8, "size": 32}},
        {"name": "distill", "kind": "distill", "config": distill},
        {"name": "eval", "kind": "eval", "config": evaluation},
        {"name": "sheet", "kind": "sheet", "config": sheet},
    ]
    recipe = write_recipe(yaml.safe_dump({"inputs": {"teacher": str(teacher_pipeline)}, "stages": stages}))
    out = tmp_path / "out"
    run_recipe(recipe, out, echo=lambda line: None)

    page = write_report(out).read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 2  # the distill stage's loss curves and the sheet
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert "Losses (run/losses.csv)" in page and "Contact sheet" in page
    assert "<td>toy.accuracy_all</td>" in page  # the eval stage's metrics
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "Data ladder" not in page  # toy data is written whole: no curation steps to show
    for name in ("data", "distill", "eval", "sheet"):
        assert f"id='{name}'" in page


def test_a_folder_without_a_recipe_run_is_refused(tmp_path):
    with pytest.raises(EdgefusionError, match="holds no recipe run"):
        write_report(tmp_path)


def test_eval_stages_side_by_side_and_the_bench_stage_latency_table(tmp_path, teacher_pipeline, write_recipe):
    evaluation = {"model": "${teacher}", "prompts": "eval", "limit": 2}
    bench = {
        "models": {"teacher": "${teacher}", "teacher-1-step": "${teacher}"},
        "steps": {"teacher-1-step": 1},
        "resolution": 16,
        "warmup": 0,
        "repeats": 1,
        "end_to_end": False,
    }
    stages = [
        {"name": "eval-2", "kind": "eval", "config": {**evaluation, "steps": 2}},
        {"name": "eval-1", "kind": "eval", "config": {**evaluation, "steps": 1}},
        {"name": "bench", "kind": "bench", "config": bench},
    ]
    recipe = write_recipe(yaml.safe_dump({"inputs": {"teacher": str(teacher_pipeline)}, "stages": stages}))
    out = tmp_path / "out"
    run_recipe(recipe, out, echo=lambda line: None)

    records = json.loads((out / "bench/out/bench.json").read_text())["records"]
    totals = {r["model"]: r for r in records if r["component"] == "total"}
    assert set(totals) == {"teacher", "teacher-1-step"}
    assert totals["teacher"]["steps"] == 25 and totals["teacher-1-step"]["steps"] == 1  # SD's default
    assert totals["teacher-1-step"]["model_path"] == str(teacher_pipeline)
    assert totals["teacher-1-step"]["speedup"] > 1  # against the first model's 25 steps

    page = write_report(out).read_text()
    side = page.split("<h2 id='metrics'>Metrics side by side</h2>")[1].split("</table>")[0]
    assert "<th>eval-2</th><th>eval-1</th>" in side
    row = re.search(r"<tr><td>toy.accuracy_all</td>(.*?)</tr>", side).group(1)
    assert len(re.findall(r"<td class='num'>[0-9.e+-]+</td>", row)) == 2
    latency = page.split("<h3>Latency per component</h3>")[1].split("</table>")[0]
    assert "<td>teacher-1-step</td><td>torch-fp32</td><td>1</td>" in latency


def test_a_data_stage_shows_its_ladder_with_example_rejects(tmp_path, write_recipe):
    images = write_toy_dataset(tmp_path / "web", kind="web", n=40, size=32, progress=False)
    pipeline = {"input": str(images), "stages": [{"stage": "ingest"}, {"stage": "dedup"}]}
    recipe = write_recipe(
        yaml.safe_dump({"stages": [{"name": "curated", "kind": "data", "config": pipeline}]})
    )
    out = tmp_path / "out"
    run_recipe(recipe, out, echo=lambda line: None)
    stats = json.loads((out / "curated/02-dedup/stats.json").read_text())
    assert stats["rejected"] > 0  # the web set repeats images

    page = write_report(out).read_text()
    ladder = page.split("<h3>Data ladder</h3>")[1].split("</table>")[0]
    assert f"<td>02-dedup</td><td>dedup</td><td>{stats['samples_in']}</td><td>{stats['kept']}</td>" in ladder
    removed = page.split("<h4>Removed by 02-dedup</h4>")[1]
    figures = re.findall(r"<figure class='reject'><img alt='' src='data:image/png;base64,([^']+)'>", removed)
    assert 0 < len(figures) <= 4
    assert all(base64.b64decode(png).startswith(b"\x89PNG") for png in figures)
