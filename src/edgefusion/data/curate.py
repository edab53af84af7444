"""Stage ``curate``: a review queue, automatic pre-filters, and applying decisions.

The paper curates its synthetic set by hand (synt -> synt-cur): removing images with artifacts and
correcting inexact prompts. Here automatic pre-filters do the obvious part (a CLIP-score floor;
in the toy world also "the caption states what the attribute classifier sees") and put the rest
in a queue that ``edgefusion data review`` walks in the terminal and ``edgefusion review serve``
shows in the browser (the queue is a curation task of the review database, an SQLite file by
default): accept, reject or edit the caption, each with a reason. ``curate --apply`` then writes
the curated dataset: rejected samples go to ``rejects.jsonl`` with the reviewers' reasons, edited
captions replace the old ones (kept as ``original_text``). Re-building the queue never overwrites
a decision already made.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefusion.config import require
from edgefusion.data.dataset import Item, iter_rows
from edgefusion.data.images import DEFAULT_MAX_PIXELS
from edgefusion.data.registry import SCORERS, Scorer, built_once
from edgefusion.data.review_db import describe, is_postgres, open_database
from edgefusion.data.review_queue import (
    CURATE,
    PENDING_POLICIES,
    add_item,
    curate_task,
    dataset_file_name,
    get_task,
    list_tasks,
    record_answer,
    status_counts,
    task_decisions,
)
from edgefusion.data.runner import Outcome, RunOptions, finished_output, read_images, run_dataset_stage
from edgefusion.data.select import Decision, SelectStage
from edgefusion.errors import EdgefusionError


@dataclass
class CurateConfig:
    """Pre-filter thresholds, the scorer (one a world registered, such as ``toy``, or
    ``module:factory``) and its evaluator, the queue file, and what ``--apply`` does with samples
    nobody decided (``keep`` or ``drop``)."""

    db: str | None = None
    scorer: str = "toy"
    evaluator: str = "toy:evaluator"
    min_clip_score: float | None = None
    check_attributes: bool = False
    pending: str = "keep"
    batch_size: int = 64
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        require(self.pending in PENDING_POLICIES, f"pending must be one of {', '.join(PENDING_POLICIES)}")


@dataclass
class ScoreStage:
    """Pre-filter scores per sample (rows only, no files), resumable like every stage; ``factory``
    is the scorer's, looked up where the run starts."""

    config: CurateConfig
    factory: Callable[[str], Scorer]
    name: str = "curate"
    writes_images: bool = False

    def process(self, items: list[Item]) -> list[Outcome]:
        readable, outcomes = read_images(items, self.config.max_pixels)
        scorer = built_once(self.factory, self.config.evaluator)
        for start in range(0, len(readable), self.config.batch_size):
            batch = readable[start : start + self.config.batch_size]
            scores = scorer([image for _, image in batch], [item.row.get("text", "") for item, _ in batch])
            for (item, _), score in zip(batch, scores, strict=True):
                outcomes[item.id] = Outcome(
                    item.id, row={"file": item.path, "text": item.row.get("text", ""), **score}
                )
        return [outcomes[item.id] for item in items]


def default_db(out: str | Path) -> Path:
    """The queue file of a curated output ``out``: ``OUT.review.sqlite`` next to it."""
    out = Path(out)
    return out.with_name(f"{out.name}.review.sqlite")


def queue_location(config: CurateConfig, out: str | Path) -> str:
    """Where the queue of ``out`` lives: ``config.db`` (a file or a ``postgresql://`` URL, kept as
    given) or the default file next to ``out``."""
    return config.db if config.db else str(default_db(out))


