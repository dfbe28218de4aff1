"""Full-text index for SEARCH (RFC 9051 §6.4.4 TEXT, BODY, FROM, TO, CC, BCC, SUBJECT):
SQLite FTS5 with the trigram tokenizer, filled after delivery by the indexer.

Why trigrams: IMAP SEARCH is substring matching ("inv" finds "invoice"), which a word index
cannot answer exactly.  FTS5's trigram tokenizer turns a quoted query of three or more
characters into "these trigrams at consecutive positions", which is exactly "contains this
substring".  The indexed text is the same normalised text `search.py` scans (decoded,
case-folded, white space collapsed, values joined by newlines a needle can never contain),
so an indexed answer is identical to a scan; needles shorter than three characters, HEADER
keys on other fields and messages not indexed yet are scanned instead.

One row per message, rowid = UIDVALIDITY << 32 | UID: UIDVALIDITY values are never reused
(db.py keeps the largest retired one), so a row can never be mistaken for a later message.
The table is contentless (the text lives in the mail files; the index is ~3× the text),
and SQLite before 3.43 cannot delete from a contentless table: rows of expunged messages
stay, and every answer is intersected with the messages that exist, so they are never
reported.  To keep the index from growing for ever, it is compacted: once it holds more
dead rows than live ones (and at least COMPACT_MIN_DEAD), the indexer builds a fresh copy
(`fts_next`) of the live messages in the background while searches keep using the old
one, then swaps them in one transaction (`fts_rebuild` records how far it got per
mailbox, so a restart carries on).  Messages indexed meanwhile go into both tables.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from typing import Any

from kittiwake.message.headers import header_bounds
from kittiwake.store import db, search
from kittiwake.store.index import WITH_STRUCTURE
from kittiwake.store.search import BodyMatch, HeaderMatch, TextQuery

log = logging.getLogger(__name__)

HEADER_COLUMNS = {"from": "hfrom", "to": "hto", "cc": "hcc", "bcc": "hbcc",
                  "subject": "hsubject"}
COLUMNS = ("hdr", "body", *HEADER_COLUMNS.values())
MIN_NEEDLE = 3  # trigram: shorter needles cannot use the index
_MAX_VALIDITY = 2**31 - 1

NEXT = "fts_next"  # the compacted copy being built
COMPACT_MIN_DEAD = 10_000  # dead rows below this are not worth a rebuild


def _create(table: str) -> str:
    return (f"CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING fts5("
            + ", ".join(COLUMNS)
            + ", tokenize='trigram case_sensitive 1', content='', detail=full)")


def ensure(conn: sqlite3.Connection) -> bool:
    """Create the index table; False when this SQLite has no FTS5 trigram tokenizer (then
    every content search scans, which is slower but answers the same)."""
    try:
        conn.execute(_create("fts"))
        conn.execute("CREATE TABLE IF NOT EXISTS fts_rebuild (mailbox_id INTEGER PRIMARY KEY,"
                     " upto INTEGER NOT NULL, done INTEGER NOT NULL)")
    except sqlite3.OperationalError as exc:
        log.warning("full-text index unavailable (%s); SEARCH will scan messages", exc)
        return False
    return True


def available(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'fts'").fetchone()
    return row is not None


def rowid(uidvalidity: int, uid: int) -> int | None:
    if not 0 < uidvalidity <= _MAX_VALIDITY:
        return None
    return (uidvalidity << 32) | uid


def document(raw: bytes, struct: dict[str, Any]) -> tuple[str, ...]:
    """The indexed columns of one message, in COLUMNS order, built by the same functions
    the scan uses."""
    header, body = search.full_text(raw, struct)
    block = raw[: header_bounds(raw)[0]]
    fields = ["\n".join(search.header_values(block, name)) for name in HEADER_COLUMNS]
    return (header, body, *fields)


def usable(query: TextQuery) -> bool:
    if isinstance(query, BodyMatch):
        return len(search.normalise(query.value)) >= MIN_NEEDLE
    if isinstance(query, HeaderMatch):
        return query.name in HEADER_COLUMNS and len(search.normalise(query.value)) >= MIN_NEEDLE
    return False


def match(conn: sqlite3.Connection, uidvalidity: int, query: TextQuery) -> set[int]:
    """UIDs (of this UIDVALIDITY) whose indexed text contains the needle; includes rows of
    expunged messages, which the caller intersects away."""
    lo = rowid(uidvalidity, 0)
    assert lo is not None and usable(query) and not isinstance(query, search.SentDate)
    needle = search.normalise(query.value)
    phrase = '"' + needle.replace('"', '""') + '"'
    if isinstance(query, BodyMatch):
        columns = "{hdr body}" if query.with_headers else "{body}"
    else:
        assert isinstance(query, HeaderMatch)
        columns = "{" + HEADER_COLUMNS[query.name] + "}"
    rows = conn.execute(
        "SELECT rowid FROM fts WHERE fts MATCH ? AND rowid BETWEEN ? AND ?",
        (f"{columns} : {phrase}", lo, lo + 0xFFFFFFFF),
    )
    return {r[0] & 0xFFFFFFFF for r in rows}


def insert(conn: sqlite3.Connection, rows: Iterable[tuple[int, tuple[str, ...]]],
           table: str = "fts") -> None:
    """Add documents; the caller owns the transaction."""
    conn.executemany(
        f"INSERT INTO {table} (rowid, {', '.join(COLUMNS)}) VALUES (?{', ?' * len(COLUMNS)})",
        [(rid, *doc) for rid, doc in rows],
    )


# ---------------------------------------------------------------------------- compaction


def rebuilding(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (NEXT,)).fetchone() is not None


def counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """(rows in the index, live messages it covers): the difference is dead rows."""
    rows = conn.execute("SELECT COUNT(*) FROM fts").fetchone()[0]
    live = conn.execute(
        "SELECT COUNT(*) FROM messages m JOIN index_state s ON s.mailbox_id = m.mailbox_id"
        " WHERE m.uid <= s.indexed_uid").fetchone()[0]
    return int(rows), int(live)


def compaction_due(conn: sqlite3.Connection) -> bool:
    """Whether the index is more dead than alive (a read: two counts)."""
    if rebuilding(conn):
        return False
    rows, live = counts(conn)
    return rows - live >= max(live, COMPACT_MIN_DEAD, 1)


def start_compaction(conn: sqlite3.Connection) -> bool:
    """Begin a rebuild (see `compaction_due`); False if one is under way already."""
    if rebuilding(conn):
        return False
    def start(conn: sqlite3.Connection) -> None:
        conn.execute(_create(NEXT))
        conn.execute("DELETE FROM fts_rebuild")
        # The copy takes each mailbox's messages up to the indexer's mark now; later ones
        # the indexer puts into both tables (`upto` tells it which).
        conn.execute("INSERT INTO fts_rebuild (mailbox_id, upto, done)"
                     " SELECT mailbox_id, indexed_uid, 0 FROM index_state")

    db.transaction(conn, start)
    log.info("event=fts_compaction_started")
    return True


def also_next(conn: sqlite3.Connection, mailbox_id: int, uid: int) -> bool:
    """Whether a message the indexer is adding must go into the copy too: during a
    rebuild, those above the copy's snapshot of its mailbox."""
    if not rebuilding(conn):
        return False
    row = conn.execute("SELECT upto FROM fts_rebuild WHERE mailbox_id = ?",
                       (mailbox_id,)).fetchone()
    return row is None or uid > row[0]


