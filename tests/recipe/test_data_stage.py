"""The curation pipeline of ``edgefusion data run`` as one recipe stage, on the same code."""

from __future__ import annotations

import json

import yaml

from edgefusion.data.pipeline import run_pipeline
from edgefusion.recipe.plan import make_plan
from edgefusion.recipe.run import run_recipe
from edgefusion.toy.dataset import write_toy_dataset


def test_a_data_stage_runs_the_pipeline_and_its_last_output_feeds_the_next_stage(
    tmp_path, write_recipe, calls
):
    images = write_toy_dataset(tmp_path / "toy", n=6, size=32, progress=False)
    pipeline = {"input": str(images), "stages": [{"stage": "ingest"}, {"stage": "crop", "size": 16}]}
    stages = [
        {"name": "curated", "kind": "data", "config": pipeline},
        {
            "name": "deduped",
            "kind": "data",
            "config": {"input": "${curated.out}", "stages": [{"stage": "dedup"}]},
        },
    ]
    recipe = write_recipe(yaml.safe_dump({"stages": stages}))
    out = tmp_path / "out"
    plan = make_plan(recipe, out)
    assert plan.stage("curated").output == out.resolve() / "curated/02-crop"
    run_recipe(recipe, out, echo=lambda line: None)
    assert calls == {"data": 2}
    stats = json.loads((out / "deduped/01-dedup/stats.json").read_text())
    assert stats["input"] == str(out.resolve() / "curated/02-crop") and stats["kept"] == 6

    # `edgefusion data run` on the same pipeline makes the same files
    alone = run_pipeline({**pipeline, "out": str(tmp_path / "alone")}, progress=False)
    for name in ("01-ingest", "02-crop"):
        ours = (out / "curated" / name / "metadata.jsonl").read_text()
        assert (tmp_path / "alone" / name / "metadata.jsonl").read_text() == ours
    assert [p.name for p in alone] == ["01-ingest", "02-crop"]
