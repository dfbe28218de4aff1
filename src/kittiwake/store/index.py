"""SQL for the mailbox index shared by the Directory (creating mailboxes) and the MailStore
(delivering, reading, rescanning).  Callers own the transaction; these helpers never
BEGIN or COMMIT, so several of them compose into one atomic change."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kittiwake.store import maildir
from kittiwake.store.addresses import account_dir, fold

DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    (maildir.INBOX, None),
    # RFC 6154 SPECIAL-USE attributes, so clients find these without guessing by name.
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
)


@dataclass(frozen=True, slots=True)
class MailboxRef:
    """Enough to find a mailbox's rows and its folder on disk."""

    id: int
    account_id: int
    account: str  # folded address
    name: str

    def folder(self, mail_root: Path) -> Path:
        return maildir.folder_dir(account_dir(mail_root, self.account), self.name)


def canonical_name(mailbox: str) -> str:
    """RFC 9051 §5.1: INBOX is case-insensitive; every other name is taken as given."""
    return maildir.INBOX if mailbox.upper() == maildir.INBOX else mailbox


def create_mailbox(
    conn: sqlite3.Connection, account_id: int, name: str, special_use: str | None, now: float
) -> int:
    """Insert a mailbox row; return its id.

    RFC 9051 §2.3.1.1: a mailbox re-created under an old name must get a *greater*
    UIDVALIDITY, or clients would trust cached UIDs.  Time alone fails when an account is
    deleted and re-added within a second, so we take max(now, largest ever issued + 1).
    """
    row = conn.execute(
        "SELECT MAX(v) FROM (SELECT MAX(uidvalidity) AS v FROM mailboxes"
        " UNION ALL SELECT uidvalidity FROM retired_uidvalidity)"
    ).fetchone()
    uidvalidity = max(int(now), (row[0] or 0) + 1)
    cur = conn.execute(
        "INSERT INTO mailboxes (account_id, name, uidvalidity, special_use) VALUES (?, ?, ?, ?)",
        (account_id, canonical_name(name), uidvalidity, special_use),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def create_default_mailboxes(conn: sqlite3.Connection, account_id: int, now: float) -> None:
    for name, special_use in DEFAULT_MAILBOXES:
        create_mailbox(conn, account_id, name, special_use, now)


def create_default_folders(root: Path, *, durable: bool = True) -> None:
    """The Maildir++ tree for a new account: INBOX at the root, the rest as .Name folders.
    With `durable`, the chain up to the mail root is fsynced too (see create_maildir)."""
    for name, _ in DEFAULT_MAILBOXES:
        folder = maildir.folder_dir(root, name)
        maildir.create_maildir(folder, folder=name != maildir.INBOX, durable=durable)
    if durable:
        for directory in (root.parent, root.parent.parent):  # <domain>/, mail/
            maildir.fsync_dir(directory)


_REF_SQL = (
    "SELECT m.id, m.account_id, a.address, m.name FROM mailboxes m "
    "JOIN accounts a ON a.id = m.account_id"
)


def find_mailbox(conn: sqlite3.Connection, account: str, mailbox: str) -> MailboxRef | None:
    row = conn.execute(
        f"{_REF_SQL} WHERE a.address = ? AND m.name = ?", (fold(account), canonical_name(mailbox))
    ).fetchone()
    return MailboxRef(*row) if row else None


def all_mailboxes(conn: sqlite3.Connection) -> list[MailboxRef]:
    return [MailboxRef(*row) for row in conn.execute(f"{_REF_SQL} ORDER BY m.id")]


def refresh_usage(conn: sqlite3.Connection, account_id: int) -> None:
    """Recompute an account's used_bytes from its rows (after a rescan; deliveries add
    incrementally instead, which keeps the hot path to one UPDATE)."""
    conn.execute(
        "UPDATE accounts SET used_bytes = (SELECT COALESCE(SUM(msg.size), 0) FROM messages msg "
        "JOIN mailboxes mb ON mb.id = msg.mailbox_id WHERE mb.account_id = ?) WHERE id = ?",
        (account_id, account_id),
    )


#: Rows with their cached structure (migration 4 keeps it apart, so `messages` stays
#: narrow); a message the parser has not reached has NULL.
WITH_STRUCTURE = "messages LEFT JOIN structures USING (mailbox_id, uid)"

#: A new message row: (mailbox id, uid, base name, flags text, internal date, size, modseq,
#: structure JSON or None).
NewRow = tuple[int, int, str, str, float, int, int, "str | None"]


def insert_messages(conn: sqlite3.Connection, rows: Sequence[NewRow]) -> None:
    """Every path that gives files UIDs (delivery, APPEND, COPY, walk-in, rescan) writes
    through here, so a structure known at that point always lands in its own table."""
    conn.executemany(
        "INSERT INTO messages (mailbox_id, uid, filename, flags, internaldate, size, modseq)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)", [r[:7] for r in rows])
    conn.executemany(
        "INSERT INTO structures (mailbox_id, uid, structure) VALUES (?, ?, ?)",
        [(r[0], r[1], r[7]) for r in rows if r[7] is not None])


def store_structures(conn: sqlite3.Connection, mailbox_id: int,
                     items: Iterable[tuple[int, str]]) -> None:
    """Cache structures parsed after their row was written (by the indexer, or by a FETCH
    that needed one); a message expunged meanwhile gets none."""
    conn.executemany(
        "INSERT OR REPLACE INTO structures (mailbox_id, uid, structure)"
        " SELECT mailbox_id, uid, ? FROM messages WHERE mailbox_id = ? AND uid = ?",
        [(text, mailbox_id, uid) for uid, text in items])


#: Expunge records kept per mailbox (RFC 7162 VANISHED).  Without a bound the table grows
#: with every message ever removed; past it, a client resynchronising from further back is
#: told every UID missing from the mailbox instead (as Dovecot does once its transaction
#: log has rotated), which costs it a longer VANISHED answer, never a missed expunge.
EXPUNGED_KEEP = 10_000


def prune_expunged(conn: sqlite3.Connection, mailbox_id: int, keep: int | None = None) -> None:
    """After an expunge, inside its transaction: drop the records beyond the newest `keep`
    and raise the mailbox's floor to the newest modseq dropped.  Records of one expunge
    share a modseq and go together, so every modseq above the floor is complete."""
    keep = EXPUNGED_KEEP if keep is None else keep
    row = conn.execute(
        "SELECT modseq FROM expunged WHERE mailbox_id = ? ORDER BY modseq DESC"
        " LIMIT 1 OFFSET ?", (mailbox_id, keep)).fetchone()
    if row is None:
        return
    conn.execute("DELETE FROM expunged WHERE mailbox_id = ? AND modseq <= ?",
                 (mailbox_id, row[0]))
    conn.execute("UPDATE mailboxes SET expunged_floor = MAX(expunged_floor, ?) WHERE id = ?",
                 (row[0], mailbox_id))
