"""Reconcile a mailbox's index rows with the files in its Maildir.

Two situations need it.  Walk-in: a Maildir written by another program (migration, mbsync,
procmail) — files on disk that the index does not know get UIDs, in mtime order so the UID
order follows arrival order, with flags from their `:2,` info.  Crash recovery: a delivery
that renamed its file into new/ but died before its COMMIT left a durable file with no row;
walking it in is what guarantees the message is never lost (the sender may retry and we
deliver twice — preferable to losing it).  Rows whose files vanished (deleted by another
tool) are dropped, and flags changed by a Maildir reader in cur/ are adopted.

Runs on the committer thread, so no commit happens while it works; files a delivery has
renamed into place but not yet committed are named by `in_flight` and left alone — they are
about to get their row, and walking them in would index them twice.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from kittiwake.store import maildir
from kittiwake.store.index import (
    MailboxRef,
    NewRow,
    all_mailboxes,
    insert_messages,
    prune_expunged,
    refresh_usage,
)
from kittiwake.store.models import RescanResult
from kittiwake.store.structure import StructureParser, structure_json

log = logging.getLogger(__name__)

# Flags the Maildir info can carry; anything else (keywords) lives only in the index.
_INFO_FLAGS = maildir.SYSTEM_FLAGS | {"$Forwarded"}

class DiskEntry(Protocol):
    """A file found in new/ or cur/ (maildir.WalkEntry, walkin's leaner entry)."""

    @property
    def base(self) -> str: ...
    @property
    def flags(self) -> frozenset[str]: ...
    @property
    def in_cur(self) -> bool: ...
    @property
    def mtime(self) -> float: ...


E = TypeVar("E", bound=DiskEntry)


def compare(conn: sqlite3.Connection, ref: MailboxRef, folder: Path,
            on_disk: Mapping[str, E]) -> tuple[list[int], list[E], list[tuple[int, frozenset[str]]]]:
    """What a Maildir's files say against the index rows of its mailbox: UIDs whose file
    has gone, files with no row (in arrival order: their delivery time, then name), and
    rows whose flags a reader changed in a cur/ name.  Shared by the start-up rescan and
    the walk-in at SELECT (walkin.py), which only list the directory differently."""
    indexed = {
        name: (uid, maildir.parse_flags(flags))
        for uid, name, flags in conn.execute(
            "SELECT uid, filename, flags FROM messages WHERE mailbox_id = ?", (ref.id,)
        )
    }
    # Checked once more by name: a reader may have renamed the file while we listed.
    vanished = [uid for name, (uid, flags) in indexed.items()
                if name not in on_disk and maildir.locate(folder, name, flags) is None]
    arrivals = sorted((e for base, e in on_disk.items() if base not in indexed),
                      key=lambda e: (e.mtime, e.base))
    reflag: list[tuple[int, frozenset[str]]] = []
    for name, (uid, flags) in indexed.items():
        entry = on_disk.get(name)
        # Only cur/ files carry authoritative info; new/ means "not yet seen by a reader".
        if entry is not None and entry.in_cur and (flags & _INFO_FLAGS) != entry.flags:
            reflag.append((uid, (flags - _INFO_FLAGS) | entry.flags))
    return vanished, arrivals, reflag


#: A file to index: (base name, flags text, internal date, size, structure JSON or None).
Arrival = tuple[str, str, float, int, str | None]


def apply(conn: sqlite3.Connection, ref: MailboxRef, vanished: Sequence[int],
          arrivals: Sequence[Arrival], reflag: Sequence[tuple[int, frozenset[str]]]
          ) -> RescanResult:
    """Write what `compare` found in one transaction: rows of vanished files dropped (one
    modseq for the expunge, RFC 7162), new files given the next UIDs in order, changed
    flags stored, each with its own modseq."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        state = conn.execute(
            "SELECT uidnext, highestmodseq FROM mailboxes WHERE id = ?", (ref.id,)
        ).fetchone()
        if state is None:  # mailbox deleted meanwhile
            conn.execute("ROLLBACK")
            return RescanResult()
        uidnext, modseq = state
        if vanished:
            modseq += 1  # the messages_expunged trigger records each UID with it
            conn.executemany("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?",
                             [(ref.id, uid) for uid in vanished])
            prune_expunged(conn, ref.id)
        rows: list[NewRow] = []
        for base, text, mtime, size, structure in arrivals:
            modseq += 1
            rows.append((ref.id, uidnext, base, text, mtime, size, modseq, structure))
            uidnext += 1
        insert_messages(conn, rows)
        for uid, flags in reflag:
            modseq += 1
            conn.execute(
                "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                (maildir.format_flags(flags), modseq, ref.id, uid))
        conn.execute("UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
                     (uidnext, modseq, ref.id))
        refresh_usage(conn, ref.account_id)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return RescanResult(added=len(rows), removed=len(vanished), reflagged=len(reflag))


def reconcile(
    conn: sqlite3.Connection,
    ref: MailboxRef,
    folder: Path,
    parser: StructureParser | None,
    in_flight: Callable[[], frozenset[str]] = frozenset,
) -> RescanResult:
    if not maildir.is_maildir(folder):
        # A missing folder is far more likely an unmounted volume or a typo'd data dir than
        # a user who deleted every message; dropping the rows would lose flags and UIDs.
        log.warning("rescan skipped: no maildir at %s (mailbox id=%d)", folder, ref.id)
        return RescanResult()

    on_disk = {entry.base: entry for entry in maildir.walk(folder)}
    # Asked *after* the walk: a name is announced before its rename and withdrawn only after
    # its commit, which cannot happen while we run, so every uncommitted file we saw is in it.
    for base in in_flight() & on_disk.keys():
        del on_disk[base]
    vanished, arrivals, reflag = compare(conn, ref, folder, on_disk)
    if not (vanished or arrivals or reflag):
        return RescanResult()

    # Read and parse new files before taking the write lock; a walk-in may be large.
    prepared = []
    for entry in arrivals:
        try:
            raw = entry.path.read_bytes()
        except FileNotFoundError:  # moved new/ → cur/ by a reader meanwhile: next rescan
            continue
        prepared.append((entry, len(raw), structure_json(parser, raw)))

    result = apply(conn, ref, vanished,
                   [(entry.base, maildir.format_flags(entry.flags), entry.mtime, size,
                     structure) for entry, size, structure in prepared], reflag)
    log.info(
        "rescan account=%s mailbox=%s added=%d removed=%d reflagged=%d",
        ref.account,
        ref.name,
        result.added,
        result.removed,
        result.reflagged,
    )
    return result


def startup_sweep(
    conn: sqlite3.Connection,
    mail_root: Path,
    parser: StructureParser | None,
    in_flight: Callable[[], frozenset[str]] = frozenset,
    now: float | None = None,
) -> RescanResult:
    """At start: clear stale tmp/ files and reconcile every mailbox (crash leftovers).

    Costs one directory listing per folder; acceptable at start-up and the only way to find
    files a crash left between rename and COMMIT.
    """
    now = time.time() if now is None else now
    added = removed = reflagged = cleaned = 0
    for ref in all_mailboxes(conn):
        folder = ref.folder(mail_root)
        cleaned += maildir.clean_tmp(folder, now)
        r = reconcile(conn, ref, folder, parser, in_flight)
        added, removed, reflagged = added + r.added, removed + r.removed, reflagged + r.reflagged
    if cleaned:
        log.info("removed %d stale tmp/ files", cleaned)
    return RescanResult(added, removed, reflagged)
