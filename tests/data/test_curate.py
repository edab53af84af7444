"""Curation: pre-filters decide the obvious, the SQLite queue records reviewer decisions, and
applying them writes the curated set with every removal's reason."""

from __future__ import annotations

import sqlite3
import statistics

import pytest
from typer.testing import CliRunner

from edgefusion.data.cli import data_app
from edgefusion.data.curate import CurateConfig, ReviewQueue, apply_decisions, build_queue, curate_run
from edgefusion.data.dataset import iter_rows
from edgefusion.data.runner import RunOptions
from edgefusion.data.synthesize import SynthConfig, synthesize
from edgefusion.errors import EdgefusionError

QUIET = RunOptions(progress=False)


@pytest.fixture(scope="module")
def synt(tmp_path_factory):
    out = tmp_path_factory.mktemp("synt") / "synt"
    synthesize(out, SynthConfig(n=24, seed=0), QUIET)
    return out


def _scores(db) -> dict[str, float]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, clip_score FROM items").fetchall())


def test_queue_prefilter_decisions_and_apply(synt, micro_evaluator, tmp_path):
    out = tmp_path / "cur"
    probe = build_queue(synt, tmp_path / "probe", CurateConfig(evaluator=str(micro_evaluator)), QUIET)
    scores = _scores(probe)
    threshold = statistics.median(scores.values())
    config = CurateConfig(evaluator=str(micro_evaluator), min_clip_score=threshold)
    db = build_queue(synt, out, config, QUIET)
    queue = ReviewQueue(db)
    below = {k for k, v in scores.items() if v < threshold}
    assert queue.counts() == {"pending": 24 - len(below), "rejected": len(below)}
    first, second, third, *_ = [row["id"] for row in queue.pending()]
    queue.decide(first, "accept")
    queue.decide(second, "reject", "artifacts on the star")
    queue.decide(third, "edit", "colour was off", "a red star on a blue background")
    with pytest.raises(EdgefusionError, match="new caption"):
        queue.decide(first, "edit", "no text")
    queue.close()
    build_queue(synt, out, config, QUIET)  # rebuilding keeps every decision
    assert ReviewQueue(db).counts() == {
        "accepted": 1,
        "edited": 1,
        "pending": 21 - len(below),
        "rejected": len(below) + 1,
    }
    stats = apply_decisions(synt, out, config, QUIET)
    assert stats["kept"] == 24 - len(below) - 1 and stats["review"]["edited"] == 1
    assert stats["reject_reasons"] == {"clip score": len(below), "review": 1}
    rejects = {r["id"]: r["reason"] for r in iter_rows(out, "rejects.jsonl")}
    assert rejects[second] == "review: artifacts on the star"
    assert all(rejects[k].startswith("clip score: ") for k in below)
    kept = {r["id"]: r for r in iter_rows(out)}
    assert kept[third]["text"] == "a red star on a blue background" and kept[third]["caption_edited"]
    dropped = apply_decisions(synt, tmp_path / "drop", CurateConfig(db=str(db), pending="drop"), QUIET)
    assert dropped["kept"] == 2


def test_pipeline_curate_with_attribute_check(synt, micro_evaluator, tmp_path):
    stats = curate_run(
        synt, tmp_path / "cur", CurateConfig(evaluator=str(micro_evaluator), check_attributes=True), QUIET
    )
    reasons = {r["reason"] for r in iter_rows(tmp_path / "cur", "rejects.jsonl")}
    assert stats["kept"] + stats["rejected"] == 24
    assert reasons <= {"attributes: the caption states what the image does not show"}


def test_terminal_review(synt, micro_evaluator, tmp_path):
    db = build_queue(synt, tmp_path / "cur", CurateConfig(evaluator=str(micro_evaluator)), QUIET)
    ids = [row["id"] for row in ReviewQueue(db).pending()]
    answers = "a\nr\nblurry\ne\na green disc on a red background\nfixed\ns\nq\n"
    result = CliRunner().invoke(data_app, ["review", "--db", str(db)], input=answers)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        rows = {r[0]: r[1:] for r in conn.execute("SELECT id, status, reason, new_text FROM items")}
    assert rows[ids[0]] == ("accepted", None, None)
    assert rows[ids[1]] == ("rejected", "blurry", None)
    assert rows[ids[2]] == ("edited", "fixed", "a green disc on a red background")
    assert rows[ids[3]][0] == "pending"
