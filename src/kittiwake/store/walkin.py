"""Walk-in at SELECT: give UIDs to files another program put in a Maildir, without
reading them.

`rescan.reconcile` (start-up, `kittiwake` CLI) reads and parses every new file, which is
right for a handful of crash leftovers and far too slow for a mailbox of 100,000 messages
copied in from another server: the first SELECT would read gigabytes.  Here a new file gets
its row from the directory entry alone — size from stat, INTERNALDATE from the mtime,
flags from the `:2,` info (Maildir spec; Dovecot and mutt write the same) — with no cached
structure; ENVELOPE and BODYSTRUCTURE are parsed on first use or by the background indexer
(indexer.py), as Dovecot fills its cache.  Vanished files and flags changed by another
Maildir reader are reconciled exactly as in rescan.py, whose rules this module shares.

Runs on the committer thread, like rescan.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from kittiwake.store import maildir
from kittiwake.store.index import MailboxRef, refresh_usage
from kittiwake.store.models import RescanResult

log = logging.getLogger(__name__)

_INFO_FLAGS = maildir.SYSTEM_FLAGS | {"$Forwarded"}


def quick_reconcile(
    conn: sqlite3.Connection,
    ref: MailboxRef,
    folder: Path,
    in_flight: Callable[[], frozenset[str]] = frozenset,
) -> RescanResult:
    if not maildir.is_maildir(folder):
        return RescanResult()  # as rescan.reconcile: never drop rows for a missing folder
    on_disk = {entry.base: entry for entry in maildir.walk(folder)}
    for base in in_flight() & on_disk.keys():
        del on_disk[base]
    indexed = {
        name: (uid, maildir.parse_flags(flags))
        for uid, name, flags in conn.execute(
            "SELECT uid, filename, flags FROM messages WHERE mailbox_id = ?", (ref.id,)
        )
    }
    vanished = [uid for name, (uid, flags) in indexed.items()
                if name not in on_disk and maildir.locate(folder, name, flags) is None]
    arrivals = sorted((e for base, e in on_disk.items() if base not in indexed),
                      key=lambda e: (e.mtime, e.base))
    reflag = []
    for name, (uid, flags) in indexed.items():
        entry = on_disk.get(name)
        if entry is not None and entry.in_cur and (flags & _INFO_FLAGS) != entry.flags:
            reflag.append((uid, (flags - _INFO_FLAGS) | entry.flags))
    if not (vanished or arrivals or reflag):
        return RescanResult()
    conn.execute("BEGIN IMMEDIATE")
    try:
        state = conn.execute(
            "SELECT uidnext, highestmodseq FROM mailboxes WHERE id = ?", (ref.id,)
        ).fetchone()
        if state is None:
            conn.execute("ROLLBACK")
            return RescanResult()
        uidnext, modseq = state
        if vanished:
            modseq += 1  # RFC 7162: the expunge is one change (the trigger records it)
            conn.executemany("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?",
                             [(ref.id, uid) for uid in vanished])
        rows = []
        for entry in arrivals:
            modseq += 1
            rows.append((ref.id, uidnext, entry.base, maildir.format_flags(entry.flags),
                         entry.mtime, entry.size, modseq))
            uidnext += 1
        conn.executemany(
            "INSERT INTO messages (mailbox_id, uid, filename, flags, internaldate, size,"
            " modseq, structure) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)", rows)
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
    result = RescanResult(added=len(rows), removed=len(vanished), reflagged=len(reflag))
    log.info("walk-in account=%s mailbox=%s added=%d removed=%d reflagged=%d", ref.account,
             ref.name, result.added, result.removed, result.reflagged)
    return result
