"""The review queue: tasks and their items, hand-outs to reviewers, answers, undo, and what the
answers decide. ``data curate`` and ``data review`` work on it here; the web app of
:mod:`edgefusion.review` builds on it (it lives in ``data`` because curation needs it, and the
review package sits above ``data``).

A curation task is tied to its dataset folder (``source``): ``edgefusion data curate`` and
``edgefusion review curate`` on the same folder and database share one task, so decisions made in
the terminal and in the browser land in one place.

Every answer is a row in ``answers``, never overwritten: undo marks a reviewer's latest answer
``undone`` and hands the item back to them. A curation item's ``status`` (what ``data curate
--apply`` and ``review export`` use) is re-derived from its standing answers after every change, by
majority: it is kept (``accepted``, or ``edited`` with the latest edit's caption) only when more
reviewers kept it than dropped it, so an even split drops a doubtful image. The pre-filter's
decisions (``decided_by = 'prefilter'``) are final and never handed out.

An item goes to a reviewer who has not answered it while fewer than ``overlap`` reviewers hold it:
a standing answer holds it for good, a hand-out for ``lease`` seconds (so an item a reviewer walked
away from goes to someone else). Each hand-out is decided and recorded inside one transaction that
holds the task's lock, so two reviewers asking at once never get the same item beyond the overlap.
In an A/B task the hand-out also draws which model is shown on the left; a vote says left, right
or tie and is turned into a model there, so pages and forms never name a model.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefusion.data.review_db import Database
from edgefusion.data.select import Decision
from edgefusion.errors import EdgefusionError
from edgefusion.paths import resolved

CURATE, AB = "curate", "ab"
CURATE_ACTIONS = ("accept", "reject", "edit")
PENDING_POLICIES = ("keep", "drop")
VOTES = ("left", "right", "tie")
PREFILTER = "prefilter"
#: Names that mark decisions no person made; no reviewer may take them.
RESERVED_NAMES = frozenset({PREFILTER, "migration"})
#: Seconds an item handed out stays reserved for its reviewer.
DEFAULT_LEASE = 30 * 60
_HANDED_OUT = "COALESCE(i.decided_by, '') <> 'prefilter'"
# The hand-out ``a`` is answered: its reviewer has a standing answer on its item.
_ANSWERED = (
    "EXISTS (SELECT 1 FROM answers s WHERE s.task_id = a.task_id AND s.item_id = a.item_id "
    "AND s.reviewer = a.reviewer AND s.undone = 0)"
)


@dataclass
class Task:
    """A curation (``curate``: ``source`` is the dataset folder) or A/B (``ab``) task."""

    id: int
    kind: str
    name: str
    source: str | None
    overlap: int
    created_by: str | None
    created_at: float


def get_task(db: Database, ref: str | int) -> Task:
    """The task with id or name ``ref``."""
    text = str(ref)
    row = db.query_one("SELECT * FROM tasks WHERE name = ?", (text,))
    if row is None and text.isdigit():
        row = db.query_one("SELECT * FROM tasks WHERE id = ?", (int(text),))
    if row is None:
        raise EdgefusionError(
            f"no task {text!r} in the review database: `edgefusion review tasks` lists them"
        )
    return Task(**row)


def list_tasks(db: Database) -> list[Task]:
    return [Task(**row) for row in db.query("SELECT * FROM tasks ORDER BY id")]


def next_item(db: Database, task: Task, reviewer: str, lease: float = DEFAULT_LEASE) -> dict[str, Any] | None:
    """The item ``reviewer`` should answer now (handing out a new one if needed), or None when
    nothing is left for them. The item they hold and have not answered comes first, the one
    handed back by undo before any other; showing it again renews its lease once half is gone."""
    now = time.time()
    with db.transaction():
        db.lock_task(task.id)
        held = db.query_one(
            "SELECT a.item_id, a.flipped, a.assigned_at FROM assignments a WHERE a.task_id = ? "
            f"AND a.reviewer = ? AND NOT {_ANSWERED} ORDER BY a.assigned_at DESC, a.item_id LIMIT 1",
            (task.id, reviewer),
        )
        if held is not None:
            if now - held["assigned_at"] > lease / 2:  # still at it: renew the lease (a write, so not always)
                db.execute(
                    "UPDATE assignments SET assigned_at = ? "
                    "WHERE task_id = ? AND item_id = ? AND reviewer = ?",
                    (now, task.id, held["item_id"], reviewer),
                )
            return _item_view(db, task, held["item_id"], bool(held["flipped"]))
        # Items this reviewer never had, held by fewer than ``overlap`` reviewers: by a standing
        # answer, or by a live lease not yet answered.
        free = db.query_one(
            f"SELECT i.id FROM items i WHERE i.task_id = ? AND {_HANDED_OUT} "
            "AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.task_id = i.task_id AND a.item_id = i.id "
            "AND a.reviewer = ?) "
            "AND NOT EXISTS (SELECT 1 FROM answers s WHERE s.task_id = i.task_id AND s.item_id = i.id "
            "AND s.reviewer = ? AND s.undone = 0) "
            "AND (SELECT COUNT(*) FROM answers s WHERE s.task_id = i.task_id AND s.item_id = i.id "
            "AND s.undone = 0) + (SELECT COUNT(*) FROM assignments a WHERE a.task_id = i.task_id "
            f"AND a.item_id = i.id AND a.assigned_at > ? AND NOT {_ANSWERED}) < ? "
            "ORDER BY i.position LIMIT 1",
            (task.id, reviewer, reviewer, now - lease, task.overlap),
        )
        if free is None:
            return None
        flipped = task.kind == AB and secrets.randbelow(2) == 1
        db.execute(
            "INSERT INTO assignments (task_id, item_id, reviewer, flipped, assigned_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (task.id, free["id"], reviewer, int(flipped), now),
        )
        return _item_view(db, task, free["id"], flipped)


def _item_view(db: Database, task: Task, item_id: str, flipped: bool) -> dict[str, Any]:
    item = db.query_one(
        "SELECT id, position, file, text FROM items WHERE task_id = ? AND id = ?", (task.id, item_id)
    )
    return {**item, "flipped": flipped}


def holds(db: Database, task: Task, item_id: str, reviewer: str) -> dict[str, Any] | None:
    """The hand-out of ``item_id`` to ``reviewer`` (None if it was never handed to them)."""
    return db.query_one(
        "SELECT flipped, assigned_at FROM assignments WHERE task_id = ? AND item_id = ? AND reviewer = ?",
        (task.id, item_id, reviewer),
    )


def record_answer(
    db: Database,
    task: Task,
    reviewer: str,
    item_id: str,
    action: str,
    reason: str | None = None,
    text: str | None = None,
    *,
    replace: bool = False,
) -> bool:
    """Record ``reviewer``'s answer to ``item_id``; return whether it was recorded.

    Curation answers are ``accept``, ``reject`` (``reason``) or ``edit`` (``text``, the new
    caption); A/B answers are ``left``, ``right`` or ``tie``. Without ``replace`` (the web app) the
    item must have been handed to the reviewer, and a second answer to it is a retried post:
    ignored (False), so it never counts twice. With ``replace`` (the terminal review) it replaces
    the reviewer's standing answer.
    """
    allowed = CURATE_ACTIONS if task.kind == CURATE else VOTES
    if action not in allowed:
        raise EdgefusionError(f"unknown answer {action!r} for a {task.kind} task: use {', '.join(allowed)}")
    if action == "edit" and not (text and text.strip()):
        raise EdgefusionError("an edit needs the new caption text")
    with db.transaction():
        db.lock_task(task.id)
        if not db.query_one("SELECT 1 AS x FROM items WHERE task_id = ? AND id = ?", (task.id, item_id)):
            raise EdgefusionError(f"sample {item_id} is not in task {task.name!r}")
        handout = holds(db, task, item_id, reviewer)
        if handout is None and not replace:
            raise EdgefusionError(f"item {item_id} was not handed to {reviewer}: reload the page")
        standing = db.query_one(
            "SELECT id FROM answers WHERE task_id = ? AND item_id = ? AND reviewer = ? AND undone = 0",
            (task.id, item_id, reviewer),
        )
        if standing is not None:
            if not replace:
                return False
            db.execute("UPDATE answers SET undone = 1 WHERE id = ?", (standing["id"],))
        flipped = bool(handout and handout["flipped"])
        winner = _winner(db, task, item_id, action, flipped) if task.kind == AB else None
        db.execute(
            "INSERT INTO answers (task_id, item_id, reviewer, action, reason, text, winner, flipped, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task.id,
                item_id,
                reviewer,
                action,
                reason or None,
                text.strip() if action == "edit" else None,
                winner,
                int(flipped) if task.kind == AB else None,
                time.time(),
            ),
        )
        if task.kind == CURATE:
            resolve_item(db, task.id, item_id)
    return True


def _winner(db: Database, task: Task, item_id: str, vote: str, flipped: bool) -> int | None:
    """The model a vote chose (None for a tie): the left image is model ``b`` when flipped."""
    if vote == "tie":
        return None
    pair = db.query_one(
        "SELECT model_a, model_b FROM pairs WHERE task_id = ? AND item_id = ?", (task.id, item_id)
    )
    left, right = (pair["model_b"], pair["model_a"]) if flipped else (pair["model_a"], pair["model_b"])
    return left if vote == "left" else right


def undo_last(db: Database, task: Task, reviewer: str) -> str | None:
    """Withdraw ``reviewer``'s latest standing answer in ``task`` and hand its item back to them
    (it is shown next); return the item's id, or None if they have nothing to undo."""
    with db.transaction():
        db.lock_task(task.id)
        last = db.query_one(
            "SELECT id, item_id, flipped FROM answers WHERE task_id = ? AND reviewer = ? AND undone = 0 "
            "ORDER BY id DESC LIMIT 1",
            (task.id, reviewer),
        )
        if last is None:
            return None
        db.execute("UPDATE answers SET undone = 1 WHERE id = ?", (last["id"],))
        db.execute(
            "INSERT INTO assignments (task_id, item_id, reviewer, flipped, assigned_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (task_id, item_id, reviewer) "
            "DO UPDATE SET assigned_at = excluded.assigned_at",
            (task.id, last["item_id"], reviewer, int(bool(last["flipped"])), time.time()),
        )
        if task.kind == CURATE:
            resolve_item(db, task.id, last["item_id"])
    return last["item_id"]


