"""The review database: one schema on SQLite (a file, nothing to set up) or PostgreSQL (a server).

Code writes SQL once, in the dialect both share, with ``?`` placeholders; :class:`Database`
translates the few differences (placeholders, auto-increment keys, float type) for PostgreSQL and
hands back rows as dicts. The schema is a numbered list of migrations, applied in order and
recorded in ``schema_migrations``, so a file written by an older release (the first version is the
queue ``edgefusion data curate`` used to write) is upgraded in place, and a file from a newer
release is refused instead of misread.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed answer survives a killed server (and
a power cut), and readers never block the one writer. Writes take the database lock at the start
of their transaction (``BEGIN IMMEDIATE``), so two concurrent writers queue up instead of failing;
on PostgreSQL, :meth:`Database.lock_task` serialises the writers of one task with a row lock.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgefusion.atomic import make_output_dir
from edgefusion.errors import EdgefusionError

POSTGRES_PREFIXES = ("postgresql://", "postgres://")
#: Seconds a writer waits for another one to commit before giving up.
BUSY_TIMEOUT = 30.0

# Each migration: (version, what it does, statements). Never edit a released one; append.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "review queue of `edgefusion data curate`",
        [
            """CREATE TABLE IF NOT EXISTS items (
                id TEXT PRIMARY KEY, position INTEGER NOT NULL, file TEXT NOT NULL, text TEXT NOT NULL,
                clip_score REAL, attributes_ok INTEGER, status TEXT NOT NULL DEFAULT 'pending',
                reason TEXT, new_text TEXT, decided_by TEXT, decided_at REAL)""",
        ],
    ),
    (
        2,
        "tasks, reviewers, sessions, hand-outs and answers; queue items belong to a task",
        [
            """CREATE TABLE tasks (
                id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, name TEXT NOT NULL UNIQUE,
                source TEXT, overlap INTEGER NOT NULL DEFAULT 1, created_by TEXT,
                created_at REAL NOT NULL)""",
            """CREATE TABLE task_models (
                task_id INTEGER NOT NULL REFERENCES tasks (id), idx INTEGER NOT NULL, name TEXT NOT NULL,
                folder TEXT NOT NULL, PRIMARY KEY (task_id, idx))""",
            "ALTER TABLE items RENAME TO items_v1",
            """CREATE TABLE items (
                task_id INTEGER NOT NULL REFERENCES tasks (id), id TEXT NOT NULL, position INTEGER NOT NULL,
                file TEXT NOT NULL, text TEXT NOT NULL, clip_score REAL, attributes_ok INTEGER,
                status TEXT NOT NULL DEFAULT 'pending', reason TEXT, new_text TEXT, decided_by TEXT,
                decided_at REAL, PRIMARY KEY (task_id, id))""",
            # A queue written before tasks existed becomes a curation task whose dataset is claimed
            # by the next `data curate` run on it (its source was not recorded).
            """INSERT INTO tasks (kind, name, source, overlap, created_by, created_at)
                SELECT 'curate', 'queue', NULL, 1, 'migration', 0 WHERE EXISTS (SELECT 1 FROM items_v1)""",
            """INSERT INTO items (task_id, id, position, file, text, clip_score, attributes_ok, status,
                reason, new_text, decided_by, decided_at)
                SELECT (SELECT MIN(id) FROM tasks), id, position, file, text, clip_score, attributes_ok,
                status, reason, new_text, decided_by, decided_at FROM items_v1""",
            "DROP TABLE items_v1",
            "CREATE INDEX items_task_position ON items (task_id, position)",
            """CREATE TABLE pairs (
                task_id INTEGER NOT NULL, item_id TEXT NOT NULL, seed BIGINT NOT NULL,
                model_a INTEGER NOT NULL, model_b INTEGER NOT NULL, file_a TEXT NOT NULL,
                file_b TEXT NOT NULL, PRIMARY KEY (task_id, item_id),
                FOREIGN KEY (task_id, item_id) REFERENCES items (task_id, id))""",
            """CREATE TABLE users (
                id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
                password_hash TEXT NOT NULL, created_at REAL NOT NULL)""",
            """CREATE TABLE sessions (
                token_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                csrf TEXT NOT NULL, expires_at REAL NOT NULL)""",
            """CREATE TABLE assignments (
                task_id INTEGER NOT NULL, item_id TEXT NOT NULL, reviewer TEXT NOT NULL,
                flipped INTEGER NOT NULL DEFAULT 0, assigned_at REAL NOT NULL,
                PRIMARY KEY (task_id, item_id, reviewer),
                FOREIGN KEY (task_id, item_id) REFERENCES items (task_id, id))""",
            "CREATE INDEX assignments_reviewer ON assignments (task_id, reviewer, assigned_at)",
            """CREATE TABLE answers (
                id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER NOT NULL, item_id TEXT NOT NULL,
                reviewer TEXT NOT NULL, action TEXT NOT NULL, reason TEXT, text TEXT, winner INTEGER,
                flipped INTEGER, created_at REAL NOT NULL, undone INTEGER NOT NULL DEFAULT 0,
                FOREIGN KEY (task_id, item_id) REFERENCES items (task_id, id))""",
            # At most one standing answer per reviewer and item: a retried post cannot count twice.
            "CREATE UNIQUE INDEX answers_one_standing ON answers (task_id, item_id, reviewer) "
            "WHERE undone = 0",
            "CREATE INDEX answers_reviewer ON answers (task_id, reviewer, id)",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def is_postgres(url: str | Path) -> bool:
    return str(url).startswith(POSTGRES_PREFIXES)


def describe(url: str | Path) -> str:
    """``url`` fit for messages and logs: a PostgreSQL password is masked."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", str(url))


