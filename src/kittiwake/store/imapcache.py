"""The indexer's IMAP response cache as FETCH and SEARCH read it (tables of db.py
migration 3: `imap_cache` with ENVELOPE/BODYSTRUCTURE/BODY text, `imap_header` with the
header block), and the index columns FETCH's fast path needs, in one query per batch.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from kittiwake.message.headers import header_bounds


@dataclass(frozen=True, slots=True)
class Cached:
    """The indexer's IMAP text for one message (see db.py migration 3)."""

    envelope: str
    bodystructure: str
    body: str
    ascii: bool
    header: bytes


#: A message as FETCH's fast path needs it — a plain tuple, as SQLite returns it (an
#: object per row would be a large part of the cost at 100,000 rows):
#: (uid, flags text in canonical order, internaldate, size, modseq, ENVELOPE, BODYSTRUCTURE,
#:  BODY (UTF-8 IMAP text, None where the indexer has not been yet), ascii, header block).
#: A query for index columns alone returns just the leading ones asked for (see
#: `fast_rows`): at 100,000 rows every column costs.
FastRow = tuple[Any, ...]
UID: Final = 0
FLAGS: Final = 1
INTERNALDATE: Final = 2
SIZE: Final = 3
MODSEQ: Final = 4
ENVELOPE: Final = 5
BODYSTRUCTURE: Final = 6
BODY: Final = 7
ASCII: Final = 8
HEADER: Final = 9


def _missing(uid: int) -> FastRow:
    return (uid, "", 0.0, 0, 0, None, None, None, None, None)


def fast_rows(conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int], *,
              structures: bool, header: str | None, index: bool = True,
              flags_only: bool = False) -> list[FastRow]:
    """One query for a whole FETCH batch; a big set is read as its UID range.  The cache
    tables are joined only for what the items need (their rows are large); `header` names
    the column wanted ("header" or "common"); `index` False says no column of the messages
    table is needed (flags, dates, sizes, modseq).  Without cache columns the rows stop
    after MODSEQ, or after FLAGS with `flags_only` (UID FETCH 1:* (FLAGS), the hot one)."""
    assert header in (None, "header", "common")
    if not uids:
        return []
    wanted = sorted(set(uids))
    if index and not structures and not header:
        cols = "uid, flags" if flags_only else "uid, flags, internaldate, size, modseq"
        rows = conn.execute(f"SELECT {cols} FROM messages WHERE mailbox_id = ? AND uid"
                            " BETWEEN ? AND ? ORDER BY uid", (mailbox_id, wanted[0], wanted[-1]))
        if len(wanted) == wanted[-1] - wanted[0] + 1:
            return rows.fetchall()
        keep = set(wanted)
        return [r for r in rows if r[0] in keep]
    table = {"header": "imap_header", "common": "imap_common"}.get(header or "")
    if not index and (structures or header):
        # No index column is wanted: read the cache table(s) alone, in key order (every
        # row there belongs to a live message; one without is not indexed yet and goes the
        # slow way).
        if structures and header:
            sql = ("SELECT c.uid, '', 0.0, 0, 0, c.envelope, c.bodystructure, c.body, c.ascii,"
                   f" h.{header} FROM imap_cache c JOIN {table} h ON h.mailbox_id ="
                   " c.mailbox_id AND h.uid = c.uid WHERE c.mailbox_id = ? AND c.uid"
                   " BETWEEN ? AND ?")
        elif structures:
            sql = ("SELECT uid, '', 0.0, 0, 0, envelope, bodystructure, body, ascii, NULL"
                   " FROM imap_cache WHERE mailbox_id = ? AND uid BETWEEN ? AND ?")
        else:
            sql = (f"SELECT uid, '', 0.0, 0, 0, NULL, NULL, NULL, NULL, {header}"
                   f" FROM {table} WHERE mailbox_id = ? AND uid BETWEEN ? AND ?")
        keep = set(wanted)
        found = {r[0]: r for r in conn.execute(sql, (mailbox_id, wanted[0], wanted[-1]))
                 if r[0] in keep}
        return [found.get(u) or _missing(u) for u in wanted]
    cols = ("c.envelope, c.bodystructure, c.body, c.ascii" if structures
            else "NULL, NULL, NULL, NULL")
    cols += f", h.{header}" if header else ", NULL"
    join = (" LEFT JOIN imap_cache c ON c.mailbox_id = m.mailbox_id AND c.uid = m.uid"
            if structures else "")
    if header:
        join += f" LEFT JOIN {table} h ON h.mailbox_id = m.mailbox_id AND h.uid = m.uid"
    rows = conn.execute(
        f"SELECT m.uid, m.flags, m.internaldate, m.size, m.modseq, {cols} FROM messages m"
        f"{join} WHERE m.mailbox_id = ? AND m.uid BETWEEN ? AND ? ORDER BY m.uid",
        (mailbox_id, wanted[0], wanted[-1]))
    if len(wanted) == wanted[-1] - wanted[0] + 1:
        return rows.fetchall()
    keep = set(wanted)
    return [r for r in rows if r[0] in keep]


