"""Shards: WebDataset reads them back exactly; the manifest and card describe them; resume works."""

from __future__ import annotations

import hashlib
import json

import pytest

from edgefusion.data.dataset import iter_rows
from edgefusion.data.ingest import ingest
from edgefusion.data.runner import RunOptions
from edgefusion.data.shard import ShardConfig, shard


@pytest.fixture(scope="module")
def dataset(toy_web, tmp_path_factory):
    out = tmp_path_factory.mktemp("shard-in") / "ingest"
    ingest(toy_web, out, options=RunOptions(progress=False))
    return out


def test_shards_read_back_by_webdataset(dataset, tmp_path):
    wds = pytest.importorskip("webdataset")
    stats = shard(dataset, tmp_path / "out", ShardConfig(shard_size=50, title="toy web"))
    assert stats["shards"] == 3 and stats["kept"] == 120
    manifest = list(iter_rows(tmp_path / "out", "manifest.jsonl"))
    assert [m["samples"] for m in manifest] == [50, 50, 20]
    for entry in manifest:
        assert hashlib.sha256((tmp_path / "out" / entry["shard"]).read_bytes()).hexdigest() == entry["sha256"]
    urls = [str(tmp_path / "out" / m["shard"]) for m in manifest]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    rows = list(iter_rows(dataset))
    assert [s["__key__"] for s in samples] == [r["id"] for r in rows]
    for sample, row in zip(samples, rows, strict=True):
        ext = row["file_name"].rsplit(".", 1)[1]
        assert sample[ext] == (dataset / row["file_name"]).read_bytes()
        assert sample["txt"].decode() == row["text"]
        assert json.loads(sample["json"])["record"] == row["record"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("# toy web") and "| ingest (`ingest`) | 120 | 120 | 0 | - |" in card
    assert "- captions: 120" in card


def test_resume_keeps_finished_shards(dataset, tmp_path):
    out = tmp_path / "out"
    shard(dataset, out, ShardConfig(shard_size=50))
    first = (out / "shard-00000.tar").stat().st_mtime_ns
    whole = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    (out / "shard-00002.tar").unlink()
    (out / "stats.json").unlink()  # as if killed before the end
    shard(dataset, out, ShardConfig(shard_size=50))
    assert (out / "shard-00000.tar").stat().st_mtime_ns == first
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == whole


def test_missing_image_is_recorded_not_fatal(dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    first = next(iter_rows(copy))
    (copy / first["file_name"]).unlink()
    stats = shard(copy, tmp_path / "out", ShardConfig(shard_size=50))
    assert stats["kept"] == 119 and stats["reject_reasons"] == {"unreadable file": 1}
    assert [r["id"] for r in iter_rows(tmp_path / "out", "rejects.jsonl")] == [first["id"]]