class Database:
    """One connection to the review database (use one per thread), rows as dicts."""

    def __init__(self, url: str | Path) -> None:
        self.url = str(url)
        self.postgres = is_postgres(url)
        self._depth = 0
        self.conn = _connect_postgres(self.url) if self.postgres else _connect_sqlite(Path(url))

    def close(self) -> None:
        self.conn.close()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the cursor's ``rowcount`` says how many rows it changed."""
        return self.conn.execute(self._sql(sql), tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self.conn.execute(self._sql(sql), tuple(params)).fetchall())

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        return self.conn.execute(self._sql(sql), tuple(params)).fetchone()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.query_one(sql, params)
        return None if row is None else next(iter(row.values()))

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction, committed when the block ends (rolled back on error). Nested blocks
        join the outer one, so helpers can be called inside a caller's transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN" if self.postgres else "BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    def lock_task(self, task_id: int) -> None:
        """Serialise the writers of one task until the transaction ends (SQLite's ``BEGIN
        IMMEDIATE`` already serialises all writers)."""
        if self.postgres:
            self.execute("SELECT id FROM tasks WHERE id = ? FOR UPDATE", (task_id,))


def _dict_row(cursor: sqlite3.Cursor, values: tuple) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, values, strict=True)}


def _connect_sqlite(path: Path) -> sqlite3.Connection:
    make_output_dir(path.parent)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    conn.row_factory = _dict_row
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as err:
        conn.close()
        raise _not_a_database(path, err) from None
    return conn


def _not_a_database(path: str | Path, err: Exception) -> EdgefusionError:
    return EdgefusionError(
        f"{path} is not a review database ({err}): point --db at a file `edgefusion data curate` or "
        "`edgefusion review` wrote, or at a new file"
    )


def _connect_postgres(url: str) -> Any:
    try:
        import psycopg
        from psycopg.rows import dict_row
    except ImportError:
        raise EdgefusionError("a PostgreSQL --db needs psycopg: pip install 'edgefusion[review]'") from None
    try:
        return psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=10)
    except psycopg.OperationalError as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EdgefusionError(
            f"cannot connect to {describe(url)} ({message}): is the server running?"
        ) from None


def _postgres_ddl(sql: str) -> str:
    sql = sql.replace(
        "INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    )
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", re.sub(r"\bINTEGER\b", "BIGINT", sql))


def migrate(db: Database) -> int:
    """Apply the migrations ``db`` lacks, each in its own transaction; return the schema version."""
    ledger = "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)"
    db.execute(_postgres_ddl(ledger) if db.postgres else ledger)
    for version, _, statements in MIGRATIONS:
        with db.transaction():
            if db.postgres:  # two servers starting at once must not both migrate
                db.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
            if db.query_one("SELECT version FROM schema_migrations WHERE version = ?", (version,)):
                continue
            for statement in statements:
                db.execute(_postgres_ddl(statement) if db.postgres else statement)
            db.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, time.time())
            )
    newest = db.scalar("SELECT MAX(version) FROM schema_migrations")
    if newest > SCHEMA_VERSION:
        raise EdgefusionError(
            f"{describe(db.url)} has schema version {newest}, newer than this edgefusion's "
            f"{SCHEMA_VERSION}: upgrade edgefusion"
        )
    return newest


def open_database(url: str | Path) -> Database:
    """Connect to the review database at ``url`` (a file path or ``postgresql://`` URL), creating
    or upgrading its schema; a file that is no SQLite database is an error naming it."""
    db = Database(url)
    try:
        migrate(db)
    except sqlite3.DatabaseError as err:
        db.close()
        raise _not_a_database(url, err) from None
    except BaseException:
        db.close()
        raise
    return db


class ThreadDatabases:
    """One connection per thread to an already migrated database: the web server answers requests
    on a pool of threads, and neither SQLite nor PostgreSQL connections may be shared by two at once."""

    def __init__(self, url: str | Path) -> None:
        self.url = url
        self._local = threading.local()

    def get(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = Database(self.url)
        return db
