"""Database: pragmas and schema migrations."""

from __future__ import annotations

from pathlib import Path

import pytest

from kittiwake.store import db
from kittiwake.store.errors import SchemaTooNew


def test_connect_uses_wal_full_sync_and_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "kittiwake.db"
    conn = db.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    latest = db.MIGRATIONS[-1].version
    assert db.schema_version(conn) == latest
    conn.close()
    again = db.connect(path)  # idempotent
    assert again.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == latest
    again.close()


def test_later_migrations_apply_in_order(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "k.db")
    extra = db.Migration(len(db.MIGRATIONS) + 1, "queue", ("CREATE TABLE queue (id TEXT)",))
    assert db.migrate(conn, (*db.MIGRATIONS, extra)) == extra.version
    conn.execute("INSERT INTO queue VALUES ('x')")
    conn.close()


def test_a_database_from_a_newer_program_is_refused(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "k.db")
    conn.execute("INSERT INTO schema_version VALUES (999)")
    conn.close()
    with pytest.raises(SchemaTooNew):
        db.connect(tmp_path / "k.db")


def test_derived_data_commits_skip_the_wal_fsync_and_restore_the_level(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "k.db")
    conn.execute("CREATE TABLE t (x)")
    with db.derived(conn):
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        db.transaction(conn, lambda c: c.execute("INSERT INTO t VALUES (1)"))
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    with pytest.raises(ZeroDivisionError), db.derived(conn):
        db.transaction(conn, lambda c: (c.execute("INSERT INTO t VALUES (2)"), 1 / 0))
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]  # the failed one rolled back
    relaxed = db.connect(tmp_path / "k.db", durable=False)
    with db.derived(relaxed):
        pass
    assert relaxed.execute("PRAGMA synchronous").fetchone()[0] == 1  # left as it was


def test_derived_data_left_in_a_transaction_still_restores_full_sync(tmp_path: Path) -> None:
    """A transaction left open inside `derived` would make restoring FULL fail (SQLite
    refuses to change the level mid-transaction) and leave deliveries unsynced."""
    conn = db.connect(tmp_path / "k.db")
    conn.execute("CREATE TABLE t (x)")
    with db.derived(conn):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
