"""Reviewer accounts and login sessions.

Passwords are kept only as argon2id hashes (salted, memory-hard; argon2-cffi's RFC 9106 defaults),
re-hashed on login when those defaults grow. A session is a random token in an HttpOnly cookie;
the database holds only its SHA-256, so a leaked database opens no session, and sessions live in
the database rather than in a signed cookie so that they survive a restart, work across servers
sharing PostgreSQL, and end for good at logout or when the account is removed. Each session carries
its own CSRF token, which every form of the app posts back.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from edgefusion.data.review_db import Database
from edgefusion.data.review_queue import RESERVED_NAMES
from edgefusion.errors import EdgefusionError

ROLES = ("admin", "reviewer")
SESSION_SECONDS = 24 * 3600
MIN_PASSWORD_LENGTH = 8
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    """A hash to verify against for unknown names, so a login takes as long whether or not the
    account exists."""
    return _hasher().hash(secrets.token_hex(16))


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name in RESERVED_NAMES:
        raise EdgefusionError(
            f"invalid reviewer name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (not "
            f"{', '.join(sorted(RESERVED_NAMES))})"
        )
    return name


def add_user(db: Database, name: str, role: str, password: str, *, replace: bool = False) -> None:
    """Create an account (or, with ``replace``, set an existing one's role and password, which
    ends its sessions)."""
    check_name(name)
    if role not in ROLES:
        raise EdgefusionError(f"unknown role {role!r}: use {' or '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise EdgefusionError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    hashed = _hasher().hash(password)
    with db.transaction():
        existing = db.query_one("SELECT id FROM users WHERE name = ?", (name,))
        if existing and not replace:
            raise EdgefusionError(
                f"user {name!r} exists already: pass --replace to set a new password or role"
            )
        if existing:
            db.execute(
                "UPDATE users SET role = ?, password_hash = ? WHERE id = ?", (role, hashed, existing["id"])
            )
            db.execute("DELETE FROM sessions WHERE user_id = ?", (existing["id"],))
        else:
            db.execute(
                "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                (name, role, hashed, time.time()),
            )


def remove_user(db: Database, name: str) -> None:
    """Delete an account and its sessions; its answers stay, under its name."""
    with db.transaction():
        user = db.query_one("SELECT id FROM users WHERE name = ?", (name,))
        if user is None:
            raise EdgefusionError(f"no user {name!r}")
        db.execute("DELETE FROM sessions WHERE user_id = ?", (user["id"],))
        db.execute("DELETE FROM users WHERE id = ?", (user["id"],))


def list_users(db: Database) -> list[dict[str, Any]]:
    return db.query("SELECT name, role, created_at FROM users ORDER BY name")


def authenticate(db: Database, name: str, password: str) -> dict[str, Any] | None:
    """The account whose name and password these are, or None."""
    user = db.query_one("SELECT id, name, role, password_hash FROM users WHERE name = ?", (name,))
    try:
        _hasher().verify(user["password_hash"] if user else _decoy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher().check_needs_rehash(user["password_hash"]):
        db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (_hasher().hash(password), user["id"]))
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(db: Database, user_id: int) -> str:
    """A new session token for ``user_id`` (expired sessions are swept on the way)."""
    token = secrets.token_urlsafe(32)
    now = time.time()
    with db.transaction():
        db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
        db.execute(
            "INSERT INTO sessions (token_hash, user_id, csrf, expires_at) VALUES (?, ?, ?, ?)",
            (_digest(token), user_id, secrets.token_urlsafe(32), now + SESSION_SECONDS),
        )
    return token


def session_user(db: Database, token: str | None) -> dict[str, Any] | None:
    """The account of a live session token, with the session's ``csrf`` token; None otherwise."""
    if not token:
        return None
    return db.query_one(
        "SELECT u.id, u.name, u.role, s.csrf FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.token_hash = ? AND s.expires_at > ?",
        (_digest(token), time.time()),
    )


def end_session(db: Database, token: str | None) -> None:
    if token:
        db.execute("DELETE FROM sessions WHERE token_hash = ?", (_digest(token),))


def tokens_match(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of a posted CSRF token with the expected one."""
    return bool(given) and bool(expected) and secrets.compare_digest(str(given), str(expected))
