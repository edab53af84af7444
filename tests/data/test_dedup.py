"""Dedup: the BK-tree finds what brute force finds; duplicates go, the largest copy stays."""

from __future__ import annotations

import json
import random
from pathlib import Path

from made_images import jpeg_bytes, png_bytes, scene_image
from PIL import Image

from edgefusion.data.dataset import iter_rows
from edgefusion.data.dedup import BKTree, DedupConfig, dedup
from edgefusion.data.runner import RunOptions

QUIET = RunOptions(progress=False)


def test_bk_tree_lookup_equals_brute_force():
    rng = random.Random(0)
    values = [rng.getrandbits(64) for _ in range(300)]
    values += [v ^ (1 << rng.randrange(64)) for v in values[:50]]  # close neighbours
    tree = BKTree()
    for i, v in enumerate(values):
        tree.add(v, i)
    for query in values[::7] + [rng.getrandbits(64) for _ in range(20)]:
        for radius in (0, 3, 12):
            brute = {
                (i, (v ^ query).bit_count())
                for i, v in enumerate(values)
                if (v ^ query).bit_count() <= radius
            }
            assert set(tree.within(query, radius)) == brute


def _dataset(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir()
    with (folder / "metadata.jsonl").open("w") as meta:
        for name, data in files.items():
            (folder / name).write_bytes(data)
            meta.write(json.dumps({"file_name": name, "text": name}) + "\n")
    return folder


def test_exact_and_near_duplicates_removed_keeping_the_largest_copy(tmp_path):
    original = scene_image(64, 1)
    files = {
        "a.png": png_bytes(original),
        "b.png": png_bytes(original),  # exact copy
        "c.jpg": jpeg_bytes(original.resize((80, 80), Image.Resampling.BICUBIC), 90),  # larger near copy
        "d.png": png_bytes(scene_image(64, 2)),
        "e.png": png_bytes(scene_image(64, 3)),
        "f.jpg": jpeg_bytes(scene_image(64, 3), 70),  # re-encoded copy of e, same size
    }
    stats = dedup(_dataset(tmp_path / "in", files), tmp_path / "out", options=QUIET)
    assert [r["id"] for r in iter_rows(tmp_path / "out")] == ["c", "d", "e"]
    rejects = {r["id"]: r for r in iter_rows(tmp_path / "out", "rejects.jsonl")}
    assert {k: (r["reason"].split(":")[0], r["duplicate_of"]) for k, r in rejects.items()} == {
        "a": ("near duplicate", "c"),
        "b": ("near duplicate", "c"),
        "f": ("near duplicate", "e"),
    }
    assert stats["reject_reasons"] == {"near duplicate": 3}
    exact_only = dedup(tmp_path / "in", tmp_path / "exact", DedupConfig(near=False), QUIET)
    assert exact_only["reject_reasons"] == {"exact duplicate": 1}
    assert [r["id"] for r in iter_rows(tmp_path / "exact", "rejects.jsonl")] == ["b"]


def test_similar_layouts_with_other_colours_are_not_duplicates(tmp_path):
    """pHash sees only brightness structure; the thumbnail check keeps distinct colourings apart."""
    base = scene_image(64, 4)
    recoloured = Image.merge("RGB", base.split()[::-1])
    files = {"x.png": png_bytes(base), "y.png": png_bytes(recoloured)}
    stats = dedup(_dataset(tmp_path / "in", files), tmp_path / "out", options=QUIET)
    assert stats["kept"] == 2
    loose = dedup(
        tmp_path / "in", tmp_path / "loose", DedupConfig(hash_threshold=64, thumbnail_threshold=None), QUIET
    )
    assert loose["kept"] == 1  # the hash alone, at the loosest threshold, merges them


def test_toy_web_duplicates_found(toy_web, tmp_path):
    from edgefusion.data.ingest import ingest
    from edgefusion.toy.scoring import score_dedup

    ingest(toy_web, tmp_path / "ingest", options=QUIET)
    stats = dedup(tmp_path / "ingest", tmp_path / "dedup", options=QUIET)
    scored = score_dedup(tmp_path / "dedup", stats)
    assert scored["duplicates"] > 10
    assert scored["precision"] >= 0.9 and scored["recall"] >= 0.9
