"""`edgefusion review ...` commands: accounts (argon2 hashes only), tasks, reports and exports."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("argon2", reason="the review extra is not installed: pip install -e '.[review]'")

from typer.testing import CliRunner  # noqa: E402

from edgefusion.data.review_db import open_database  # noqa: E402
from edgefusion.data.review_queue import get_task, next_item, record_answer  # noqa: E402
from edgefusion.errors import EdgefusionError  # noqa: E402
from edgefusion.review.cli import review_app  # noqa: E402


def _run(*args: str, input: str | None = None):
    result = CliRunner().invoke(review_app, list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_accounts_keep_only_salted_argon2_hashes(tmp_path):
    db = str(tmp_path / "review.sqlite")
    _run("user", "add", "ada", "--role", "admin", "--db", db, input="same password\n")
    _run("user", "add", "rev", "--db", db, input="same password\n")
    assert _run("user", "list", "--db", db).split() == ["ada", "admin", "rev", "reviewer"]
    database = open_database(db)
    hashes = [row["password_hash"] for row in database.query("SELECT password_hash FROM users")]
    database.close()
    assert all(h.startswith("$argon2id$") for h in hashes) and hashes[0] != hashes[1]  # salted
    assert b"same password" not in (tmp_path / "review.sqlite").read_bytes()
    with pytest.raises(EdgefusionError, match="exists already"):
        _run("user", "add", "rev", "--db", db, input="another password\n")
    _run("user", "add", "rev", "--role", "admin", "--replace", "--db", db, input="another password\n")
    with pytest.raises(EdgefusionError, match="at least 8"):
        _run("user", "add", "short", "--db", db, input="tiny\n")
    with pytest.raises(EdgefusionError, match="unknown role"):
        _run("user", "add", "who", "--role", "root", "--db", db, input="long enough\n")
    with pytest.raises(EdgefusionError, match="invalid reviewer name"):
        _run("user", "add", "prefilter", "--db", db, input="long enough\n")
    _run("user", "remove", "rev", "--db", db)
    assert _run("user", "list", "--db", db).split() == ["ada", "admin"]


def test_tasks_reports_and_export_from_the_command_line(tmp_path, toy_set, generation_folders):
    db = str(tmp_path / "review.sqlite")
    assert "10 samples added" in _run("curate", str(toy_set), "--db", db, "--overlap", "2")
    assert "0 samples added" in _run("curate", str(toy_set), "--db", db)  # re-opening keeps the task
    assert "18 comparisons" in _run("ab", *map(str, generation_folders), "--db", db)
    listing = _run("tasks", "--db", db)
    assert "synt" in listing and "ab" in listing
    database = open_database(db)
    curate, ab = get_task(database, "synt"), get_task(database, "ab")
    for reviewer in ("ann", "bob"):
        item = next_item(database, curate, reviewer)
        record_answer(
            database, curate, reviewer, item["id"], "reject" if reviewer == "ann" else "accept", "blur"
        )
        item = next_item(database, ab, reviewer)
        record_answer(database, ab, reviewer, item["id"], "tie")
    database.close()
    report = json.loads(_run("report", "synt", "--db", db, "--json"))
    assert report["decisions"] == {"pending": 9, "rejected": 1}
    assert report["agreement"]["method"] == "Cohen's kappa" and report["agreement"]["items"] == 1
    report = json.loads(_run("report", "ab", "--db", db, "--json", "--ties", "drop"))
    assert report["ties"] == "drop" and sum(p["ties"] for p in report["pairs"]) == 2
    assert len(report["pairs"]) == 3 and report["pairs"][0]["votes_needed"] == 194
    assert "Bradley-Terry" in _run("report", "ab", "--db", db)
    out = tmp_path / "curated"
    assert "9 kept, 1 removed (review: 1)" in _run("export", "synt", "--out", str(out), "--db", db)
    assert (out / "metadata.jsonl").is_file() and (out / "rejects.jsonl").is_file()
    with pytest.raises(EdgefusionError, match="no task 'nope'"):
        _run("report", "nope", "--db", db)


def test_the_review_commands_hang_off_the_main_command_line(tmp_path):
    from edgefusion.cli import _register_subcommands, app

    _register_subcommands()
    result = CliRunner().invoke(app, ["review", "tasks", "--db", str(tmp_path / "review.sqlite")])
    assert result.exit_code == 0 and "overlap" in result.output