class ReviewQueue:
    """The review queue of one dataset: its curation task in a review database (the schema of
    :mod:`edgefusion.review`, so the browser app works on the same queue), with each sample's
    scores, status and the reviewers' answers.

    ``source`` picks the task of that dataset folder (``create``: open it if missing); without it
    the database must hold exactly one curation task, or ``task`` names it.
    """

    def __init__(
        self,
        path: str | Path,
        source: str | Path | None = None,
        *,
        create: bool = False,
        task: str | None = None,
    ) -> None:
        """Open (or create) the queue; a file that is no review database is an error naming it."""
        self.path = path
        self.db = open_database(path)
        try:
            self.task = self._find_task(source, create, task)
        except BaseException:
            self.db.close()
            raise

    def _find_task(self, source: str | Path | None, create: bool, name: str | None) -> Any:
        if source is not None:
            found = curate_task(self.db, source, create=create)
            if found is None:
                raise EdgefusionError(
                    f"the review queue {self.path} has no task for {source}: run `edgefusion data curate` "
                    "without --apply first"
                )
            return found
        if name is not None:
            return get_task(self.db, name)
        tasks = [t for t in list_tasks(self.db) if t.kind == CURATE]
        if len(tasks) != 1:
            names = ", ".join(t.name for t in tasks) or "none"
            raise EdgefusionError(
                f"{self.path} holds {len(tasks)} curation tasks ({names}): name one with --task"
            )
        return tasks[0]

    def close(self) -> None:
        self.db.close()

    def add(self, position: int, row: dict[str, Any], status: str, reason: str | None) -> None:
        """Queue a sample unless it is queued already (decisions already made are kept)."""
        add_item(self.db, self.task, position, row, status, reason)

    def pending(self, limit: int | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM items WHERE task_id = ? AND status = 'pending' ORDER BY position"
        return self.db.query(query + (f" LIMIT {int(limit)}" if limit else ""), (self.task.id,))

    def decide(
        self, item_id: str, action: str, reason: str = "", text: str | None = None, by: str = "reviewer"
    ) -> None:
        """Record ``by``'s decision: ``accept``, ``reject`` (with a reason) or ``edit`` (a new
        caption), replacing their earlier one on the sample."""
        record_answer(self.db, self.task, by, item_id, action, reason, text, replace=True)

    def counts(self) -> dict[str, int]:
        return status_counts(self.db, self.task)

    def decisions(self, pending: str) -> dict[str, Decision]:
        """Per-sample decisions for :class:`SelectStage` under the ``pending`` policy."""
        return task_decisions(self.db, self.task, pending)


def build_queue(
    source: str | Path, out: str | Path, config: CurateConfig, options: RunOptions | None = None
) -> str:
    """Score every sample of ``source``, apply the pre-filters, and queue the rest for review;
    return where the queue is."""
    options = options or RunOptions()
    location = queue_location(config, out)
    scores_dir = Path(out).with_name(f".{Path(out).name}.scores")
    run_dataset_stage(ScoreStage(config, SCORERS.get(config.scorer)), source, scores_dir, options)

    def relative(path: str) -> str:
        try:
            return dataset_file_name(Path(source), path)
        except ValueError:  # no file inside the dataset: nothing to show
            return ""

    queue = ReviewQueue(location, source, create=True)
    with queue.db.transaction():
        queued = 0
        for position, row in enumerate(iter_rows(scores_dir)):
            reason = _prefilter_reason(row, config)
            queue.add(
                position, {**row, "file": relative(row["file"])}, "rejected" if reason else "pending", reason
            )
            queued = position + 1
        for position, row in enumerate(iter_rows(scores_dir, "rejects.jsonl"), start=queued):
            unreadable = {"id": row["id"], "file": relative(row.get("source", "")), "text": ""}
            queue.add(position, unreadable, "rejected", row["reason"])
    queue.close()
    shutil.rmtree(scores_dir, ignore_errors=True)
    return location


def _prefilter_reason(row: dict[str, Any], config: CurateConfig) -> str | None:
    if config.min_clip_score is not None and row.get("clip_score") is not None:
        if row["clip_score"] < config.min_clip_score:
            return f"clip score: {row['clip_score']:.3f} < {config.min_clip_score}"
    if config.check_attributes and row.get("attributes_ok") is False:
        return "attributes: the caption states what the image does not show"
    return None


def apply_decisions(
    source: str | Path,
    out: str | Path,
    config: CurateConfig,
    options: RunOptions | None = None,
    extra_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the curated dataset: the queue's decisions applied to ``source``."""
    location = queue_location(config, out)
    if not is_postgres(location) and not Path(location).is_file():
        raise EdgefusionError(
            f"no review queue at {location}: run `edgefusion data curate` without --apply first"
        )
    queue = ReviewQueue(location, source)
    decisions, counts = queue.decisions(config.pending), queue.counts()
    queue.close()
    stage = SelectStage("curate", config, decisions)
    extra = {"review": counts, "review_db": describe(location), **(extra_stats or {})}
    return run_dataset_stage(stage, source, out, options, extra)


def curate_run(
    source: str | Path, out: str | Path, config: CurateConfig, options: RunOptions | None = None
) -> dict[str, Any]:
    """Queue, pre-filter and apply in one go (the pipeline's ``curate``): human decisions already
    in the queue are applied, undecided samples follow ``config.pending``."""
    options = options or RunOptions()
    finished = finished_output("curate", config, str(Path(source).resolve()), Path(out), options)
    if finished is not None:
        return finished
    started = time.perf_counter()
    build_queue(source, out, config, options)
    scoring = {"prepare_seconds": round(time.perf_counter() - started, 3)}  # the scoring pass
    return apply_decisions(source, out, config, options, scoring)