RebuildWork = tuple[int, int, int, list[tuple[int, str, str, str | None]]]


def rebuild_work(conn: sqlite3.Connection, limit: int) -> RebuildWork | None:
    """The next messages to copy: (mailbox id, UIDVALIDITY, the UID done after them,
    [(uid, file name, flags, structure JSON)]); None when the copy is complete."""
    while True:
        row = conn.execute("SELECT r.mailbox_id, r.upto, r.done, m.uidvalidity FROM fts_rebuild r"
                           " LEFT JOIN mailboxes m ON m.id = r.mailbox_id WHERE r.done < r.upto"
                           " ORDER BY r.mailbox_id LIMIT 1").fetchone()
        if row is None:
            return None
        mailbox_id, upto, done, validity = row
        if validity is None:  # deleted meanwhile: nothing of it to copy
            conn.execute("DELETE FROM fts_rebuild WHERE mailbox_id = ?", (mailbox_id,))
            continue
        items = conn.execute(
            f"SELECT uid, filename, flags, structure FROM {WITH_STRUCTURE}"
            " WHERE mailbox_id = ? AND uid > ? AND uid <= ? ORDER BY uid LIMIT ?",
            (mailbox_id, done, upto, limit)).fetchall()
        new_done = items[-1][0] if len(items) == limit else upto
        return mailbox_id, int(validity), new_done, items


def rebuild_commit(conn: sqlite3.Connection, mailbox_id: int, done: int,
                   rows: Iterable[tuple[int, tuple[str, ...]]]) -> None:
    """Add a batch to the copy and record the progress; the caller owns the transaction."""
    insert(conn, rows, NEXT)
    conn.execute("UPDATE fts_rebuild SET done = MAX(done, ?) WHERE mailbox_id = ?",
                 (done, mailbox_id))


def finish_compaction(conn: sqlite3.Connection) -> bool:
    """Swap the finished copy in; False while some of it is still to do."""
    if not rebuilding(conn):
        return False
    def swap(conn: sqlite3.Connection) -> bool:
        pending = conn.execute("SELECT COUNT(*) FROM fts_rebuild r JOIN mailboxes m"
                               " ON m.id = r.mailbox_id WHERE r.done < r.upto").fetchone()[0]
        if pending:
            return False
        conn.execute("DROP TABLE fts")
        conn.execute(f"ALTER TABLE {NEXT} RENAME TO fts")
        conn.execute("DELETE FROM fts_rebuild")
        return True

    if not db.transaction(conn, swap):
        return False
    log.info("event=fts_compaction_finished")
    return True
