"""Ingest from image folders, CSV, parquet and WebDataset tars; hostile inputs are logged, not lost."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from made_images import hostile_files, png_bytes, scene_image

from edgefusion.data.dataset import iter_rows, read_stats
from edgefusion.data.ingest import ingest
from edgefusion.data.runner import RunOptions

QUIET = RunOptions(progress=False)


def _write_folder(folder: Path) -> Path:
    folder.mkdir()
    lines = []
    for name, data in hostile_files().items():
        (folder / name).write_bytes(data)
        lines.append(json.dumps({"file_name": name, "text": f"caption of {name}"}).encode())
    lines.append(b'{"file_name": "good.png", "text": "bad \xff\xfe utf-8", "id": "badtext"}')
    lines.append(b'{"file_name": "missing.png", "text": "no such file"}')
    lines.append(b"{not json")
    (folder / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def _reasons(out: Path) -> dict[str, str]:
    return {r["id"]: r["reason"] for r in iter_rows(out, "rejects.jsonl")}


def test_imagefolder_ingest_keeps_good_images_and_records_every_reject(tmp_path):
    source = _write_folder(tmp_path / "raw")
    stats = ingest(source, tmp_path / "out", options=QUIET)
    kept = {r["id"]: r for r in iter_rows(tmp_path / "out")}
    reasons = _reasons(tmp_path / "out")
    assert set(kept) == {"good", "good2", "cmyk", "sixteen"}
    assert kept["cmyk"]["file_name"] == "cmyk.png" and kept["cmyk"]["source_mode"] == "CMYK"
    assert kept["good2"]["file_name"] == "good2.jpg"  # an RGB JPEG keeps its bytes
    assert (tmp_path / "out" / "good2.jpg").read_bytes() == hostile_files()["good2.jpg"]
    assert reasons["bomb"].startswith("decompression bomb")
    assert reasons["truncated"].startswith("undecodable")
    assert reasons["badtext"] == "caption is not valid UTF-8"
    assert reasons["missing"].startswith("unreadable file")
    assert reasons["line-00000012"].startswith("bad metadata line 12")
    assert stats["samples_in"] == 12 == stats["kept"] + stats["rejected"]
    assert read_stats(tmp_path / "out")["reject_reasons"]["undecodable"] == 4


def test_folder_of_images_with_sidecar_captions(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(png_bytes(scene_image(32, 1)))
    (raw / "a.txt").write_text("a caption\n", encoding="utf-8")
    (raw / "b.png").write_bytes(png_bytes(scene_image(32, 2)))
    (raw / "b.txt").write_bytes(b"caf\xe9")  # Latin-1, not UTF-8
    ingest(raw, tmp_path / "out", options=QUIET)
    assert [(r["id"], r["text"]) for r in iter_rows(tmp_path / "out")] == [("a", "a caption")]
    assert _reasons(tmp_path / "out") == {"b": "caption is not valid UTF-8 (b.txt)"}


def test_csv_and_parquet_tables(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "img").mkdir()
    for i in range(3):
        (tmp_path / "img" / f"{i}.png").write_bytes(png_bytes(scene_image(32, i)))
    (tmp_path / "table.csv").write_bytes(
        b"path,caption,score\nimg/0.png,zero,1\nimg/1.png,\xff\xfe,2\nimg/2.png,two,3\n,none,4\n"
    )
    ingest(tmp_path / "table.csv", tmp_path / "from-csv", options=QUIET)
    assert [(r["id"], r["text"], r["score"]) for r in iter_rows(tmp_path / "from-csv")] == [
        ("00000000", "zero", "1"),
        ("00000002", "two", "3"),
    ]
    assert _reasons(tmp_path / "from-csv") == {
        "00000001": "caption is not valid UTF-8",
        "00000003": "row 3 has no 'path' value",
    }
    table = pa.table({"image": ["img/0.png", "img/2.png"], "text": ["zero", "two"]})
    pq.write_table(table, tmp_path / "table.parquet")
    from edgefusion.data.ingest import IngestConfig

    config = IngestConfig(path_column="image", caption_column="text")
    ingest(tmp_path / "table.parquet", tmp_path / "from-parquet", config, QUIET)
    assert [r["text"] for r in iter_rows(tmp_path / "from-parquet")] == ["zero", "two"]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_tars(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "000.tar", "w") as tar:
        _add(tar, "s/k1.jpg", hostile_files()["good2.jpg"])
        _add(tar, "s/k1.txt", b"first")
        _add(tar, "s/k1.json", b'{"url": "http://x"}')
        _add(tar, "s/k2.png", hostile_files()["truncated.jpg"])
        _add(tar, "s/k2.txt", b"second")
        _add(tar, "s/k3.txt", b"no image")
    (shards / "001.tar").write_bytes(b"not a tar at all" * 40)
    ingest(shards, tmp_path / "out", options=QUIET)
    kept = list(iter_rows(tmp_path / "out"))
    assert [(r["id"], r["text"], r["url"]) for r in kept] == [("s_k1", "first", "http://x")]
    reasons = _reasons(tmp_path / "out")
    assert reasons["s_k2"].startswith("undecodable")
    assert reasons["s_k3"].startswith("no image in tar sample")
    assert reasons["001-unreadable"].startswith("unreadable tar 001.tar")
