"""Opening review tasks from datasets and generation folders, and exporting what reviewers decided.

A curation task is tied to its dataset folder (see :func:`curate_task`), so ``edgefusion review
curate`` and ``edgefusion data curate`` on the same folder and database share one task. Items keep
their file names relative to the dataset; a name that is absolute, leads out with ``..`` or is a
symlink out is refused when the task opens (the item is rejected with that reason) and again
whenever an image is served.

An A/B task compares folders written by ``edgefusion generate``: images are matched by (prompt,
seed), and every pair of models on every prompt is one item. Items are handed out in a fixed
shuffled order, so a reviewer does not meet one prompt several times in a row.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from edgefusion.data.dataset import check_dataset_dir, read_dataset
from edgefusion.data.review_db import Database, describe
from edgefusion.data.review_queue import (
    AB,
    CURATE,
    PENDING_POLICIES,
    Task,
    add_item,
    curate_task,
    dataset_file_name,
    free_name,
    get_task,
    insert_task,
    status_counts,
    task_decisions,
)
from edgefusion.data.runner import RunOptions, run_dataset_stage
from edgefusion.data.select import SelectStage
from edgefusion.errors import EdgefusionError
from edgefusion.inputs import read_text_file
from edgefusion.paths import member_path, resolved

#: The log ``edgefusion generate`` writes next to its images.
GENERATIONS_FILE = "generations.jsonl"


def open_curate_task(
    db: Database,
    dataset: str | Path,
    *,
    name: str | None = None,
    overlap: int | None = None,
    by: str | None = None,
) -> tuple[Task, int]:
    """Open (or re-open) the curation task of a dataset folder; return it and the number of
    samples added. Samples whose file name is unsafe are added as rejected, with the reason."""
    folder = check_dataset_dir(Path(dataset))
    with db.transaction():
        task = curate_task(db, folder, create=True, name=name, overlap=overlap, created_by=by)
        before = db.scalar("SELECT COUNT(*) AS n FROM items WHERE task_id = ?", (task.id,))
        position = db.scalar(
            "SELECT COALESCE(MAX(position) + 1, 0) AS n FROM items WHERE task_id = ?", (task.id,)
        )
        for item in read_dataset(folder):
            text = item.row.get("text") if isinstance(item.row.get("text"), str) else ""
            if item.error is not None:
                add_item(
                    db, task, position, {"id": item.id, "file": "", "text": text}, "rejected", item.error
                )
            else:
                file_name = dataset_file_name(folder, item.path)
                add_item(
                    db, task, position, {"id": item.id, "file": file_name, "text": text}, "pending", None
                )
            position += 1
        added = db.scalar("SELECT COUNT(*) AS n FROM items WHERE task_id = ?", (task.id,)) - before
    return task, added


@dataclass
class GenerationRun:
    """One ``edgefusion generate`` folder: its model's name and image file per (prompt, seed)."""

    folder: Path
    model: str
    images: dict[tuple[str, int], str]


