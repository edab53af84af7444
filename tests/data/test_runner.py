"""The stage runner: a killed run resumes to the same output; workers and engines agree."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgefusion.data.crop import CropConfig, CropStage, crop
from edgefusion.data.dataset import Item, read_dataset
from edgefusion.data.ingest import ingest
from edgefusion.data.runner import RunOptions, run_stage
from edgefusion.errors import EdgefusionError


def folder_contents(folder: Path) -> dict[str, bytes]:
    """Every file of a stage output except the run's own timings in stats.json."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "stats.json"}
    stats = json.loads((folder / "stats.json").read_text())
    stats.pop("run")
    files["stats.json"] = json.dumps(stats, sort_keys=True).encode()
    return files


@pytest.fixture(scope="module")
def ingested(toy_web, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ingested") / "ingest"
    ingest(toy_web, out, options=RunOptions(progress=False))
    return out


class Killed(Exception):
    pass


@dataclass
class KilledAfter(CropStage):
    """The crop stage, killed after ``limit`` items have been processed in this process."""

    limit: int = 0
    seen: int = 0

    def process(self, items: list[Item]) -> list:
        self.seen += len(items)
        if self.seen > self.limit:
            raise Killed
        return super().process(items)


def test_killed_run_resumes_to_the_uninterrupted_output(ingested, tmp_path):
    config = CropConfig(size=48)
    options = RunOptions(chunk_size=16, progress=False)
    crop(ingested, tmp_path / "whole", config, options)
    with pytest.raises(Killed):
        run_stage(
            KilledAfter(config, limit=40),
            read_dataset(ingested),
            tmp_path / "resumed",
            options,
            str(ingested),
        )
    partial = tmp_path / ".resumed.partial"
    assert not (tmp_path / "resumed").exists() and len(list((partial / ".progress").glob("0*.json"))) == 2
    (partial / ".00000099.png.tmp").write_bytes(b"half a file")  # a write the kill cut short
    stats = crop(ingested, tmp_path / "resumed", config, options)
    assert stats["run"]["samples_this_run"] == 120 - 32  # the committed chunks were not redone
    assert folder_contents(tmp_path / "resumed") == folder_contents(tmp_path / "whole")
    assert not partial.exists()


def test_finished_stage_is_skipped_and_partial_with_other_settings_refused(ingested, tmp_path):
    options = RunOptions(chunk_size=16, progress=False)
    crop(ingested, tmp_path / "out", CropConfig(size=48), options)
    before = (tmp_path / "out" / "stats.json").stat().st_mtime_ns
    again = crop(ingested, tmp_path / "out", CropConfig(size=48), options)
    assert (tmp_path / "out" / "stats.json").stat().st_mtime_ns == before and again["kept"] == 120
    with pytest.raises(Killed):
        stage = KilledAfter(CropConfig(size=48), limit=20)
        run_stage(stage, read_dataset(ingested), tmp_path / "b", options, str(ingested))
    with pytest.raises(EdgefusionError, match="partial run with other settings"):
        crop(ingested, tmp_path / "b", CropConfig(size=40), options)
    assert crop(ingested, tmp_path / "b", CropConfig(size=40), RunOptions(overwrite=True, progress=False))[
        "kept"
    ]


def test_process_pool_output_equals_single_process(ingested, tmp_path):
    crop(ingested, tmp_path / "one", CropConfig(size=48), RunOptions(chunk_size=16, progress=False))
    crop(
        ingested, tmp_path / "two", CropConfig(size=48), RunOptions(chunk_size=16, workers=2, progress=False)
    )
    assert folder_contents(tmp_path / "two") == folder_contents(tmp_path / "one")


def test_ray_engine_output_equals_local(ingested, tmp_path):
    ray = pytest.importorskip("ray")
    options = RunOptions(chunk_size=32, progress=False)
    crop(ingested, tmp_path / "local", CropConfig(size=48), options)
    try:
        crop(
            ingested,
            tmp_path / "ray",
            CropConfig(size=48),
            RunOptions(chunk_size=32, engine="ray", progress=False),
        )
    finally:
        ray.shutdown()
    assert folder_contents(tmp_path / "ray") == folder_contents(tmp_path / "local")


def test_an_existing_folder_that_is_no_stage_output_is_never_replaced(ingested, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(EdgefusionError, match="not a finished stage output"):
        crop(ingested, tmp_path / "mine", CropConfig(size=48), RunOptions(progress=False))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
