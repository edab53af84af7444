"""Stage ``dedup``: remove exact and near duplicates, keeping the highest-resolution copy.

Exact duplicates share a SHA-256 of their bytes. Near duplicates (resized, re-encoded copies) are
found in two steps, because a perceptual hash alone confuses different images of similar layout
(on the toy set thousands of distinct pairs lie within a few bits): candidates are pairs whose
perceptual hashes (imagehash's pHash) lie within ``hash_threshold`` bits, looked up in a BK-tree;
a candidate is confirmed when small colour thumbnails of the two images agree (the 95th
percentile of per-pixel differences is at most ``thumbnail_threshold``). Confirmed pairs are
joined into clusters, and each cluster keeps its largest image (ties: the first in input order).

Memory: hashes and thumbnails of all samples (about 100 bytes each) are held during the
decision; images are streamed.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgefusion.config import require
from edgefusion.data.dataset import Item, iter_rows
from edgefusion.data.images import DEFAULT_MAX_PIXELS
from edgefusion.data.runner import Outcome, RunOptions, finished_output, read_image, run_dataset_stage
from edgefusion.data.select import Decision, SelectStage


@dataclass
class DedupConfig:
    """Near-duplicate thresholds; ``thumbnail_threshold`` None trusts the hash alone."""

    hash_size: int = 8
    hash_threshold: int = 12
    thumbnail_size: int = 8
    thumbnail_threshold: float | None = 10.0
    near: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        require(self.hash_size >= 2, "hash_size must be at least 2")
        require(0 <= self.hash_threshold <= self.hash_size**2, "hash_threshold must be 0 .. hash_size^2 bits")
        require(self.thumbnail_size >= 2, "thumbnail_size must be at least 2")


@dataclass
class HashStage:
    """Per-sample fingerprints: SHA-256, pHash, thumbnail, size and shape (rows only, no files)."""

    config: DedupConfig
    name: str = "dedup"
    writes_images: bool = False

    def process(self, items: list[Item]) -> list[Outcome]:
        return [self._fingerprint(item) for item in items]

    def _fingerprint(self, item: Item) -> Outcome:
        import imagehash

        read = read_image(item, self.config.max_pixels)
        if isinstance(read, Outcome):
            return read
        data, image = read[0], read[1].image
        side = self.config.thumbnail_size
        thumbnail = np.asarray(image.resize((side, side), Image.Resampling.BOX), dtype=np.uint8)
        row = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "phash": str(imagehash.phash(image, hash_size=self.config.hash_size)),
            "thumbnail": thumbnail.tobytes().hex(),
            "pixels": image.width * image.height,
            "aspect": round(image.width / image.height, 4),
        }
        return Outcome(item.id, row=row)


# Largest log aspect-ratio difference between near duplicates (rounding when resizing: ~2%).
_ASPECT_TOLERANCE = math.log(1.05)


class BKTree:
    """A Burkhard-Keller tree over integer hashes under the Hamming distance.

    Lookups within ``r`` bits visit only subtrees whose edge distance lies in ``[d - r, d + r]``
    (triangle inequality), instead of comparing against every stored hash.
    """

    def __init__(self) -> None:
        self._root: list | None = None  # [hash, index, {distance: child}]

    def add(self, value: int, index: int) -> None:
        if self._root is None:
            self._root = [value, index, {}]
            return
        node = self._root
        while True:
            d = (node[0] ^ value).bit_count()
            child = node[2].get(d)
            if child is None:
                node[2][d] = [value, index, {}]
                return
            node = child

    def within(self, value: int, radius: int) -> list[tuple[int, int]]:
        """(index, distance) of every stored hash within ``radius`` bits of ``value``."""
        found, stack = [], [self._root] if self._root is not None else []
        while stack:
            node = stack.pop()
            d = (node[0] ^ value).bit_count()
            if d <= radius:
                found.append((node[1], d))
            stack.extend(child for k, child in node[2].items() if d - radius <= k <= d + radius)
        return found


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def thumbnail_distance(a: str, b: str) -> float:
    """95th percentile over pixels of the largest channel difference of two hex thumbnails."""
    pa = np.frombuffer(bytes.fromhex(a), dtype=np.uint8).reshape(-1, 3).astype(np.int16)
    pb = np.frombuffer(bytes.fromhex(b), dtype=np.uint8).reshape(-1, 3).astype(np.int16)
    return float(np.percentile(np.abs(pa - pb).max(axis=1), 95))


def duplicate_decisions(rows: Iterable[dict[str, Any]], config: DedupConfig) -> dict[str, Decision]:
    """Reject decisions for every duplicate, naming the copy that is kept; pure in the rows."""
    rows = list(rows)
    clusters = _UnionFind(len(rows))
    by_sha: dict[str, int] = {}
    tree = BKTree()
    pair_distance: dict[int, tuple[int, float]] = {}
    for i, row in enumerate(rows):
        first = by_sha.setdefault(row["sha256"], i)
        if first != i:
            clusters.union(first, i)
            continue
        if not config.near:
            continue
        value = int(row["phash"], 16)
        for j, bits in tree.within(value, config.hash_threshold):
            if abs(math.log(row["aspect"] / rows[j]["aspect"])) > _ASPECT_TOLERANCE:
                continue  # resized copies keep their shape; thumbnails would hide the difference
            distance = 0.0
            if config.thumbnail_threshold is not None:
                distance = thumbnail_distance(row["thumbnail"], rows[j]["thumbnail"])
                if distance > config.thumbnail_threshold:
                    continue
            clusters.union(j, i)
            pair_distance[i] = (bits, distance)
        tree.add(value, i)
    members: dict[int, list[int]] = {}
    for i in range(len(rows)):
        members.setdefault(clusters.find(i), []).append(i)
    decisions = {}
    for group in members.values():
        keep = max(group, key=lambda i: (rows[i]["pixels"], -i))
        for i in group:
            if i == keep:
                continue
            exact = rows[i]["sha256"] == rows[keep]["sha256"]
            kind = "exact duplicate" if exact else "near duplicate"
            details: dict[str, Any] = {"duplicate_of": rows[keep]["id"]}
            if not exact and i in pair_distance:
                details["phash_bits"], details["thumbnail_distance"] = pair_distance[i]
            decisions[rows[i]["id"]] = Decision(f"{kind}: of {rows[keep]['id']}", details)
    return decisions


def dedup(
    source: str | Path, out: str | Path, config: DedupConfig | None = None, options: RunOptions | None = None
) -> dict[str, Any]:
    """Remove duplicates from the dataset ``source`` into ``out``; rejects name the kept copy."""
    config = config or DedupConfig()
    options = options or RunOptions()
    out = Path(out)
    finished = finished_output("dedup", config, str(Path(source).resolve()), out, options)
    if finished is not None:
        return finished
    hashes_dir = out.with_name(f".{out.name}.hashes")
    hashed = run_dataset_stage(HashStage(config), source, hashes_dir, options)
    decisions = duplicate_decisions(iter_rows(hashes_dir), config)
    for row in iter_rows(hashes_dir, "rejects.jsonl"):
        decisions[row["id"]] = Decision(row["reason"])
    extra = {"prepare_seconds": hashed["run"]["seconds_this_run"]}  # the hashing pass
    stats = run_dataset_stage(SelectStage("dedup", config, decisions), source, out, options, extra)
    shutil.rmtree(hashes_dir, ignore_errors=True)
    return stats