def resolve_item(db: Database, task_id: int, item_id: str) -> None:
    """Set a curation item's status from its standing answers (see the module docstring)."""
    answers = db.query(
        "SELECT reviewer, action, reason, text, created_at FROM answers "
        "WHERE task_id = ? AND item_id = ? AND undone = 0 ORDER BY id",
        (task_id, item_id),
    )
    status, reason, new_text, decided_by, decided_at = "pending", None, None, None, None
    if answers:
        kept = [a for a in answers if a["action"] != "reject"]
        if len(kept) > len(answers) - len(kept):
            edits = [a for a in kept if a["action"] == "edit"]
            status = "edited" if edits else "accepted"
            if edits:
                reason, new_text = edits[-1]["reason"], edits[-1]["text"]
        else:
            status = "rejected"
            reasons = [a["reason"] for a in answers if a["action"] == "reject" and a["reason"]]
            reason = "; ".join(dict.fromkeys(reasons)) or None
        decided_by = ", ".join(dict.fromkeys(a["reviewer"] for a in answers))
        decided_at = max(a["created_at"] for a in answers)
    db.execute(
        "UPDATE items SET status = ?, reason = ?, new_text = ?, decided_by = ?, decided_at = ? "
        "WHERE task_id = ? AND id = ? AND COALESCE(decided_by, '') <> 'prefilter'",
        (status, reason, new_text, decided_by, decided_at, task_id, item_id),
    )


