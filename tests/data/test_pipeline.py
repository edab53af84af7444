"""``edgefusion data run`` chains the stages; ``data score`` checks the run against the toy labels."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from edgefusion.data.cli import data_app
from edgefusion.data.dataset import read_stats
from edgefusion.data.pipeline import run_pipeline
from edgefusion.errors import EdgefusionError


def _pipeline(toy_web, run_dir, evaluator) -> dict:
    return {
        "input": str(toy_web),
        "out": str(run_dir),
        "chunk_size": 40,
        "stages": [
            {"stage": "ingest"},
            {"stage": "dedup"},
            {"stage": "filter", "min_side": 32, "min_jpeg_quality": 30, "detect_upscaling": True},
            {"stage": "crop", "size": 64},
            {"stage": "caption", "model": str(evaluator)},
            {"stage": "shard", "shard_size": 100, "title": "toy L-pps"},
            {"stage": "synthesize", "name": "synt", "n": 30},
            {"stage": "curate", "in": "synt", "evaluator": str(evaluator), "check_attributes": True},
        ],
    }


def test_pipeline_run_and_score(toy_web, micro_evaluator, tmp_path):
    spec_file = tmp_path / "pipeline.yaml"
    spec_file.write_text(yaml.safe_dump(_pipeline(toy_web, tmp_path / "run", micro_evaluator)))
    runner = CliRunner()
    result = runner.invoke(data_app, ["run", str(spec_file)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith("."))
    assert names == [
        "01-ingest", "02-dedup", "03-filter", "04-crop", "05-caption", "06-shard", "07-synt", "08-curate",
        "08-curate.review.sqlite",
    ]  # fmt: skip
    scored = json.loads(runner.invoke(data_app, ["score", str(tmp_path / "run"), "--json"]).output)
    stages = scored["stages"]
    assert stages["02-dedup"]["precision"] >= 0.9 and stages["02-dedup"]["recall"] >= 0.9
    assert stages["03-filter"]["low_resolution_removed_any_reason"] == 1.0
    assert stages["03-filter"]["removed_without_pixel_flaw"] == 0
    assert stages["04-crop"]["whole_subject"] == 1.0 and stages["04-crop"]["whole_subject_center_crop"] == 0.0
    assert stages["05-caption"]["samples"] == scored["ladder"]["L-pps"] == scored["ladder"]["L-pp"]
    assert scored["ladder"]["L-orig"] == 120 and scored["ladder"]["synt"] == 30
    assert scored["ladder"]["synt-cur"] == read_stats(tmp_path / "run" / "08-curate")["kept"]
    assert set(scored["throughput"]) >= {"01-ingest", "02-dedup", "03-filter", "04-crop", "05-caption"}
    mtime = (tmp_path / "run" / "04-crop" / "stats.json").stat().st_mtime_ns
    assert runner.invoke(data_app, ["run", str(spec_file)]).exit_code == 0  # everything is skipped
    assert (tmp_path / "run" / "04-crop" / "stats.json").stat().st_mtime_ns == mtime


def test_bad_pipeline_files_fail_with_one_clear_message(tmp_path):
    for spec, message in [
        ({"out": "x"}, "needs 'out'"),
        ({"out": "x", "stages": [{"stage": "polish"}]}, "needs 'stage:' one of"),
        ({"out": "x", "stages": [{"stage": "crop", "sise": 3}], "input": "y"}, "unknown crop stage setting"),
        ({"out": "x", "stages": [{"stage": "crop"}]}, "has no input"),
        ({"out": "x", "stages": [{"stage": "crop"}], "workerz": 2}, "unknown pipeline key"),
    ]:
        try:
            run_pipeline(spec, progress=False)
        except EdgefusionError as err:
            assert message in str(err)
        else:
            raise AssertionError(f"{spec} was accepted")
