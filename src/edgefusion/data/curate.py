"""Stage ``curate``: a review queue in SQLite, automatic pre-filters, and applying decisions.

The paper curates its synthetic set by hand (synt -> synt-cur): removing images with artifacts and
correcting inexact prompts. Here automatic pre-filters do the obvious part (a CLIP-score floor;
in the toy world also "the caption states what the attribute classifier sees") and put the rest
in a queue that ``edgefusion data review`` walks in the terminal: accept, reject or edit the
caption, each with a reason. ``curate --apply`` then writes the curated dataset: rejected samples
go to ``rejects.jsonl`` with the reviewer's reason, edited captions replace the old ones (kept as
``original_text``). Re-building the queue never overwrites a decision already made.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgefusion.atomic import make_output_dir
from edgefusion.data.config import import_object, require
from edgefusion.data.dataset import Item, iter_rows
from edgefusion.data.images import DEFAULT_MAX_PIXELS, ImageRejected, decode_image
from edgefusion.data.runner import Outcome, RunOptions, finished_output, run_dataset_stage
from edgefusion.data.select import Decision, SelectStage
from edgefusion.errors import EdgefusionError

ACTIONS = ("accept", "reject", "edit")
PENDING_POLICIES = ("keep", "drop")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    file TEXT NOT NULL,
    text TEXT NOT NULL,
    clip_score REAL,
    attributes_ok INTEGER,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    new_text TEXT,
    decided_by TEXT,
    decided_at REAL
)
"""

Scorer = Callable[[list[Any], list[str]], list[dict[str, Any]]]


@dataclass
class CurateConfig:
    """Pre-filter thresholds, the scorer (``toy`` or ``module:factory``), the queue file, and what
    ``--apply`` does with samples nobody decided (``keep`` or ``drop``)."""

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


def toy_scorer(evaluator: str) -> Scorer:
    """Toy CLIP score of each (image, caption) and whether the caption states what the classifier
    reads from the image."""
    from edgefusion.data.captioners import images_to_unit_tensor, scene_from_predictions
    from edgefusion.data.score import caption_agrees
    from edgefusion.eval.toy import ToyEvaluator

    model = ToyEvaluator(evaluator)

    def score(images: list[Any], texts: list[str]) -> list[dict[str, Any]]:
        side = model.image_size
        batch = images_to_unit_tensor([im.convert("RGB").resize((side, side)) for im in images])
        clip = model.clip_scores(batch, texts).tolist()
        predicted = model.predict(batch)
        results = []
        for i, text in enumerate(texts):
            seen = scene_from_predictions({head: int(values[i]) for head, values in predicted.items()})
            results.append(
                {"clip_score": round(clip[i], 5), "attributes_ok": caption_agrees(text, seen.to_dict())}
            )
        return results

    return score


@lru_cache(maxsize=2)
def load_scorer(kind: str, evaluator: str) -> Scorer:
    if kind == "toy":
        return toy_scorer(evaluator)
    return import_object(kind, "curation scorer")(evaluator)


@dataclass
class ScoreStage:
    """Pre-filter scores per sample (rows only, no files), resumable like every stage."""

    config: CurateConfig
    name: str = "curate"
    writes_images: bool = False

    def process(self, items: list[Item]) -> list[Outcome]:
        outcomes: dict[str, Outcome] = {}
        readable = []
        for item in items:
            try:
                readable.append((item, decode_image(item.read(), self.config.max_pixels).image))
            except OSError as err:
                outcomes[item.id] = Outcome.rejected(item.id, f"unreadable file: {err.strerror or err}")
            except ImageRejected as err:
                outcomes[item.id] = Outcome.rejected(item.id, str(err))
        scorer = load_scorer(self.config.scorer, self.config.evaluator)
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