def progress(db: Database, task: Task, reviewer: str | None = None) -> dict[str, Any]:
    """Items to review, answers given (of ``items x overlap`` wanted), and ``reviewer``'s own."""
    items = db.scalar(f"SELECT COUNT(*) AS n FROM items i WHERE i.task_id = ? AND {_HANDED_OUT}", (task.id,))
    answers = db.scalar("SELECT COUNT(*) AS n FROM answers WHERE task_id = ? AND undone = 0", (task.id,))
    mine = db.scalar(
        "SELECT COUNT(*) AS n FROM answers WHERE task_id = ? AND undone = 0 AND reviewer = ?",
        (task.id, reviewer),
    )
    wanted = items * task.overlap
    return {
        "items": items,
        "answers": answers,
        "wanted": wanted,
        "mine": mine,
        "percent": round(100 * min(answers, wanted) / wanted, 1) if wanted else 100.0,
    }


def standing_answers(db: Database, task: Task) -> list[dict[str, Any]]:
    """Every standing answer of ``task`` in the order given."""
    return db.query(
        "SELECT item_id, reviewer, action, reason, text, winner, flipped, created_at FROM answers "
        "WHERE task_id = ? AND undone = 0 ORDER BY id",
        (task.id,),
    )


def dataset_file_name(folder: Path, path: str) -> str:
    """The name of ``path`` (a file :func:`read_dataset` resolved) relative to its dataset."""
    return Path(path).relative_to(resolved(folder)).as_posix()


