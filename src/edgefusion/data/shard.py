"""Stage ``shard``: WebDataset tar shards, a JSONL manifest and a dataset card.

A shard holds ``KEY.EXT`` (the image), ``KEY.txt`` (the caption) and ``KEY.json`` (the metadata
row) per sample, the layout ``webdataset.WebDataset`` and img2dataset use. Shards are written
with the standard library (no torch import in workers) under a temporary name and renamed when
complete, so a re-run keeps finished shards and rewrites only the rest. The card
(``README.md``) follows the run back through each stage's ``stats.json`` and reports how many
samples each stage kept, why the others were removed, and caption statistics.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import statistics
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefusion.atomic import atomic_file, make_output_dir, write_text_atomic
from edgefusion.config import config_to_dict, require
from edgefusion.data.dataset import REJECTS_FILE, Item, dataset_size, iter_rows, read_dataset, read_stats
from edgefusion.data.runner import reason_kind
from edgefusion.errors import EdgefusionError

MANIFEST_FILE = "manifest.jsonl"
CARD_FILE = "README.md"


@dataclass
class ShardConfig:
    """Samples per shard, the shard file name pattern, and the dataset title on its card."""

    shard_size: int = 1000
    pattern: str = "shard-{index:05d}.tar"
    title: str = "dataset"

    def __post_init__(self) -> None:
        require(self.shard_size >= 1, "shard_size must be at least 1")


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # identical inputs give byte-identical shards
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, items: list[Item]) -> dict[str, Any]:
    """Write one tar atomically; returns its manifest entry."""
    with atomic_file(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for item in items:
                row = {"id": item.id, **item.row}
                _add_member(tar, f"{item.id}.{item.ext or 'png'}", item.read())
                _add_member(tar, f"{item.id}.txt", str(row.get("text", "")).encode("utf-8"))
                _add_member(tar, f"{item.id}.json", json.dumps(row, ensure_ascii=False).encode("utf-8"))
        return {
            "shard": path.name,
            "samples": len(items),
            "bytes": tmp.stat().st_size,
            "sha256": hashlib.sha256(tmp.read_bytes()).hexdigest(),
            "first": items[0].id,
            "last": items[-1].id,
        }


def shard(
    source: str | Path, out: str | Path, config: ShardConfig | None = None, overwrite: bool = False
) -> dict:
    """Write the dataset ``source`` as tar shards with ``manifest.jsonl`` and ``README.md`` in ``out``."""
    config = config or ShardConfig()
    source, out = Path(source), Path(out)
    if (out / "stats.json").exists() and not overwrite:
        return read_stats(out)
    if overwrite and out.exists():
        shutil.rmtree(out)
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_FILE).exists():
        raise EdgefusionError(f"{out} exists and holds no shards: choose another --out or pass --overwrite")
    make_output_dir(out)
    entries = []
    batch: list[Item] = []
    index = 0

    def flush() -> None:
        nonlocal index
        path = out / config.pattern.format(index=index)
        entry = _existing_entry(out, path.name, batch) or write_shard(path, batch)
        entries.append(entry)
        _save_manifest(out, entries)
        index += 1

    reasons: Counter[str] = Counter()
    with (out / REJECTS_FILE).open("w", encoding="utf-8") as rejects:
        for item in read_dataset(source):
            error = item.error or (
                None if item.path and Path(item.path).is_file() else "unreadable file: missing"
            )
            if error is not None:
                rejects.write(json.dumps({"id": item.id, "stage": "shard", "reason": error}) + "\n")
                reasons[reason_kind(error)] += 1
                continue
            batch.append(item)
            if len(batch) == config.shard_size:
                flush()
                batch = []
        if batch:
            flush()
    kept = sum(e["samples"] for e in entries)
    stats = {
        "stage": "shard",
        "input": str(source.resolve()),
        "config": config_to_dict(config),
        "samples_in": kept + sum(reasons.values()),
        "kept": kept,
        "rejected": sum(reasons.values()),
        "reject_reasons": dict(sorted(reasons.items())),
        "shards": len(entries),
    }
    (out / CARD_FILE).write_text(dataset_card(source, config.title, stats), encoding="utf-8")
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def _existing_entry(out: Path, name: str, batch: list[Item]) -> dict[str, Any] | None:
    """The manifest entry of a shard a previous run finished with the same samples (and intact), if any."""
    manifest = out / MANIFEST_FILE
    if not (out / name).exists() or not manifest.exists():
        return None
    for entry in iter_rows(out, MANIFEST_FILE):
        if entry["shard"] == name and (entry["first"], entry["last"], entry["samples"]) == (
            batch[0].id,
            batch[-1].id,
            len(batch),
        ):
            return entry if hashlib.sha256((out / name).read_bytes()).hexdigest() == entry["sha256"] else None
    return None


def _save_manifest(out: Path, entries: list[dict[str, Any]]) -> None:
    write_text_atomic(out / MANIFEST_FILE, "".join(json.dumps(e) + "\n" for e in entries))


def lineage(dataset: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The stage outputs that led to ``dataset``, first stage first, read from ``stats.json``."""
    chain = []
    current: Path | None = Path(dataset)
    while current is not None and (current / "stats.json").exists() and len(chain) < 64:
        stats = read_stats(current)
        if "stage" not in stats:  # a dataset not written by a stage (e.g. the toy writer's)
            break
        chain.append((current, stats))
        current = Path(stats["input"]) if stats.get("input") else None
    return chain[::-1]


def caption_statistics(texts: Iterable[str]) -> dict[str, Any]:
    """Word counts and vocabulary of captions: what a card reader wants to know about the text."""
    lengths, words = [], Counter()
    for text in texts:
        tokens = text.lower().replace(",", " ").split()
        lengths.append(len(tokens))
        words.update(tokens)
    if not lengths:
        return {"captions": 0}
    return {
        "captions": len(lengths),
        "empty": sum(1 for n in lengths if n == 0),
        "words_mean": round(statistics.fmean(lengths), 2),
        "words_median": statistics.median(lengths),
        "words_max": max(lengths),
        "vocabulary": len(words),
        "top_words": [w for w, _ in words.most_common(15)],
    }


def dataset_card(dataset: Path, title: str, shard_stats: dict[str, Any]) -> str:
    """A markdown dataset card: stage counts, removal reasons, caption statistics."""
    lines = [
        f"# {title}",
        "",
        f"{shard_stats['kept']} image-text pairs in {shard_stats['shards']} WebDataset shards "
        "(`KEY.png|jpg`, `KEY.txt`, `KEY.json`); `manifest.jsonl` lists them with SHA-256.",
        "",
        "## Stages",
        "",
        "| stage | in | kept | removed | reasons |",
        "| --- | --- | --- | --- | --- |",
    ]
    for folder, stats in lineage(dataset):
        reasons = ", ".join(f"{k} {v}" for k, v in stats.get("reject_reasons", {}).items()) or "-"
        counts = " | ".join(str(stats.get(key, "-")) for key in ("samples_in", "kept", "rejected"))
        lines.append(f"| {stats['stage']} (`{folder.name}`) | {counts} | {reasons} |")
    caps = caption_statistics(row.get("text", "") for row in iter_rows(dataset))
    lines += ["", "## Captions", ""]
    lines += [f"- {key.replace('_', ' ')}: {value}" for key, value in caps.items()]
    lines += ["", f"Source dataset: `{dataset}` ({dataset_size(dataset)} samples).", ""]
    return "\n".join(lines)
