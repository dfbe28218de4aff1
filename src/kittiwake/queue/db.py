"""The queue's tables in the shared SQLite database, and the connection it uses.

The queue lives in `<data>/kittiwake.db` next to the store's tables but keeps its own
`queue_schema_version` and migrations, independent of the store's `schema_version`, so the
two parts evolve without coordinating and neither can break the other's upgrade.  Every
statement is CREATE ... IF NOT EXISTS, so a half-applied step (impossible inside one
transaction, but cheap to allow) is harmless to re-run.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["BUSY_TIMEOUT_MS", "connect", "migrate"]

BUSY_TIMEOUT_MS = 5000
"""How long a connection waits for another writer (CLI vs. server) before giving up."""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # version 1
        """CREATE TABLE IF NOT EXISTS queue_messages (
            queue_id  TEXT PRIMARY KEY,
            sender    TEXT NOT NULL,
            envid     TEXT,
            ret       TEXT,
            smtputf8  INTEGER NOT NULL DEFAULT 0,
            eight_bit INTEGER NOT NULL DEFAULT 0,
            size      INTEGER NOT NULL,
            arrival   REAL NOT NULL,
            origin    TEXT NOT NULL,
            auth_user TEXT
        ) WITHOUT ROWID""",
        # dsn: the notification still owed (it keeps the file alive until sent);
        # lease_until: handed to a delivery attempt that has not reported back yet.
        """CREATE TABLE IF NOT EXISTS queue_recipients (
            id           INTEGER PRIMARY KEY,
            queue_id     TEXT NOT NULL REFERENCES queue_messages(queue_id) ON DELETE CASCADE,
            recipient    TEXT NOT NULL,
            domain       TEXT NOT NULL,
            orcpt        TEXT,
            notify       TEXT,
            state        TEXT NOT NULL DEFAULT 'queued'
                         CHECK (state IN ('queued', 'delivered', 'bounced', 'deleted')),
            attempts     INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL,
            last_reply   TEXT,
            last_host    TEXT,
            first_seen   REAL NOT NULL,
            warned       INTEGER NOT NULL DEFAULT 0,
            last_attempt REAL,
            dsn          TEXT CHECK (dsn IN ('failure', 'delay', 'success')),
            lease_until  REAL NOT NULL DEFAULT 0,
            UNIQUE (queue_id, recipient)
        )""",
        "CREATE INDEX IF NOT EXISTS queue_recipients_due ON queue_recipients(state, next_attempt)",
        "CREATE INDEX IF NOT EXISTS queue_recipients_domain ON queue_recipients(domain)",
        "CREATE INDEX IF NOT EXISTS queue_recipients_dsn ON queue_recipients(dsn) "
        "WHERE dsn IS NOT NULL",
    ),
)


def connect(path: Path, *, durable: bool) -> sqlite3.Connection:
    """Same pragmas as the store (store/db.py explains WAL and synchronous=FULL): every
    COMMIT is durable, which is what "250 only after the row is committed" needs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the queue tables up to date; return the resulting version.

    The usual case (already current) takes no write lock.  Otherwise all pending steps and
    their version bumps run in one IMMEDIATE transaction that re-reads the version first, so
    two processes starting at once (server and CLI) cannot both apply a step.
    """
    latest = len(_MIGRATIONS)
    if _version(conn) == latest:
        return latest
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = _version(conn)
        if current > latest:
            raise RuntimeError(f"queue schema v{current} is newer than this program (v{latest})")
        for version in range(current + 1, latest + 1):
            for statement in _MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO queue_schema_version (version) VALUES (?)", (version,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return latest


def _version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS queue_schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM queue_schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0