def free_name(db: Database, wanted: str) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3`` ... if a task has that name already."""
    name, number = wanted, 1
    while db.query_one("SELECT id FROM tasks WHERE name = ?", (name,)):
        number += 1
        name = f"{wanted}-{number}"
    return name


def insert_task(db: Database, kind: str, name: str, source: str | None, overlap: int, by: str | None) -> Task:
    """A new task; its name must not look like an id (``TASK`` arguments take either)."""
    if overlap < 1:
        raise EdgefusionError(f"overlap must be at least 1 (reviewers per item), got {overlap}")
    if name.isdigit():
        raise EdgefusionError(f"task name {name!r} is a number, which reads as a task id: choose another")
    row = db.query_one(
        "INSERT INTO tasks (kind, name, source, overlap, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?) "
        "RETURNING *",
        (kind, name, source, overlap, by, time.time()),
    )
    return Task(**row)


def curate_task(
    db: Database,
    source: str | Path,
    *,
    create: bool = False,
    name: str | None = None,
    overlap: int | None = None,
    created_by: str | None = None,
) -> Task | None:
    """The curation task of the dataset folder ``source`` (created if ``create``; None otherwise).

    A queue written before tasks existed (no recorded source) is claimed by the first dataset asked
    for: its absolute file names become names relative to that dataset.
    """
    folder = resolved(source)
    with db.transaction():
        row = db.query_one(
            "SELECT * FROM tasks WHERE kind = ? AND source = ? ORDER BY id LIMIT 1", (CURATE, str(folder))
        )
        if row is None:
            row = db.query_one(
                "SELECT * FROM tasks WHERE kind = ? AND source IS NULL ORDER BY id LIMIT 1", (CURATE,)
            )
            if row is not None:
                _claim(db, row["id"], folder)
        if row is not None:
            if overlap is not None and overlap != row["overlap"]:
                db.execute("UPDATE tasks SET overlap = ? WHERE id = ?", (overlap, row["id"]))
            return get_task(db, row["id"])
        if not create:
            return None
        if name is not None and db.query_one("SELECT id FROM tasks WHERE name = ?", (name,)):
            raise EdgefusionError(
                f"a task named {name!r} exists already (for another dataset): choose another --name"
            )
        return insert_task(
            db, CURATE, name or free_name(db, folder.name), str(folder), overlap or 1, created_by
        )


def _claim(db: Database, task_id: int, folder: Path) -> None:
    db.execute("UPDATE tasks SET source = ? WHERE id = ?", (str(folder), task_id))
    for row in db.query("SELECT id, file FROM items WHERE task_id = ?", (task_id,)):
        if Path(row["file"]).is_absolute() and Path(row["file"]).is_relative_to(folder):
            db.execute(
                "UPDATE items SET file = ? WHERE task_id = ? AND id = ?",
                (dataset_file_name(folder, row["file"]), task_id, row["id"]),
            )


def add_item(
    db: Database, task: Task, position: int, row: dict[str, Any], status: str, reason: str | None
) -> None:
    """Queue a sample (``row``: id, file, text, optional scores) unless the task has it already,
    so re-opening a task never overwrites a decision. A non-pending ``status`` is the pre-filter's."""
    decided = status != "pending"
    db.execute(
        "INSERT INTO items (task_id, id, position, file, text, clip_score, attributes_ok, status, reason, "
        "decided_by, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (task_id, id) DO NOTHING",
        (
            task.id,
            row["id"],
            position,
            row["file"],
            row["text"],
            row.get("clip_score"),
            None if row.get("attributes_ok") is None else int(row["attributes_ok"]),
            status,
            reason,
            PREFILTER if decided else None,
            time.time() if decided else None,
        ),
    )


def status_counts(db: Database, task: Task) -> dict[str, int]:
    rows = db.query(
        "SELECT status, COUNT(*) AS n FROM items WHERE task_id = ? GROUP BY status ORDER BY status",
        (task.id,),
    )
    return {row["status"]: row["n"] for row in rows}


def task_decisions(db: Database, task: Task, pending: str) -> dict[str, Decision]:
    """Per-sample decisions of a curation task for :class:`SelectStage` under the ``pending``
    policy (``keep`` or ``drop`` samples nobody decided). A reviewer's reject carries every
    standing answer on the sample; an edited caption keeps the old one as ``original_text``."""
    answers: dict[str, list[dict[str, Any]]] = {}
    for row in db.query(
        "SELECT item_id, reviewer, action, reason, text, created_at FROM answers "
        "WHERE task_id = ? AND undone = 0 ORDER BY id",
        (task.id,),
    ):
        answers.setdefault(row.pop("item_id"), []).append(row)
    decisions = {}
    for row in db.query(
        "SELECT id, status, reason, text, new_text, clip_score, decided_by FROM items WHERE task_id = ?",
        (task.id,),
    ):
        if row["status"] == "rejected":
            # The pre-filter's reasons name their check ("clip score: ..."); a reviewer's say "review".
            if row["decided_by"] == PREFILTER:
                decisions[row["id"]] = Decision(
                    row["reason"], {"clip_score": row["clip_score"], "decided_by": PREFILTER}
                )
            else:
                details = {"decided_by": row["decided_by"], "answers": answers.get(row["id"], [])}
                decisions[row["id"]] = Decision(
                    f"review: {row['reason'] or 'rejected by the reviewer'}", details
                )
        elif row["status"] == "pending" and pending == "drop":
            decisions[row["id"]] = Decision("not reviewed: dropped by pending=drop")
        elif row["status"] == "edited":
            updates = {"text": row["new_text"], "original_text": row["text"], "caption_edited": True}
            decisions[row["id"]] = Decision(updates=updates)
    return decisions