def cached(conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int]) -> dict[int, Cached]:
    if not uids:
        return {}
    wanted = sorted(set(uids))
    rows = conn.execute(
        "SELECT c.uid, c.envelope, c.bodystructure, c.body, c.ascii, h.header FROM imap_cache c"
        " JOIN imap_header h ON h.mailbox_id = c.mailbox_id AND h.uid = c.uid"
        " WHERE c.mailbox_id = ? AND c.uid BETWEEN ? AND ?", (mailbox_id, wanted[0], wanted[-1]))
    keep = set(wanted)
    return {uid: Cached(env.decode(), bs.decode(), body.decode(), bool(a), bytes(h))
            for uid, env, bs, body, a, h in rows if uid in keep}


def indexed_uids(conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int]) -> set[int]:
    """Which of these messages are in the full-text index: those up to the indexer's mark.
    (Not "those with a cache row": a session's own FETCH fills the cache ahead of the
    indexer, and those messages are not in the full-text index yet.)"""
    row = conn.execute("SELECT indexed_uid FROM index_state WHERE mailbox_id = ?",
                       (mailbox_id,)).fetchone()
    mark = row[0] if row is not None else 0
    return {u for u in uids if u <= mark}


# ---------------------------------------------------------------------------- header fields

#: A header field as `kittiwake.message.headers.FIELD_RE` reads it (RFC 5322 §2.2), with
#: its folded continuation lines and final line ending.
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:.*(?:\n[ \t].*)*\n?", re.MULTILINE)


_FIELD_NAME = re.compile(rb"[!-9;-~]+")


@functools.lru_cache(maxsize=256)
def _fields_regex(names: tuple[str, ...]) -> re.Pattern[bytes] | None:
    """One regex for "any of these fields", anchored on the newline before the name so the
    engine can skip from newline to newline: a few µs per header instead of a Python step
    per field (the bulk of FETCH 1:* BODY[HEADER.FIELDS (...)]).  Names that cannot be
    field names (RFC 5322 §3.6.8) can never match."""
    valid = [n.encode("utf-8", "replace") for n in names]
    valid = [n for n in valid if _FIELD_NAME.fullmatch(n)]
    if not valid:
        return None
    alternatives = b"|".join(re.escape(n) for n in valid)
    return re.compile(rb"\n((?:" + alternatives + rb")[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*)",
                      re.IGNORECASE)


def header_fields(header: bytes, names: tuple[str, ...], exclude: bool, *,
                   bounded: bool = False) -> bytes:
    """HEADER.FIELDS (NOT): the matching fields, as sent, then the empty line that ends
    a header (RFC 9051 §6.4.5: the subset is itself a header).  `bounded`: `header` is
    exactly a header block (the indexer's cache), nothing after its empty line."""
    limit = len(header) if bounded else header_bounds(header)[0]
    if not exclude:
        rx = _fields_regex(names)
        if rx is None:
            return b"\r\n"
        text = b"\n" + header[:limit]
        if text.endswith(b"\n"):
            # Every field found ends at a newline its match leaves for the next one's.
            kept = rx.findall(text)
            return b"\n".join(kept) + b"\n\r\n" if kept else b"\r\n"
        end = len(text)
        kept = []
        for m in rx.finditer(text):
            stop = m.end()
            if stop < end:  # the field's own line ending (always a newline here)
                stop += 1
            kept.append(text[m.start() + 1 : stop])
    else:
        wanted = {n.lower().encode("utf-8", "replace") for n in names}
        kept = [m.group(0) for m in _FIELD.finditer(header, 0, limit)
                if m.group(1).lower() not in wanted]
    return b"".join(kept) + b"\r\n"


#: Fields whose lines the indexer keeps apart (`imap_header.common`): what mail clients ask
#: for with HEADER.FIELDS when they list a mailbox (Thunderbird, mutt, K-9, Apple Mail,
#: Roundcube).  A request within this set is answered from that small blob, the same
#: octets as from the whole header, since filtering keeps message order either way.
COMMON_FIELDS: tuple[str, ...] = (
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "in-reply-to",
    "references", "reply-to", "sender", "content-type", "content-description",
    "priority", "x-priority", "importance", "newsgroups", "list-post", "list-id",
    "list-unsubscribe", "list-subscribe", "x-label", "x-original-to", "delivered-to",
    "lines", "mail-followup-to", "mail-reply-to", "x-mailer", "user-agent", "return-path",
)
_COMMON = frozenset(COMMON_FIELDS)


def common_fields(header: bytes) -> bytes:
    return header_fields(header, COMMON_FIELDS, False, bounded=True)


def within_common(names: Sequence[str]) -> bool:
    return all(n.lower() in _COMMON for n in names)