class ReviewQueue:
    """The SQLite review queue: one row per sample, its scores, status and reviewer decision."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the queue; a file that is no SQLite database is an error naming it."""
        self.path = Path(path)
        make_output_dir(self.path.parent)
        self.db = sqlite3.connect(self.path)
        try:
            self.db.execute(_SCHEMA)
        except sqlite3.DatabaseError as err:
            self.db.close()
            raise EdgefusionError(
                f"{self.path} is not a review queue ({err}): point --db at the file `edgefusion data curate` "
                "wrote, or at a new file"
            ) from None

    def close(self) -> None:
        self.db.close()

    def add(self, position: int, row: dict[str, Any], status: str, reason: str | None) -> None:
        """Queue a sample unless it is queued already (decisions already made are kept)."""
        self.db.execute(
            "INSERT OR IGNORE INTO items (id, position, file, text, clip_score, attributes_ok, status, "
            "reason, decided_by, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row["id"],
                position,
                row["file"],
                row["text"],
                row.get("clip_score"),
                None if row.get("attributes_ok") is None else int(row["attributes_ok"]),
                status,
                reason,
                "prefilter" if status != "pending" else None,
                time.time() if status != "pending" else None,
            ),
        )

    def pending(self, limit: int | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM items WHERE status = 'pending' ORDER BY position"
        cursor = self.db.execute(query + (f" LIMIT {int(limit)}" if limit else ""))
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]

    def decide(
        self, item_id: str, action: str, reason: str = "", text: str | None = None, by: str = "reviewer"
    ):
        """Record a decision: ``accept``, ``reject`` (with a reason) or ``edit`` (a new caption)."""
        if action not in ACTIONS:
            raise EdgefusionError(f"unknown review action {action!r}: use {', '.join(ACTIONS)}")
        if action == "edit" and not (text and text.strip()):
            raise EdgefusionError("an edit needs the new caption text")
        status = {"accept": "accepted", "reject": "rejected", "edit": "edited"}[action]
        updated = self.db.execute(
            "UPDATE items SET status = ?, reason = ?, new_text = ?, decided_by = ?, decided_at = ? "
            "WHERE id = ?",
            (status, reason or None, text.strip() if text else None, by, time.time(), item_id),
        ).rowcount
        if not updated:
            raise EdgefusionError(f"sample {item_id} is not in the review queue {self.path}")
        self.db.commit()

    def counts(self) -> dict[str, int]:
        return dict(
            self.db.execute("SELECT status, COUNT(*) FROM items GROUP BY status ORDER BY status").fetchall()
        )

    def decisions(self, pending: str) -> dict[str, Decision]:
        """Per-sample decisions for :class:`SelectStage` under the ``pending`` policy."""
        decisions = {}
        for item_id, status, reason, new_text, clip_score, decided_by in self.db.execute(
            "SELECT id, status, reason, new_text, clip_score, decided_by FROM items"
        ):
            if status == "rejected":
                # Pre-filter reasons name their check ("clip score: ..."); a reviewer's are "review: ...".
                text = (
                    reason if decided_by == "prefilter" else f"review: {reason or 'rejected by the reviewer'}"
                )
                decisions[item_id] = Decision(text, {"clip_score": clip_score, "decided_by": decided_by})
            elif status == "pending" and pending == "drop":
                decisions[item_id] = Decision("not reviewed: dropped by pending=drop")
            elif status == "edited":
                decisions[item_id] = Decision(updates={"text": new_text, "caption_edited": True})
        return decisions


def build_queue(
    source: str | Path, out: str | Path, config: CurateConfig, options: RunOptions | None = None
) -> Path:
    """Score every sample of ``source``, apply the pre-filters, and queue the rest for review."""
    options = options or RunOptions()
    db_path = Path(config.db) if config.db else default_db(out)
    scores_dir = Path(out).with_name(f".{Path(out).name}.scores")
    run_dataset_stage(ScoreStage(config), source, scores_dir, options)
    queue = ReviewQueue(db_path)
    with queue.db:  # one transaction
        queued = 0
        for position, row in enumerate(iter_rows(scores_dir)):
            reason = _prefilter_reason(row, config)
            queue.add(position, row, "rejected" if reason else "pending", reason)
            queued = position + 1
        for position, row in enumerate(iter_rows(scores_dir, "rejects.jsonl"), start=queued):
            unreadable = {"id": row["id"], "file": row.get("source", ""), "text": ""}
            queue.add(position, unreadable, "rejected", row["reason"])
    queue.close()
    shutil.rmtree(scores_dir, ignore_errors=True)
    return db_path


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
    db_path = Path(config.db) if config.db else default_db(out)
    if not db_path.is_file():
        raise EdgefusionError(
            f"no review queue at {db_path}: run `edgefusion data curate` without --apply first"
        )
    queue = ReviewQueue(db_path)
    decisions, counts = queue.decisions(config.pending), queue.counts()
    queue.close()
    stage = SelectStage("curate", config, decisions)
    extra = {"review": counts, "review_db": str(db_path), **(extra_stats or {})}
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
