"""``recipe report``: one HTML file, images embedded, nothing fetched."""

from __future__ import annotations

import base64
import re

import pytest
import yaml
from micro_recipes import PROMPTS, training

from edgefusion.errors import EdgefusionError
from edgefusion.recipe.report import write_report
from edgefusion.recipe.run import run_recipe


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
    for name in ("data", "distill", "eval", "sheet"):
        assert f"id='{name}'" in page


def test_a_folder_without_a_recipe_run_is_refused(tmp_path):
    with pytest.raises(EdgefusionError, match="holds no recipe run"):
        write_report(tmp_path)
