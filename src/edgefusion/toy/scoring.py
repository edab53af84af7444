"""``edgefusion data score``: a curation run's decisions against the toy world's exact flaw labels.

The toy web set (``edgefusion toy data --kind web``) labels every flaw it made, and those labels
travel through ``ingest`` as metadata fields. So each decision can be checked: duplicates removed
(precision and recall over duplicate groups, any kept copy counts), upscaled images filtered,
crops that keep the whole subject of off-centre images, captions that state the image's true
attributes (before and after recaptioning), throughput, and the size of each dataset of the
paper's Table 8 ladder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgefusion.data.dataset import iter_rows, read_stats
from edgefusion.errors import EdgefusionError
from edgefusion.toy.curation import caption_agrees
from edgefusion.toy.web import box_contains, center_crop_box


def stage_dirs(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Finished stage outputs of a run, in folder-name order (the pipeline numbers them)."""
    if not Path(run_dir).is_dir():
        raise EdgefusionError(
            f"run folder {run_dir} not found: give the `out` folder of `edgefusion data run`"
        )
    found = [(p, read_stats(p)) for p in sorted(Path(run_dir).iterdir()) if (p / "stats.json").is_file()]
    if not found:
        raise EdgefusionError(f"{run_dir} holds no finished stage outputs (no */stats.json)")
    return found


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def score_dedup(folder: Path, stats: dict[str, Any]) -> dict[str, Any]:
    """Precision and recall of duplicate removal; a removal is right when the kept copy it names
    is of the same duplicate group (so keeping the larger copy instead of the original is right)."""
    rows = list(iter_rows(Path(stats["input"])))
    root = {r["id"]: Path(r["duplicate_of"]).stem if r.get("duplicate_of") else r["id"] for r in rows}
    group_sizes: dict[str, int] = {}
    for r in rows:
        group_sizes[root[r["id"]]] = group_sizes.get(root[r["id"]], 0) + 1
    expected = sum(size - 1 for size in group_sizes.values())
    removed = [r for r in iter_rows(folder, "rejects.jsonl") if "duplicate_of" in r]
    correct = sum(1 for r in removed if root.get(r["id"]) == root.get(r["duplicate_of"]))
    return {
        "duplicates": expected,
        "removed": len(removed),
        "correct": correct,
        "precision": _ratio(correct, len(removed)),
        "recall": _ratio(correct, expected),
    }


def score_filter(folder: Path, stats: dict[str, Any]) -> dict[str, Any]:
    """The upscale detector against the ``low_resolution`` label, over the filter's input."""
    low = {r["id"] for r in iter_rows(Path(stats["input"])) if "low_resolution" in r.get("flaws", [])}
    rejects = list(iter_rows(folder, "rejects.jsonl"))
    upscaled = {r["id"] for r in rejects if r["reason"].startswith("upscaled")}
    removed = {r["id"] for r in rejects}
    pixel_flawed = {
        r["id"]
        for r in iter_rows(Path(stats["input"]))
        if {"low_resolution", "jpeg_artifacts"} & set(r.get("flaws", []))
    }
    return {
        "low_resolution_in": len(low),
        "flagged_upscaled": len(upscaled),
        "upscaled_precision": _ratio(len(upscaled & low), len(upscaled)),
        "upscaled_recall": _ratio(len(upscaled & low), len(low)),
        "low_resolution_removed_any_reason": _ratio(len(removed & low), len(low)),
        "removed_without_pixel_flaw": len(removed - pixel_flawed),
        "reasons": stats.get("reject_reasons", {}),
    }


def score_crop(folder: Path) -> dict[str, Any]:
    """Off-centre images whose chosen crop holds the whole labelled subject (vs the centre crop)."""
    off = [r for r in iter_rows(folder) if "subject_box" in r and "crop_source_box" in r]
    kept = sum(box_contains(r["crop_source_box"], r["subject_box"]) for r in off)
    centre = sum(box_contains(center_crop_box(*r["source_size"]), r["subject_box"]) for r in off)
    return {
        "off_center": len(off),
        "whole_subject": _ratio(kept, len(off)),
        "whole_subject_center_crop": _ratio(centre, len(off)),
    }


def _labelled(folder: Path) -> list[dict[str, Any]]:
    """The rows of ``folder`` whose scene is known (their ``record``)."""
    return [r for r in iter_rows(folder) if "record" in r]


def _agreement(rows: list[dict[str, Any]], key: str) -> float | None:
    """Share of ``rows`` whose caption under ``key`` is true of their scene."""
    return _ratio(sum(caption_agrees(r.get(key, ""), r["record"]) for r in rows), len(rows))


def score_captions(folder: Path) -> dict[str, Any]:
    """Share of captions true of the image, after recaptioning and before (``original_text``)."""
    rows = _labelled(folder)
    return {
        "samples": len(rows),
        "agreement": _agreement(rows, "text"),
        "agreement_before": _agreement(rows, "original_text"),
    }


def score_raw_captions(folder: Path) -> dict[str, Any]:
    """Share of a dataset's captions that are true of its images (where the attributes are known)."""
    rows = _labelled(folder)
    return {"caption_agreement": _agreement(rows, "text")} if rows else {}


_LADDER = (
    ("L-orig", ("ingest",)),
    ("L-pp", ("crop",)),
    ("L-pps", ("caption",)),
    ("synt", ("synthesize",)),
    ("synt-cur", ("curate",)),
)


def score_run(run_dir: str | Path) -> dict[str, Any]:
    """Every metric the run's stages allow, keyed by stage, plus throughput and the dataset ladder."""
    stages = stage_dirs(Path(run_dir))
    result: dict[str, Any] = {"run": str(run_dir), "stages": {}, "throughput": {}}
    for folder, stats in stages:
        name = stats["stage"]
        scored: dict[str, Any] = {"in": stats.get("samples_in"), "kept": stats.get("kept")}
        if name in ("ingest", "synthesize", "curate"):
            scored.update(score_raw_captions(folder))
        elif name == "dedup":
            scored.update(score_dedup(folder, stats))
        elif name == "filter":
            scored.update(score_filter(folder, stats))
        elif name == "crop":
            scored.update(score_crop(folder))
        elif name == "caption":
            scored.update(score_captions(folder))
        result["stages"][folder.name] = scored
        run = stats.get("run", {})
        seconds = run.get("seconds_this_run", 0) + stats.get("prepare_seconds", 0)
        if seconds and run.get("samples_this_run") == stats.get("samples_in"):
            result["throughput"][folder.name] = round(stats["samples_in"] / seconds, 1)
    result["ladder"] = {
        label: stats["kept"]
        for label, names in _LADDER
        for _, stats in stages[::-1]
        if stats["stage"] in names
    }
    return result
