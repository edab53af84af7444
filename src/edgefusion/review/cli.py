"""``edgefusion review ...``: the review web app, its accounts, tasks, exports and reports.

Every command takes ``--db``: an SQLite file (created on first use, nothing to set up) or a
``postgresql://`` URL for a server a team shares. The queue file ``edgefusion data curate``
writes is such a database too.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgefusion.data.review_db import Database, describe, open_database
from edgefusion.errors import EdgefusionError

review_app = typer.Typer(
    help="Human review in the browser: curation and blind A/B preference tasks "
    "(pip install 'edgefusion[review]').",
    no_args_is_help=True,
)
user_app = typer.Typer(help="Reviewer accounts.", no_args_is_help=True)
review_app.add_typer(user_app, name="user")
console = Console()

Db = Annotated[str, typer.Option("--db", help="Review database: an SQLite file or a postgresql:// URL.")]
TaskRef = Annotated[str, typer.Argument(help="Task id or name (`edgefusion review tasks` lists them).")]
Overlap = Annotated[int, typer.Option(help="Reviewers per item (2 or more: agreement is reported).")]
DEFAULT_DB = "review.sqlite"


@contextmanager
def _database(url: str) -> Iterator[Database]:
    db = open_database(url)
    try:
        yield db
    finally:
        db.close()


def _require_web_extra() -> None:
    try:
        import argon2  # noqa: F401
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise EdgefusionError(f"the review app needs {err.name}: pip install 'edgefusion[review]'") from None


def _read_password() -> str:
    """The new password: typed twice at a terminal, else the first line of stdin (for scripts)."""
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise EdgefusionError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise EdgefusionError("no password given: type one, or pipe it on stdin")
    return password


@review_app.command("serve")
def serve_command(
    db: Db = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    lease_minutes: Annotated[
        float, typer.Option(help="Minutes an item handed out stays reserved for its reviewer.")
    ] = 30.0,
    secure_cookies: Annotated[
        bool, typer.Option("--secure-cookies", help="Send cookies over HTTPS only (behind a TLS proxy).")
    ] = False,
) -> None:
    """Serve the review app: reviewers log in and work through the open tasks."""
    _require_web_extra()
    import uvicorn

    from edgefusion.review.app import create_app
    from edgefusion.review.auth import list_users

    app = create_app(db, lease=lease_minutes * 60, secure_cookies=secure_cookies)
    with _database(db) as database:
        if not list_users(database):
            console.print(
                f"[yellow]no accounts yet[/]: edgefusion review user add NAME --role admin --db {db}"
            )
    console.print(f"[green]review[/] {describe(db)} at http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@user_app.command("add")
def user_add_command(
    name: Annotated[str, typer.Argument(help="Login name (letters, digits, . _ -).")],
    role: Annotated[
        str, typer.Option(help="admin (opens tasks, exports) or reviewer (reviews only).")
    ] = "reviewer",
    db: Db = DEFAULT_DB,
    replace: Annotated[
        bool, typer.Option("--replace", help="Set a new password / role for an existing user.")
    ] = False,
) -> None:
    """Add an account; the password is asked twice at a terminal, or read from stdin's first line."""
    _require_web_extra()
    from edgefusion.review.auth import add_user, check_name

    check_name(name)
    password = _read_password()
    with _database(db) as database:
        add_user(database, name, role, password, replace=replace)
    console.print(f"[green]user[/] {name} ({role}) in {describe(db)}")


@user_app.command("list")
def user_list_command(db: Db = DEFAULT_DB) -> None:
    """List the accounts."""
    _require_web_extra()
    from edgefusion.review.auth import list_users

    with _database(db) as database:
        for user in list_users(database):
            console.print(f"{user['name']}\t{user['role']}")


@user_app.command("remove")
def user_remove_command(
    name: Annotated[str, typer.Argument(help="Login name.")], db: Db = DEFAULT_DB
) -> None:
    """Remove an account and end its sessions (its answers stay)."""
    _require_web_extra()
    from edgefusion.review.auth import remove_user

    with _database(db) as database:
        remove_user(database, name)
    console.print(f"removed {name}")


@review_app.command("curate")
def curate_command(
    dataset: Annotated[
        Path, typer.Argument(help="Dataset folder (metadata.jsonl + images), e.g. from data synthesize.")
    ],
    db: Db = DEFAULT_DB,
    name: Annotated[str | None, typer.Option(help="Task name (default: the folder's name).")] = None,
    overlap: Annotated[
        int | None, typer.Option(help="Reviewers per item (default 1; a re-opened task keeps its own).")
    ] = None,
) -> None:
    """Open a curation task: keep, drop (with a reason) or re-caption every sample of a dataset."""
    from edgefusion.review.tasks import open_curate_task

    with _database(db) as database:
        task, added = open_curate_task(database, dataset, name=name, overlap=overlap, by=getpass.getuser())
    console.print(
        f"[green]curation task[/] {task.id} {task.name!r}: {added} samples added, overlap {task.overlap}"
    )


