"""Store operations POP3 needs: a maildrop snapshot, an exclusive maildrop lock, and
removing messages by UID durably.

* Snapshot (RFC 1939 §4: the maildrop as it is when the session enters TRANSACTION): the
  mailbox's UIDVALIDITY and rows read in one statement, so the UIDL strings built from them
  (``<uidvalidity>.<uid>``) are consistent.
* Lock (RFC 1939 §8, RFC 2449 §8.1.1 [IN-USE]): an ``fcntl.flock`` on a file in the account's
  Maildir. flock locks belong to the open file description, so a second open in the same
  process conflicts too, and worker processes sharing the ports see one another's locks; the
  kernel drops the lock when the holder dies, so a crash never leaves a maildrop locked.
* Expunge: files are unlinked and their directories fsynced *before* the rows are deleted.
  A crash in between leaves rows without files, which the start-up rescan drops — the
  deletion completes. The opposite order could leave files without rows, which the rescan
  would walk in again under new UIDs, and a POP3 client would download them a second time.
  The write transaction is held throughout, so another process's rescan cannot drop the same
  rows halfway, and the highest MODSEQ is raised once (RFC 7162 §3.2.10: an expunge is a
  change) so IMAP sessions see the removal like any other expunge.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kittiwake.store import maildir, messageops
from kittiwake.store.addresses import account_dir, fold
from kittiwake.store.errors import NotFound
from kittiwake.store.index import find_mailbox
from kittiwake.store.models import MessageRow

log = logging.getLogger(__name__)

LOCK_FILE = "kittiwake-pop3.lock"


@dataclass(frozen=True, slots=True)
class Maildrop:
    """A mailbox as POP3 lists it at login."""

    uidvalidity: int
    messages: tuple[MessageRow, ...]


class MaildropLock:
    """An exclusive POP3 lock on one account's maildrop; :meth:`release` (or garbage
    collection, or process death) frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock

    def __del__(self) -> None:
        self.release()


def lock_maildrop(mail_root: Path, account: str) -> MaildropLock | None:
    """Take the account's POP3 lock without waiting; None when another session holds it.
    The file is never unlinked: removing a lock file races with a process that has just
    opened it and would then hold a lock nobody else can see."""
    folder = account_dir(mail_root, fold(account))
    if not folder.is_dir():
        raise NotFound(f"no maildir for {account}")
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return MaildropLock(fd, path)


def snapshot(conn: sqlite3.Connection, account: str, mailbox: str) -> Maildrop:
    """The mailbox's UIDVALIDITY and messages in UID order, from one read."""
    ref = find_mailbox(conn, account, mailbox)
    if ref is None:
        raise NotFound(f"no mailbox {mailbox!r} for {account}")
    uidvalidity: int | None = None
    messages: list[MessageRow] = []
    # A LEFT JOIN returns the mailbox row even when it holds no messages.
    for validity, uid, name, flags, size, date, modseq in conn.execute(
        "SELECT m.uidvalidity, msg.uid, msg.filename, msg.flags, msg.size, msg.internaldate,"
        " msg.modseq FROM mailboxes m LEFT JOIN messages msg ON msg.mailbox_id = m.id"
        " WHERE m.id = ? ORDER BY msg.uid",
        (ref.id,),
    ):
        uidvalidity = validity
        if uid is not None:
            messages.append(MessageRow(uid, name, maildir.parse_flags(flags), size, date, modseq))
    if uidvalidity is None:
        raise NotFound(f"mailbox {mailbox!r} of {account} was deleted")
    return Maildrop(uidvalidity, tuple(messages))


def expunge(
    conn: sqlite3.Connection,
    mail_root: Path,
    account: str,
    mailbox: str,
    uids: Iterable[int],
    *,
    durable: bool,
) -> list[int]:
    """Remove the messages with these UIDs (files and rows); return the UIDs removed.
    UIDs already gone (expunged by an IMAP session meanwhile) are skipped, not an error."""
    wanted = sorted(set(uids))
    if not wanted:
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        ref = find_mailbox(conn, account, mailbox)
        if ref is None:
            raise NotFound(f"no mailbox {mailbox!r} for {account}")
        rows = messageops.select_uids(conn, "uid, filename, flags, size", ref.id, wanted)
        if not rows:
            conn.execute("ROLLBACK")
            return []
        removed = messageops.remove_rows(conn, ref, rows, mail_root, durable=durable)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.info("expunge account=%s mailbox=%s removed=%d", ref.account, ref.name, len(removed))
    return removed
