"""The review database on SQLite and PostgreSQL: migrations, hand-outs, answers, undo, the shared
queue of `data curate`, exports and A/B reports."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from edgefusion.data.curate import CurateConfig, ReviewQueue, apply_decisions
from edgefusion.data.dataset import iter_rows, read_dataset
from edgefusion.data.review_db import SCHEMA_VERSION, migrate, open_database
from edgefusion.data.review_queue import next_item, progress, record_answer, undo_last
from edgefusion.data.runner import RunOptions
from edgefusion.errors import EdgefusionError
from edgefusion.review.report import task_report
from edgefusion.review.tasks import export_task, open_ab_task, open_curate_task


def _answer_all(db, task, reviewer: str, choose) -> list[str]:
    """Answer every item handed to ``reviewer`` with ``choose(item)``; return the item ids."""
    seen = []
    while (item := next_item(db, task, reviewer)) is not None:
        action, reason, text = choose(item)
        assert record_answer(db, task, reviewer, item["id"], action, reason, text)
        seen.append(item["id"])
    return seen


def test_migrations_upgrade_the_old_queue_file(tmp_path, toy_set):
    old = tmp_path / "old.review.sqlite"
    with sqlite3.connect(old) as conn:  # the queue `data curate` wrote before tasks existed
        conn.execute(
            "CREATE TABLE items (id TEXT PRIMARY KEY, position INTEGER NOT NULL, file TEXT NOT NULL, "
            "text TEXT NOT NULL, clip_score REAL, attributes_ok INTEGER, status TEXT NOT NULL DEFAULT "
            "'pending', reason TEXT, new_text TEXT, decided_by TEXT, decided_at REAL)"
        )
        conn.execute(
            "INSERT INTO items VALUES ('s00', 0, ?, 'a caption', 0.3, 1, 'rejected', 'blurry', NULL, "
            "'ann', 1)",
            (str((toy_set / "00000.png").resolve()),),
        )
        conn.execute("INSERT INTO items (id, position, file, text) VALUES ('s01', 1, 'x.png', 'b')")
    queue = ReviewQueue(old, toy_set)  # upgraded, and the dataset claims the old queue
    assert queue.db.scalar("SELECT MAX(version) FROM schema_migrations") == SCHEMA_VERSION
    assert queue.counts() == {"pending": 1, "rejected": 1}
    rows = {r["id"]: r for r in queue.db.query("SELECT * FROM items")}
    assert rows["s00"]["file"] == "00000.png" and rows["s00"]["reason"] == "blurry"
    queue.close()
    db = open_database(old)
    assert migrate(db) == SCHEMA_VERSION  # applying again changes nothing
    db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    db.close()
    with pytest.raises(EdgefusionError, match="newer"):
        open_database(old)
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database" * 100)
    with pytest.raises(EdgefusionError, match="not a review database"):
        open_database(junk)


def test_concurrent_reviewers_never_share_an_item(db_url, toy_set):
    setup = open_database(db_url)
    task, added = open_curate_task(setup, toy_set)
    assert added == 10 and task.overlap == 1
    setup.close()
    answered: dict[str, list[str]] = {}

    def work(name: str) -> None:
        db = open_database(db_url)
        answered[name] = _answer_all(db, task, name, lambda item: ("accept", None, None))
        db.close()

    threads = [threading.Thread(target=work, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [item for items in answered.values() for item in items]
    assert sorted(ids) == [f"s{i:02d}" for i in range(10)]  # each item once, none lost
    db = open_database(db_url)
    assert progress(db, task) == {"items": 10, "answers": 10, "wanted": 10, "mine": 0, "percent": 100.0}
    db.close()


def test_overlap_lease_retry_and_undo(database, toy_set):
    task, _ = open_curate_task(database, toy_set, overlap=2)
    first = next_item(database, task, "ann")
    assert next_item(database, task, "ann")["id"] == first["id"]  # a reload shows the same item
    assert next_item(database, task, "bob")["id"] == first["id"]  # overlap 2: bob gets it too
    third = next_item(database, task, "cid")
    assert third["id"] != first["id"]  # but not a third reviewer
    assert next_item(database, task, "dan", lease=0)["id"] == first["id"]  # an expired lease frees it
    with pytest.raises(EdgefusionError, match="not handed"):
        record_answer(database, task, "eve", first["id"], "accept")
    assert record_answer(database, task, "ann", first["id"], "reject", "artifact")
    assert not record_answer(database, task, "ann", first["id"], "accept")  # a retried post counts once
    assert record_answer(database, task, "bob", first["id"], "edit", "typo", "a fixed caption")
    row = database.query_one("SELECT status, reason FROM items WHERE id = ?", (first["id"],))
    assert row == {"status": "rejected", "reason": "artifact"}  # 1 keep vs 1 drop: a doubtful image goes
    second = next_item(database, task, "ann")
    assert second["id"] != first["id"]
    assert undo_last(database, task, "ann") == first["id"]
    assert next_item(database, task, "ann")["id"] == first["id"]  # the undone item comes back first
    row = database.query_one("SELECT status, new_text FROM items WHERE id = ?", (first["id"],))
    assert row == {"status": "edited", "new_text": "a fixed caption"}
    assert record_answer(database, task, "ann", first["id"], "accept")
    assert next_item(database, task, "ann")["id"] == second["id"]
    assert undo_last(database, task, "nobody") is None


def test_terminal_and_browser_decisions_meet_in_data_curate_apply(db_url, toy_set, tmp_path):
    db = open_database(db_url)
    task, _ = open_curate_task(db, toy_set)
    web = [next_item(db, task, "web") for _ in range(1)][0]
    record_answer(db, task, "web", web["id"], "reject", "misaligned")
    db.close()
    queue = ReviewQueue(db_url, toy_set)  # what `data review` and `data curate --apply` open
    assert queue.task.id == task.id
    pending = queue.pending()
    assert web["id"] not in {row["id"] for row in pending} and len(pending) == 9
    queue.decide(pending[0]["id"], "edit", "fixed", "a red square", by="terminal")
    queue.decide(pending[1]["id"], "reject", "blurry", by="terminal")
    queue.close()
    out = tmp_path / "cur"
    stats = apply_decisions(toy_set, out, CurateConfig(db=db_url), RunOptions(progress=False))
    assert stats["kept"] == 8 and stats["review"] == {"edited": 1, "pending": 7, "rejected": 2}
    rejects = {r["id"]: r for r in iter_rows(out, "rejects.jsonl")}
    assert rejects[web["id"]]["reason"] == "review: misaligned"
    assert rejects[pending[1]["id"]]["answers"][0]["reviewer"] == "terminal"
    kept = {r["id"]: r for r in iter_rows(out)}
    assert kept[pending[0]["id"]]["text"] == "a red square"
    assert kept[pending[0]["id"]]["original_text"] == pending[0]["text"]


def test_export_writes_the_curated_dataset(database, toy_set, tmp_path):
    task, _ = open_curate_task(database, toy_set, overlap=2)
    plan = {"s00": "keep", "s01": "artifact", "s02": "edit"}
    for reviewer in ("ann", "bob"):
        for _ in range(3):
            item = next_item(database, task, reviewer)
            choice = plan[item["id"]]
            if choice == "edit":
                record_answer(database, task, reviewer, item["id"], "edit", None, f"caption by {reviewer}")
            elif choice == "keep":
                record_answer(database, task, reviewer, item["id"], "accept")
            else:
                record_answer(database, task, reviewer, item["id"], "reject", choice)
    out = tmp_path / "curated"
    stats = export_task(database, task.name, out, pending="drop")
    assert stats["kept"] == 2 and stats["rejected"] == 8
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["s00", "s02"]
    assert rows[1]["text"] == "caption by bob" and rows[1]["caption_edited"]
    rejects = {r["id"]: r for r in iter_rows(out, "rejects.jsonl")}
    assert rejects["s01"]["reason"] == "review: artifact"
    answers = [(a["reviewer"], a["action"]) for a in rejects["s01"]["answers"]]
    assert answers == [("ann", "reject"), ("bob", "reject")]
    assert rejects["s05"]["reason"] == "not reviewed: dropped by pending=drop"
    items = list(read_dataset(out))  # the dataset format every stage (and distill / lcm) reads
    assert all(item.error is None for item in items) and (out / rows[0]["file_name"]).is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # nothing half-written left
    assert export_task(database, task.id, out, pending="drop")["kept"] == 2  # same decisions: reused
    item = next_item(database, task, "cid")
    record_answer(database, task, "cid", item["id"], "accept")
    with pytest.raises(EdgefusionError, match="another config"):
        export_task(database, task.id, out, pending="drop")
    assert export_task(database, task.id, out, pending="drop", overwrite=True)["kept"] == 3
    report = task_report(database, task.id)
    assert report["agreement"] == {"items": 3, "reviewers": 2, "kappa": 1.0, "method": "Cohen's kappa"}


def test_unsafe_file_names_are_rejected_when_a_task_opens(database, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    (tmp_path / "secret.png").write_bytes(b"secret")
    (folder / "link.png").symlink_to(tmp_path / "secret.png")
    rows = [
        {"file_name": "../secret.png", "id": "dotdot", "text": "a"},
        {"file_name": str(tmp_path / "secret.png"), "id": "absolute", "text": "b"},
        {"file_name": "link.png", "id": "symlink", "text": "c"},
    ]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task, _ = open_curate_task(database, folder)
    found = {r["id"]: r for r in database.query("SELECT id, file, status, reason FROM items")}
    assert {(r["status"], r["file"]) for r in found.values()} == {("rejected", "")}
    assert "'..'" in found["dotdot"]["reason"] and "absolute" in found["absolute"]["reason"]
    assert "symlink" in found["symlink"]["reason"]
    assert next_item(database, task, "ann") is None


def test_ab_task_votes_and_report(database, generation_folders, tmp_path):
    teacher, edgefusion, tiny = generation_folders
    task = open_ab_task(database, [teacher, edgefusion, tiny], overlap=2)
    assert task.name == "ab"  # reviewers see it: it names no model
    assert progress(database, task)["items"] == 6 * 3
    better = {0: 3, 1: 2, 2: 1}  # teacher > edgefusion > bk-tiny, except for the ties below
    ties = {"00000-0-1", "00001-0-1"}
    for reviewer in ("ann", "bob"):
        while (item := next_item(database, task, reviewer)) is not None:
            pair = database.query_one("SELECT model_a, model_b FROM pairs WHERE item_id = ?", (item["id"],))
            left, right = pair["model_a"], pair["model_b"]
            if item["flipped"]:
                left, right = right, left
            vote = "tie" if item["id"] in ties else "left" if better[left] > better[right] else "right"
            record_answer(database, task, reviewer, item["id"], vote)
    report = task_report(database, task.id)
    first = report["pairs"][0]
    assert (first["model_a"], first["model_b"]) == ("toy:teacher", "toy:edgefusion")
    counts = (first["wins_a"], first["wins_b"], first["ties"], first["votes"], first["reviewers"])
    assert counts == (8, 0, 4, 12, 2)
    assert first["win_rate_a"] == pytest.approx(10 / 12, abs=1e-4)  # ties split
    from edgefusion.review.stats import wilson_interval

    assert first["ci95"] == pytest.approx(list(wilson_interval(10, 12)), abs=1e-4)
    assert first["votes_needed"] == 194
    dropped = task_report(database, task.id, ties="drop")["pairs"][0]
    assert dropped["win_rate_a"] == 1.0  # ties left out: 8 of 8
    assert dropped["ci95"] == pytest.approx(list(wilson_interval(8, 8)), abs=1e-4)
    assert [r["model"] for r in report["ranking"]] == ["toy:teacher", "toy:edgefusion", "toy:bk-tiny"]
    with pytest.raises(EdgefusionError, match="differ in prompts or seeds"):
        other = tmp_path / "other"
        other.mkdir()
        lines = (teacher / "generations.jsonl").read_text().splitlines()[:-1]
        (other / "generations.jsonl").write_text("\n".join(lines) + "\n")
        for line in lines:
            name = json.loads(line)["file_name"]
            (other / name).write_bytes((teacher / name).read_bytes())
        open_ab_task(database, [teacher, other])
    with pytest.raises(EdgefusionError, match="A/B task"):
        export_task(database, task.id, tmp_path / "nope")