def read_generation_run(folder: str | Path) -> GenerationRun:
    """Read ``generations.jsonl`` of a folder ``edgefusion generate`` wrote; every image it lists
    must exist inside the folder."""
    folder = Path(folder)
    log = folder / GENERATIONS_FILE
    if not log.is_file():
        raise EdgefusionError(
            f"{folder} has no {GENERATIONS_FILE}: give folders written by `edgefusion generate`"
        )
    images: dict[tuple[str, int], str] = {}
    models = set()
    for number, line in enumerate(read_text_file(log, "generation log").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key = (record["prompt"], int(record["seed"]))
            name, model = record["file_name"], str(record["model"])
            if not isinstance(key[0], str) or not isinstance(name, str):
                raise TypeError("prompt and file_name must be strings")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise EdgefusionError(f"{log} line {number} is not a generation record ({err})") from None
        path, unsafe = member_path(folder, name)
        if unsafe or not path.is_file():
            raise EdgefusionError(f"{log} line {number}: {unsafe or f'image {name} is missing'}")
        if key in images:
            raise EdgefusionError(f"{log} lists prompt {key[0]!r} with seed {key[1]} twice")
        images[key] = name
        models.add(model)
    if not images:
        raise EdgefusionError(f"{log} lists no images")
    if len(models) > 1:
        raise EdgefusionError(f"{folder} holds images of several models ({', '.join(sorted(models))})")
    return GenerationRun(folder, models.pop(), images)


def open_ab_task(
    db: Database,
    folders: list[str | Path],
    *,
    name: str | None = None,
    overlap: int = 1,
    by: str | None = None,
) -> Task:
    """Open an A/B task over generation folders with the same prompts and seeds (``name``: shown
    to reviewers, so it should not name the models; default ``ab``, ``ab-2`` ...)."""
    if len(folders) < 2:
        raise EdgefusionError("an A/B task needs at least two generation folders")
    if len({resolved(f) for f in folders}) < len(folders):
        raise EdgefusionError("the same generation folder is given twice")
    runs = [read_generation_run(f) for f in folders]
    keys = list(runs[0].images)
    for run in runs[1:]:
        missing = set(keys) ^ set(run.images)
        if missing:
            prompt, seed = sorted(missing)[0]
            raise EdgefusionError(
                f"{runs[0].folder} and {run.folder} differ in prompts or seeds (e.g. {prompt!r} with seed "
                f"{seed}): generate every folder with the same prompts, --seed and --n"
            )
    names = [run.model for run in runs]
    names = [
        f"{n} ({run.folder.name})" if names.count(n) > 1 else n for n, run in zip(names, runs, strict=True)
    ]
    pairs = list(combinations(range(len(runs)), 2))
    order = list(range(len(keys) * len(pairs)))
    random.Random(0).shuffle(order)
    with db.transaction():
        if name is not None and db.query_one("SELECT id FROM tasks WHERE name = ?", (name,)):
            raise EdgefusionError(f"a task named {name!r} exists already: choose another --name")
        # Reviewers see the task's name, so the default one names no model.
        task = insert_task(db, AB, name or free_name(db, "ab"), None, overlap, by)
        for index, (model, run) in enumerate(zip(names, runs, strict=True)):
            db.execute(
                "INSERT INTO task_models (task_id, idx, name, folder) VALUES (?, ?, ?, ?)",
                (task.id, index, model, str(resolved(run.folder))),
            )
        for k, key in enumerate(keys):
            for p, (a, b) in enumerate(pairs):
                item_id = f"{k:05d}-{a}-{b}"
                position = order[k * len(pairs) + p]
                db.execute(
                    "INSERT INTO items (task_id, id, position, file, text) VALUES (?, ?, ?, '', ?)",
                    (task.id, item_id, position, key[0]),
                )
                db.execute(
                    "INSERT INTO pairs (task_id, item_id, seed, model_a, model_b, file_a, file_b) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (task.id, item_id, key[1], a, b, runs[a].images[key], runs[b].images[key]),
                )
    return task


def task_models(db: Database, task: Task) -> list[dict[str, Any]]:
    return db.query("SELECT idx, name, folder FROM task_models WHERE task_id = ? ORDER BY idx", (task.id,))


def image_path(
    db: Database, task: Task, item_id: str, side: str, flipped: bool
) -> tuple[Path | None, str | None]:
    """The image file of an item shown on ``side`` (``main`` for curation, ``left`` / ``right``
    for A/B), checked to stay inside its folder: ``(path, None)`` or ``(None, reason)``."""
    if task.kind == CURATE:
        if side != "main" or task.source is None:
            return None, "no such image"
        item = db.query_one("SELECT file FROM items WHERE task_id = ? AND id = ?", (task.id, item_id))
        return member_path(task.source, item["file"]) if item else (None, "no such item")
    pair = db.query_one("SELECT * FROM pairs WHERE task_id = ? AND item_id = ?", (task.id, item_id))
    if pair is None or side not in ("left", "right"):
        return None, "no such image"
    first, second = ("b", "a") if flipped else ("a", "b")
    which = first if side == "left" else second
    folder = db.scalar(
        "SELECT folder FROM task_models WHERE task_id = ? AND idx = ?", (task.id, pair[f"model_{which}"])
    )
    return member_path(folder, pair[f"file_{which}"])


@dataclass
class ExportConfig:
    """What an export wrote: the task, the pending policy, and a digest of the decisions, so an
    export made before decisions changed is not taken for this one."""

    task: str
    pending: str = "keep"
    decisions: str = ""


def export_task(
    db: Database, ref: str | int, out: str | Path, *, pending: str = "keep", overwrite: bool = False
) -> dict[str, Any]:
    """Write the curated dataset of a curation task into ``out`` (the input's format: kept images,
    ``metadata.jsonl`` with edited captions, ``rejects.jsonl`` with every reviewer's answer,
    ``stats.json``), built under a temporary name and renamed into place."""
    task = get_task(db, ref)
    if task.kind != CURATE:
        raise EdgefusionError(
            f"task {task.name!r} is an A/B task: it has no dataset; see `edgefusion review report`"
        )
    if pending not in PENDING_POLICIES:
        raise EdgefusionError(f"pending must be one of {', '.join(PENDING_POLICIES)}")
    if task.source is None:
        raise EdgefusionError(f"task {task.name!r} has no dataset: run `edgefusion data curate` on it first")
    decisions = task_decisions(db, task, pending)
    canonical = json.dumps(
        {k: [d.reason, d.updates, d.details] for k, d in sorted(decisions.items())},
        sort_keys=True,
        default=str,
    )
    config = ExportConfig(task.name, pending, hashlib.sha256(canonical.encode()).hexdigest()[:16])
    stage = SelectStage("curate", config, decisions)
    extra = {"review": status_counts(db, task), "review_db": describe(db.url), "review_task": task.name}
    options = RunOptions(overwrite=overwrite, progress=False)
    return run_dataset_stage(stage, check_dataset_dir(Path(task.source)), out, options, extra)
