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
stay until the index is rebuilt, and every answer is intersected with the messages that
exist, so they are never reported.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from typing import Any

from kittiwake.message.headers import header_bounds
from kittiwake.store import search
from kittiwake.store.search import BodyMatch, HeaderMatch, TextQuery

log = logging.getLogger(__name__)

HEADER_COLUMNS = {"from": "hfrom", "to": "hto", "cc": "hcc", "bcc": "hbcc",
                  "subject": "hsubject"}
COLUMNS = ("hdr", "body", *HEADER_COLUMNS.values())
MIN_NEEDLE = 3  # trigram: shorter needles cannot use the index
_MAX_VALIDITY = 2**31 - 1

CREATE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5("
    + ", ".join(COLUMNS)
    + ", tokenize='trigram case_sensitive 1', content='', detail=full)"
)


def ensure(conn: sqlite3.Connection) -> bool:
    """Create the index table; False when this SQLite has no FTS5 trigram tokenizer (then
    every content search scans, which is slower but answers the same)."""
    try:
        conn.execute(CREATE)
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


def insert(conn: sqlite3.Connection, rows: Iterable[tuple[int, tuple[str, ...]]]) -> None:
    """Add documents; the caller owns the transaction."""
    conn.executemany(
        f"INSERT INTO fts (rowid, {', '.join(COLUMNS)}) VALUES (?{', ?' * len(COLUMNS)})",
        [(rid, *doc) for rid, doc in rows],
    )
