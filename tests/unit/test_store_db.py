"""Database: pragmas and schema migrations."""

from __future__ import annotations

import sqlite3
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


def _plan(conn: sqlite3.Connection, sql: str) -> str:
    return " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))


def test_a_v3_index_moves_structures_to_their_own_table_and_keeps_its_rows(
        tmp_path: Path) -> None:
    raw = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    assert db.migrate(raw, db.MIGRATIONS[:3]) == 3
    raw.execute("PRAGMA foreign_keys = OFF")
    raw.executemany(
        "INSERT INTO messages (mailbox_id, uid, filename, flags, internaldate, size, modseq,"
        " structure) VALUES (1, ?, ?, 'S', 1.0, 10, 2, ?)",
        [(7, "base7", '{"type": "text"}'), (8, "base8", None)])
    assert db.migrate(raw, db.MIGRATIONS) == db.MIGRATIONS[-1].version
    columns = [r[1] for r in raw.execute("PRAGMA table_info(messages)")]
    assert "structure" not in columns and "filename" in columns
    assert raw.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'messages_meta'"
                       ).fetchone() == (0,)
    assert raw.execute("SELECT uid, filename, flags FROM messages ORDER BY uid").fetchall() == [
        (7, "base7", "S"), (8, "base8", "S")]
    assert raw.execute("SELECT mailbox_id, uid, structure FROM structures").fetchall() == [
        (1, 7, '{"type": "text"}')]
    raw.execute("DELETE FROM messages WHERE uid = 7")  # the structure goes with its message
    assert raw.execute("SELECT COUNT(*) FROM structures").fetchone() == (0,)


def test_structures_are_written_apart_and_read_back_joined(tmp_path: Path) -> None:
    """`messages` stays narrow (a point lookup from disk walks few small pages), so a
    lookup that needs no structure must not touch the structures table."""
    from kittiwake.store import index, messageops

    conn = db.connect(tmp_path / "k.db")
    conn.execute("PRAGMA foreign_keys = OFF")
    index.insert_messages(conn, [(1, 5, "b5", "", 1.0, 10, 2, '{"s": 5}'),
                                 (1, 6, "b6", "", 1.0, 10, 3, None)])
    index.store_structures(conn, 1, [(6, '{"s": 6}'), (9, '{"gone": 1}')])  # 9: no message
    assert conn.execute("SELECT uid FROM structures ORDER BY uid").fetchall() == [(5,), (6,)]
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    assert messageops.select_uids(conn, "uid, filename, structure", 1, [5, 6]) == [
        (5, "b5", '{"s": 5}'), (6, "b6", '{"s": 6}')]
    assert messageops.select_uids(conn, "uid, filename, flags", 1, [5]) == [(5, "b5", "")]
    messageops.select_uids(conn, "uid, filename, flags, size", 1, list(range(1, 2000)))
    conn.set_trace_callback(None)
    plans = [_plan(conn, sql) for sql in seen]
    assert "structures" in plans[0]
    assert all("structures" not in p and "PRIMARY KEY" in p for p in plans[1:]), plans


def test_expunge_records_are_bounded_and_the_floor_marks_what_was_dropped(
        tmp_path: Path) -> None:
    from kittiwake.store import index, messageops

    conn = db.connect(tmp_path / "k.db")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("INSERT INTO mailboxes (id, account_id, name, uidvalidity, uidnext,"
                 " highestmodseq) VALUES (1, 1, 'INBOX', 1, 9, 10)")
    index.insert_messages(conn, [(1, u, f"b{u}", "", 1.0, 1, 2, None) for u in range(1, 9)])
    for batch in ([2], [3, 4], [6]):  # three expunges, one modseq each
        conn.executemany("DELETE FROM messages WHERE mailbox_id = 1 AND uid = ?",
                         [(u,) for u in batch])
        conn.execute("UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = 1")
        index.prune_expunged(conn, 1, keep=3)
    # Keeping 3 records drops whole expunges only: uid 2's went, 3 and 4 stay together.
    assert conn.execute("SELECT uid, modseq FROM expunged ORDER BY uid").fetchall() == [
        (3, 12), (4, 12), (6, 13)]
    assert conn.execute("SELECT expunged_floor FROM mailboxes").fetchone() == (11,)
    full = messageops.changes(conn, 1, 11)
    assert full.present is None and full.expunged == (3, 4, 6)
    partial = messageops.changes(conn, 1, 10)  # uid 2's record is gone: compare instead
    assert partial.present == (1, 5, 7, 8)