@review_app.command("ab")
def ab_command(
    folders: Annotated[
        list[Path], typer.Argument(help="Two or more `edgefusion generate` folders, same prompts and seeds.")
    ],
    db: Db = DEFAULT_DB,
    name: Annotated[str | None, typer.Option(help="Task name (default: the models' names).")] = None,
    overlap: Overlap = 1,
) -> None:
    """Open a blind A/B task: every pair of models on every prompt, sides drawn at random."""
    from edgefusion.data.review_queue import progress
    from edgefusion.review.tasks import open_ab_task

    with _database(db) as database:
        task = open_ab_task(database, folders, name=name, overlap=overlap, by=getpass.getuser())
        items = progress(database, task)["items"]
    console.print(f"[green]A/B task[/] {task.id} {task.name!r}: {items} comparisons, overlap {task.overlap}")


@review_app.command("tasks")
def tasks_command(db: Db = DEFAULT_DB) -> None:
    """List the tasks and their progress."""
    from edgefusion.data.review_queue import list_tasks, progress

    table = Table("id", "name", "kind", "items", "overlap", "answers", "done")
    with _database(db) as database:
        for task in list_tasks(database):
            done = progress(database, task)
            table.add_row(
                str(task.id), task.name, task.kind, str(done["items"]), str(task.overlap),
                f"{done['answers']} / {done['wanted']}", f"{done['percent']}%",
            )  # fmt: skip
    console.print(table)


@review_app.command("export")
def export_command(
    task: TaskRef,
    out: Annotated[Path, typer.Option("--out", help="Folder for the curated dataset.")],
    db: Db = DEFAULT_DB,
    pending: Annotated[str, typer.Option(help="Samples nobody decided: keep or drop.")] = "keep",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output folder.")
    ] = False,
) -> None:
    """Write a curation task's dataset (edited captions in, drops in rejects.jsonl with every answer)."""
    from edgefusion.review.tasks import export_task

    with _database(db) as database:
        stats = export_task(database, task, out, pending=pending, overwrite=overwrite)
    reasons = ", ".join(f"{k}: {v}" for k, v in stats["reject_reasons"].items()) or "none"
    console.print(f"[green]export[/] {stats['kept']} kept, {stats['rejected']} removed ({reasons}) -> {out}")


@review_app.command("report")
def report_command(
    task: TaskRef,
    db: Db = DEFAULT_DB,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ties: Annotated[
        str, typer.Option(help="split (half a win each) or drop (left out of win rates).")
    ] = "split",
) -> None:
    """A/B: win rates with 95% Wilson intervals, votes, reviewers, Bradley-Terry ranking, votes
    needed. Curation: decisions and agreement (Cohen's or Fleiss' kappa)."""
    from edgefusion.review.report import task_report

    with _database(db) as database:
        report = task_report(database, task, ties)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    done = report["progress"]
    console.print(
        f"[bold]{report['task']}[/] ({report['kind']}): {done['answers']} of {done['wanted']} answers"
    )
    if report["kind"] == "ab":
        table = Table(
            "model A", "model B", "A wins", "B wins", "ties", "votes", "reviewers", "A win rate", "95% CI"
        )
        for pair in report["pairs"]:
            rate = "-" if pair["win_rate_a"] is None else f"{pair['win_rate_a']:.3f}"
            table.add_row(
                pair["model_a"], pair["model_b"], str(pair["wins_a"]), str(pair["wins_b"]),
                str(pair["ties"]), str(pair["votes"]), str(pair["reviewers"]), rate,
                f"{pair['ci95'][0]:.3f}-{pair['ci95'][1]:.3f}",
            )  # fmt: skip
        console.print(table)
        console.print(f"{report['ties_rule']}; {report['power_rule']}: {report['pairs'][0]['votes_needed']}")
        if report["ranking"]:
            ranking = ", ".join(f"{r['model']} {r['strength']:.3f}" for r in report["ranking"])
            console.print(
                f"Bradley-Terry: {ranking}" + (" (with a weak prior)" if report["ranking_prior"] else "")
            )
        return
    console.print("decisions: " + ", ".join(f"{k} {v}" for k, v in report["decisions"].items()))
    agreement = report["agreement"]
    if agreement and agreement["method"]:
        kappa = "undefined" if agreement["kappa"] is None else f"{agreement['kappa']:.3f}"
        console.print(
            f"{agreement['method']} {kappa} over {agreement['items']} items, "
            f"{agreement['reviewers']} reviewers"
        )
