"""Mailbox-level IMAP operations on the index and the Maildir++ tree: CREATE, DELETE,
RENAME, SUBSCRIBE, LIST data, STATUS and the QUOTA numbers (RFC 9051 §6.3; RFC 6154
SPECIAL-USE; RFC 9208 QUOTA; RFC 8438 STATUS=SIZE).

Write functions run on the store's committer thread (so they never interleave with a
delivery's commit or a rescan) and own their transaction.  The rules for files versus rows:

* CREATE makes the folder (fsynced) before committing the row: a crash leaves an empty
  folder that `discover` adopts, never a row without a folder.
* DELETE commits the row removal first, then removes the folder.  A crash in between
  leaves the folder on disk, which `discover` walks back in: mail reappears rather than
  being lost half-way.
* RENAME renames the folders inside the transaction and renames them back if the commit
  fails.

Names use "/" as the hierarchy separator; `maildir.folder_dir` maps them to Maildir++
(`a/b` → `.a.b`, a literal "." escaped as %2E) — the same layout Dovecot and mutt read.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

from kittiwake.imap import mutf7
from kittiwake.store import maildir
from kittiwake.store.addresses import account_dir, fold
from kittiwake.store.errors import AlreadyExists, InvalidMailboxName, NotFound
from kittiwake.store.imaptypes import (
    CannotDoThat,
    ImapStatus,
    MailboxHandle,
    MailboxHasChildren,
    MailboxListing,
    Quota,
)
from kittiwake.store.index import canonical_name, create_mailbox

log = logging.getLogger(__name__)

SEPARATOR = "/"
_TRASH_PREFIX = "kittiwake-deleted."  # no leading dot: Maildir++ readers ignore it


def _account_id(conn: sqlite3.Connection, account: str) -> int:
    row = conn.execute("SELECT id FROM accounts WHERE address = ?", (fold(account),)).fetchone()
    if row is None:
        raise NotFound(f"no account {account}")
    return int(row[0])


def _check_name(name: str) -> str:
    """A usable mailbox name: canonical INBOX, no empty hierarchy parts, no NUL/controls
    (RFC 9051 §5.1); a trailing separator is dropped, as RFC 9051 §6.3.4 CREATE says."""
    name = canonical_name(name.rstrip(SEPARATOR) if name != SEPARATOR else name)
    if not name or name.startswith(SEPARATOR) or SEPARATOR * 2 in name:
        raise InvalidMailboxName(f"bad mailbox name {name!r}")
    maildir.folder_dir(Path("/"), name)  # raises InvalidMailboxName on control characters
    return name


def parents(name: str) -> list[str]:
    """`a/b/c` → [`a`, `a/b`]: the superiors CREATE makes too (RFC 9051 §6.3.4)."""
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:i]) for i in range(1, len(parts))]


def handle(conn: sqlite3.Connection, account: str, name: str) -> MailboxHandle:
    row = conn.execute(
        "SELECT m.id, a.address, m.name, m.uidvalidity FROM mailboxes m JOIN accounts a"
        " ON a.id = m.account_id WHERE a.address = ? AND m.name = ?",
        (fold(account), canonical_name(name)),
    ).fetchone()
    if row is None:
        raise NotFound(f"no mailbox {name!r} for {account}")
    return MailboxHandle(*row)


def listing(conn: sqlite3.Connection, account: str) -> list[MailboxListing]:
    account_id = _account_id(conn, account)
    return [
        MailboxListing(name, special, bool(sub))
        for name, special, sub in conn.execute(
            "SELECT name, special_use, subscribed FROM mailboxes WHERE account_id = ?"
            " ORDER BY name != 'INBOX', name",
            (account_id,),
        )
    ]


# ---------------------------------------------------------------------------- create


def create(
    conn: sqlite3.Connection,
    mail_root: Path,
    account: str,
    name: str,
    special_use: str | None,
    *,
    durable: bool,
) -> MailboxHandle:
    name = _check_name(name)
    account_id = _account_id(conn, fold(account))
    root = account_dir(mail_root, fold(account))
    existing = {
        r[0] for r in conn.execute("SELECT name FROM mailboxes WHERE account_id = ?", (account_id,))
    }
    if name in existing:
        raise AlreadyExists(f"mailbox {name!r} exists")
    wanted = [p for p in parents(name) if p not in existing] + [name]
    for each in wanted:  # folders first, durable before the rows say they exist
        maildir.create_maildir(maildir.folder_dir(root, each), folder=each != maildir.INBOX,
                               durable=durable)
    if durable:
        maildir.fsync_dir(root)
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for each in wanted:
            create_mailbox(conn, account_id, each, special_use if each == name else None, now)
        conn.execute("COMMIT")
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK")
        raise AlreadyExists(f"mailbox {name!r} exists") from None
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.info("mailbox created account=%s mailbox=%s", fold(account), name)
    return handle(conn, account, name)


# ---------------------------------------------------------------------------- delete


def delete(
    conn: sqlite3.Connection, mail_root: Path, account: str, name: str, *, durable: bool
) -> None:
    name = canonical_name(name)
    if name == maildir.INBOX:
        raise CannotDoThat("INBOX cannot be deleted")
    account_id = _account_id(conn, account)
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT id, uidvalidity FROM mailboxes WHERE account_id = ? AND name = ?",
            (account_id, name),
        ).fetchone()
        if row is None:
            raise NotFound(f"no mailbox {name!r}")
        child = conn.execute(
            "SELECT 1 FROM mailboxes WHERE account_id = ? AND substr(name, 1, ?) = ?",
            (account_id, len(name) + 1, name + SEPARATOR),
        ).fetchone()
        if child is not None:
            raise MailboxHasChildren(f"mailbox {name!r} has inferior mailboxes")
        conn.execute("DELETE FROM mailboxes WHERE id = ?", (row[0],))
        conn.execute(
            "UPDATE accounts SET used_bytes = (SELECT COALESCE(SUM(msg.size), 0) FROM messages"
            " msg JOIN mailboxes mb ON mb.id = msg.mailbox_id WHERE mb.account_id = ?)"
            " WHERE id = ?",
            (account_id, account_id),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    root = account_dir(mail_root, fold(account))
    folder = maildir.folder_dir(root, name)
    trash = root / f"{_TRASH_PREFIX}{row[0]}.{row[1]}"
    try:
        os.rename(folder, trash)  # one atomic step out of every Maildir++ reader's view
        if durable:
            maildir.fsync_dir(root)
        shutil.rmtree(trash, ignore_errors=True)
    except FileNotFoundError:
        pass
    log.info("mailbox deleted account=%s mailbox=%s", fold(account), name)


# ---------------------------------------------------------------------------- rename


def rename(
    conn: sqlite3.Connection, mail_root: Path, account: str, old: str, new: str, *, durable: bool
) -> list[tuple[int, str, str]]:
    """Rename `old` and its inferiors; return (id, old name, new name) per renamed mailbox.
    Renaming INBOX is `rename_inbox` (it moves messages; RFC 9051 §6.3.6)."""
    old, new = canonical_name(old), _check_name(new)
    if new == maildir.INBOX:
        raise AlreadyExists("INBOX exists")
    if old == new:
        raise CannotDoThat("a mailbox cannot be renamed to itself")
    account_id = _account_id(conn, account)
    root = account_dir(mail_root, fold(account))
    rows = conn.execute(
        "SELECT id, name FROM mailboxes WHERE account_id = ? AND (name = ?"
        " OR substr(name, 1, ?) = ?)",
        (account_id, old, len(old) + 1, old + SEPARATOR),
    ).fetchall()
    if not any(n == old for _, n in rows):
        raise NotFound(f"no mailbox {old!r}")
    existing = {
        r[0] for r in conn.execute("SELECT name FROM mailboxes WHERE account_id = ?", (account_id,))
    }
    moves = [(mid, name, new + name[len(old):]) for mid, name in rows]
    for _, _, target in moves:
        if target in existing and target not in {n for _, n in rows}:
            raise AlreadyExists(f"mailbox {target!r} exists")
    missing_parents = [p for p in parents(new) if p not in existing and p != old]
    done: list[tuple[Path, Path]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Two steps through temporary names so `a` → `a/b` cannot collide with itself.
        conn.executemany(
            "UPDATE mailboxes SET name = ? WHERE id = ?", [("\x00" + str(mid), mid) for mid, _, _ in moves]
        )
        conn.executemany("UPDATE mailboxes SET name = ? WHERE id = ?",
                         [(target, mid) for mid, _, target in moves])
        now = time.time()
        for p in missing_parents:
            maildir.create_maildir(maildir.folder_dir(root, p), folder=True, durable=durable)
            create_mailbox(conn, account_id, p, None, now)
        # Longest names first is not needed for Maildir++: folders are flat siblings.
        for _, name, target in moves:
            src, dst = maildir.folder_dir(root, name), maildir.folder_dir(root, target)
            if dst.exists():
                raise AlreadyExists(f"folder for {target!r} exists on disk")
            if src.exists():
                os.rename(src, dst)
                done.append((src, dst))
            else:
                maildir.create_maildir(dst, folder=True, durable=durable)
        if durable:
            maildir.fsync_dir(root)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        for src, dst in reversed(done):
            try:
                os.rename(dst, src)
            except OSError:
                log.error("could not undo folder rename %s -> %s", src, dst)
        raise
    log.info("mailbox renamed account=%s from=%s to=%s count=%d", fold(account), old, new,
             len(moves))
    return moves


# ---------------------------------------------------------------------------- subscribe


def set_subscribed(conn: sqlite3.Connection, account: str, name: str, subscribed: bool) -> None:
    account_id = _account_id(conn, account)
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "UPDATE mailboxes SET subscribed = ? WHERE account_id = ? AND name = ?",
            (int(subscribed), account_id, canonical_name(name)),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if not cur.rowcount:
        raise NotFound(f"no mailbox {name!r}")


# ---------------------------------------------------------------------------- discover


def _decode_folder(dirname: str) -> str | None:
    """`.a.b%2Ec` → `a/b.c`; None for names that are not Maildir++ folders."""
    if not dirname.startswith(".") or dirname in (".", ".."):
        return None
    parts = dirname[1:].split(".")
    if any(not p for p in parts):
        return None
    return SEPARATOR.join(p.replace("%2E", ".").replace("%2e", ".").replace("%25", "%")
                          for p in parts)


def _from_mutf7(name: str) -> str | None:
    """The Unicode name behind a folder that Dovecot wrote in modified UTF-7 (its default
    without the UTF8 option in mail_location), or None to keep the name as it is.

    Only a part that round-trips counts as mUTF-7: "R&D" has no valid shift and is kept,
    while "R&-D" is Dovecot's spelling of "R&D".  Each hierarchy part is judged alone,
    because Dovecot encodes each one alone."""
    parts = name.split(SEPARATOR)
    decoded = []
    for part in parts:
        if "&" not in part:
            decoded.append(part)
            continue
        try:
            plain = mutf7.decode(part)
        except ValueError:
            decoded.append(part)
            continue
        decoded.append(plain if mutf7.encode(plain) == part else part)
    if decoded == parts:
        return None
    unicode_name = SEPARATOR.join(decoded)
    try:
        _check_name(unicode_name)  # a shift can hide control characters
    except InvalidMailboxName:
        return None
    return unicode_name


def _adopt_mutf7(root: Path, entry: str, name: str, known: set[str], *,
                 durable: bool) -> str:
    """Move a Dovecot folder to the directory Kittiwake uses for its Unicode name, so
    IMAP shows "Entwürfe" rather than "Entw&APw-rfe"; returns the name to adopt, or ""
    when the folder must stay untouched.  Never overwrites: an existing target (or a row
    already holding the Unicode name) means two folders claim one name, which a person
    has to sort out."""
    unicode_name = _from_mutf7(name)
    if unicode_name is None:
        return name
    target = maildir.folder_dir(root, unicode_name)
    taken = unicode_name in known or canonical_name(unicode_name) == maildir.INBOX
    if taken or os.path.lexists(target):
        log.warning("folder not adopted account_dir=%s folder=%s: %r already exists",
                    root, entry, unicode_name)
        return ""
    try:
        os.rename(root / entry, target)
    except OSError as e:  # e.g. the target appeared meanwhile (ENOTEMPTY): keep both
        log.warning("folder not adopted account_dir=%s folder=%s: rename failed: %s",
                    root, entry, e)
        return ""
    if durable:
        # Before the row commits: a row must never name a folder a crash could undo.
        maildir.fsync_dir(root)
    log.info("folder renamed from modified UTF-7 account_dir=%s from=%s to=%s",
             root, entry, target.name)
    return unicode_name


def discover(
    conn: sqlite3.Connection, mail_root: Path, account: str, *, durable: bool = True
) -> list[str]:
    """Adopt Maildir++ folders that exist on disk without a row (copied in from another
    server, or left by a crash during DELETE): the walk-in of whole folders.  Returns the
    names added; their messages get UIDs at the first SELECT/STATUS rescan.

    Folders Dovecot named in modified UTF-7 are renamed on disk to their Unicode name
    first (see `_adopt_mutf7`).  Maildir++ folders are flat siblings, so each directory is
    renamed on its own and a renamed superior cannot strand its inferiors."""
    account_id = _account_id(conn, account)
    root = account_dir(mail_root, fold(account))
    try:
        entries = sorted(e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []
    known = {
        r[0] for r in conn.execute("SELECT name FROM mailboxes WHERE account_id = ?", (account_id,))
    }
    found = []
    for entry in entries:
        name = _decode_folder(entry)
        if name is None or name in known or canonical_name(name) == maildir.INBOX:
            continue
        try:
            _check_name(name)
        except InvalidMailboxName:
            continue
        if maildir.is_maildir(root / entry) and maildir.folder_dir(root, name) == root / entry:
            name = _adopt_mutf7(root, entry, name, known, durable=durable)
            if name:
                found.append(name)
    if not found:
        return []
    # Superiors first, so a hierarchy is adopted whole.
    found.sort(key=lambda n: (n.count(SEPARATOR), n))
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name in found:
            create_mailbox(conn, account_id, name, None, now)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.info("folders adopted account=%s names=%s", fold(account), ",".join(found))
    return found


# ---------------------------------------------------------------------------- status, quota


def status(conn: sqlite3.Connection, mailbox_id: int) -> ImapStatus:
    conn.execute("BEGIN")  # one snapshot for the counts and the mailbox row
    try:
        row = conn.execute(
            "SELECT uidnext, uidvalidity, highestmodseq FROM mailboxes WHERE id = ?",
            (mailbox_id,),
        ).fetchone()
        if row is None:
            raise NotFound("mailbox was deleted")
        counts = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0),"
            " COALESCE(SUM(instr(' ' || flags || ' ', ' \\Seen ') = 0), 0),"
            " COALESCE(SUM(instr(' ' || flags || ' ', ' \\Deleted ') > 0), 0)"
            " FROM messages WHERE mailbox_id = ?",
            (mailbox_id,),
        ).fetchone()
    finally:
        conn.execute("COMMIT")
    messages, size, unseen, deleted = counts
    return ImapStatus(messages=messages, uidnext=row[0], uidvalidity=row[1], unseen=unseen,
                      deleted=deleted, size=size, highestmodseq=row[2])


def quota(conn: sqlite3.Connection, account: str, default: int = 0) -> Quota:
    """The account's usage and limit: its own `quota_bytes`, or `default` when it has none
    (0 = unlimited)."""
    row = conn.execute(
        "SELECT used_bytes, quota_bytes FROM accounts WHERE address = ?", (fold(account),)
    ).fetchone()
    if row is None:
        raise NotFound(f"no account {account}")
    return Quota(used_bytes=int(row[0]), limit_bytes=int(row[1]) or default)
