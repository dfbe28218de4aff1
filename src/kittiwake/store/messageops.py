"""Message-level IMAP operations: the SELECT snapshot, "changes since modseq", FETCH rows
and files, STORE of flags, COPY and MOVE (RFC 9051 §6.4; RFC 7162 CONDSTORE/QRESYNC;
RFC 4315 UIDPLUS; RFC 6851 MOVE).

Flags live in the index (`messages.flags`, with a per-message modseq) *and* in the Maildir
`:2,` info of the file.  The index is what IMAP answers from; the file name is kept in step
on every STORE (a rename in cur/, fsynced with the directory before the commit) because the
start-up rescan treats the info of a cur/ file as authoritative — that is how flags set by
mutt or Dovecot on the same Maildir are adopted — so a file left with stale info would undo
the change at the next start.  Keywords other than $Forwarded have no info letter and live
in the index only.

Every change raises the mailbox's HIGHESTMODSEQ in the same transaction, so a session can
poll one integer to learn whether anything happened (RFC 7162 §3.1.2).  One STORE command
gives all the messages it changes the same new modseq, as RFC 7162 §3.1.3 allows.

COPY makes hard links (the same inode in two folders costs no space and no data write);
MOVE renames the file, keeping its base name.  Either way the files are in place and their
directories fsynced before the rows are committed: a crash in between leaves files without
rows, which the start-up rescan walks in (a duplicate at worst, never a loss).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from kittiwake.store import maildir
from kittiwake.store.errors import NotFound
from kittiwake.store.imaptypes import (
    Changes,
    CopyResult,
    FlagResult,
    MailboxHandle,
    MessageData,
    MessageState,
    OverQuota,
    Quota,
    Snapshot,
    StoreMode,
    parse_flags,
)
from kittiwake.store.index import (
    WITH_STRUCTURE,
    MailboxRef,
    NewRow,
    insert_messages,
    prune_expunged,
    store_structures,
)

#: Below SQLite's default host-parameter limit; larger sets are read as one UID range.
_CHUNK = 500
_INFO_FLAGS = maildir.SYSTEM_FLAGS | {"$Forwarded"}


def _flags(text: str) -> frozenset[str]:
    return parse_flags(text)


def folder_of(conn: sqlite3.Connection, mail_root: Path, mailbox_id: int) -> Path:
    """The mailbox's folder as named *now*: a session's handle keeps its id across a
    RENAME by another session, never a stale path."""
    return _ref(conn, mailbox_id).folder(mail_root)


def _ref(conn: sqlite3.Connection, mailbox_id: int) -> MailboxRef:
    row = conn.execute(
        "SELECT m.id, m.account_id, a.address, m.name FROM mailboxes m JOIN accounts a"
        " ON a.id = m.account_id WHERE m.id = ?",
        (mailbox_id,),
    ).fetchone()
    if row is None:
        raise NotFound("mailbox was deleted")
    return MailboxRef(*row)


def select_uids(
    conn: sqlite3.Connection, columns: str, mailbox_id: int, uids: Sequence[int]
) -> list[tuple[Any, ...]]:
    """Rows for some UIDs, in UID order.  A large set is read as its whole UID range and
    filtered here: one range scan beats thousands of IN probes."""
    if not uids:
        return []
    wanted = sorted(set(uids))
    source = WITH_STRUCTURE if "structure" in columns else "messages"
    if len(wanted) > _CHUNK:
        keep = set(wanted)
        rows = conn.execute(
            f"SELECT {columns} FROM {source} WHERE mailbox_id = ? AND uid BETWEEN ? AND ?"
            " ORDER BY uid",
            (mailbox_id, wanted[0], wanted[-1]),
        ).fetchall()
        return [r for r in rows if r[0] in keep]
    marks = ",".join("?" * len(wanted))
    return conn.execute(
        f"SELECT {columns} FROM {source} WHERE mailbox_id = ? AND uid IN ({marks}) ORDER BY uid",
        (mailbox_id, *wanted),
    ).fetchall()


# ---------------------------------------------------------------------------- reading


def snapshot(conn: sqlite3.Connection, handle: MailboxHandle) -> Snapshot:
    conn.execute("BEGIN")
    try:
        row = conn.execute(
            "SELECT uidnext, highestmodseq FROM mailboxes WHERE id = ?", (handle.id,)
        ).fetchone()
        if row is None:
            raise NotFound("mailbox was deleted")
        uids = [r[0] for r in conn.execute(
            "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (handle.id,))]
        # A mailbox has few distinct flag combinations: the keywords come from those.
        texts = [r[0] for r in conn.execute(
            "SELECT DISTINCT flags FROM messages WHERE mailbox_id = ?", (handle.id,))]
    finally:
        conn.execute("COMMIT")
    keywords = frozenset(f for t in texts for f in t.split() if not f.startswith("\\"))
    return Snapshot(handle, row[0], row[1], uids, keywords)


def first_unseen(conn: sqlite3.Connection, mailbox_id: int) -> int | None:
    """The lowest UID without \\Seen (for IMAP4rev1's [UNSEEN n])."""
    row = conn.execute(
        "SELECT MIN(uid) FROM messages WHERE mailbox_id = ?"
        " AND instr(' ' || flags || ' ', ' \\Seen ') = 0", (mailbox_id,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def deleted_uids(conn: sqlite3.Connection, mailbox_id: int) -> list[int]:
    """UIDs of the messages flagged \\Deleted now (EXPUNGE, CLOSE: RFC 9051 §6.4.3)."""
    return [r[0] for r in conn.execute(
        "SELECT uid FROM messages WHERE mailbox_id = ?"
        " AND instr(' ' || flags || ' ', ' \\Deleted ') > 0 ORDER BY uid", (mailbox_id,))]


def state(conn: sqlite3.Connection, mailbox_id: int) -> tuple[int, int] | None:
    """(HIGHESTMODSEQ, UIDNEXT), or None once the mailbox is gone: the cheap poll."""
    row = conn.execute(
        "SELECT highestmodseq, uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def states(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        for mid, modseq, uidnext in conn.execute(
            f"SELECT id, highestmodseq, uidnext FROM mailboxes WHERE id IN ({marks})", chunk
        ):
            out[mid] = (modseq, uidnext)
    return out


def changes(conn: sqlite3.Connection, mailbox_id: int, since: int) -> Changes:
    """Everything with a modseq above `since`, from one read transaction, so a change
    committed meanwhile is either wholly in this answer or wholly in the next."""
    conn.execute("BEGIN")
    try:
        row = conn.execute(
            "SELECT highestmodseq, uidnext, expunged_floor FROM mailboxes WHERE id = ?",
            (mailbox_id,)).fetchone()
        if row is None:
            raise NotFound("mailbox was deleted")
        present = None
        if since < row[2]:
            present = tuple(r[0] for r in conn.execute(
                "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)))
        changed = tuple(
            MessageState(uid, _flags(flags), modseq)
            for uid, flags, modseq in conn.execute(
                "SELECT uid, flags, modseq FROM messages WHERE mailbox_id = ? AND modseq > ?"
                " ORDER BY uid",
                (mailbox_id, since),
            )
        )
        expunged = tuple(
            r[0]
            for r in conn.execute(
                "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                (mailbox_id, since),
            )
        )
    finally:
        conn.execute("COMMIT")
    return Changes(row[0], row[1], changed, expunged, present)


def message_data(conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int], *,
                 structure: bool = True) -> list[MessageData]:
    """Rows for FETCH (`structure`: with the cached JSON) or SEARCH (without: it is the
    bulk of a row and the cheap keys never need it)."""
    columns = ("uid, flags, internaldate, size, modseq, "
               + ("structure" if structure else "NULL") + ", filename")
    return [
        MessageData(uid, _flags(flags), date, size, modseq, struct, name)
        for uid, flags, date, size, modseq, struct, name in select_uids(
            conn, columns, mailbox_id, uids
        )
    ]


def read_files(folder: Path, messages: Sequence[MessageData]) -> list[bytes | None]:
    """The bytes of each message's file, None where it has vanished (expunged by another
    session, or removed behind our back; the caller reports that, RFC 9051 §7.5.1)."""
    out: list[bytes | None] = []
    for m in messages:
        path = maildir.locate(folder, m.filename, m.flags)
        try:
            out.append(path.read_bytes() if path is not None else None)
        except FileNotFoundError:  # renamed by a reader between locate and open: retry once
            again = maildir.locate(folder, m.filename, m.flags)
            out.append(again.read_bytes() if again is not None else None)
    return out


def read_files_cached(folder: Path, messages: Sequence[MessageData]) -> list[bytes | None] | None:
    """`read_files` without waiting for the disk: None as soon as a file is not wholly in
    the page cache (preadv2 RWF_NOWAIT), so the caller can read them on a pool thread
    instead of stalling the event loop."""
    out: list[bytes | None] = []
    for m in messages:
        path = maildir.locate(folder, m.filename, m.flags)
        if path is None:
            out.append(None)
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # renamed meanwhile: the pool's read_files retries
        try:
            size = os.fstat(fd).st_size
            buf = bytearray(size)
            if size and os.preadv(fd, [buf], 0, os.RWF_NOWAIT) != size:
                return None
        except OSError:  # EAGAIN: not cached; EOPNOTSUPP: a file system without it
            return None
        finally:
            os.close(fd)
        out.append(bytes(buf))
    return out


def save_structures(conn: sqlite3.Connection, mailbox_id: int, items: Sequence[tuple[int, str]]) -> None:
    """Cache structures parsed on demand (rows walked in before a parser existed, or whose
    cached schema is stale).  Not a change a client can see, so no modseq."""
    if not items:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        store_structures(conn, mailbox_id, items)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# ---------------------------------------------------------------------------- STORE


def _apply(mode: StoreMode, current: frozenset[str], flags: frozenset[str]) -> frozenset[str]:
    if mode is StoreMode.ADD:
        return current | flags
    if mode is StoreMode.REMOVE:
        return current - flags
    return flags


def _rename_for_flags(folder: Path, base: str, old: frozenset[str], new: frozenset[str]) -> Path | None:
    """Keep the file's Maildir info equal to the flags; returns the directory touched.  A
    file still in new/ stays there until it gets a flag with an info letter."""
    path = maildir.locate(folder, base, old)
    if path is None:
        return None  # vanished: the rescan will drop its row
    if path.parent.name == "new" and not (new & _INFO_FLAGS):
        return None
    target = folder / "cur" / maildir.file_name(base, new)
    if path == target:
        return None
    os.rename(path, target)
    return target.parent


def store_flags(
    conn: sqlite3.Connection,
    mail_root: Path,
    mailbox_id: int,
    uids: Sequence[int],
    mode: StoreMode,
    flags: Iterable[str],
    unchanged_since: int | None,
    *,
    durable: bool,
) -> FlagResult:
    wanted_flags = maildir.canonical_flags(flags)
    conn.execute("BEGIN IMMEDIATE")
    try:
        ref = _ref(conn, mailbox_id)
        folder = ref.folder(mail_root)
        (highest,) = conn.execute(
            "SELECT highestmodseq FROM mailboxes WHERE id = ?", (mailbox_id,)
        ).fetchone()
        new_modseq = highest + 1
        changed: list[tuple[int, str, frozenset[str], frozenset[str]]] = []
        unchanged: list[MessageState] = []
        modified: list[int] = []
        for uid, name, text, modseq in select_uids(conn, "uid, filename, flags, modseq",
                                                    mailbox_id, uids):
            if unchanged_since is not None and modseq > unchanged_since:
                modified.append(uid)  # RFC 7162 §3.1.3: someone changed it since
                continue
            old = _flags(text)
            new = _apply(mode, old, wanted_flags)
            if new == old:
                unchanged.append(MessageState(uid, old, modseq))
            else:
                changed.append((uid, name, old, new))
        dirs = set()
        for _uid, name, old, new in changed:
            touched = _rename_for_flags(folder, name, old, new)
            if touched is not None:
                dirs.add(touched)
        if durable:
            for d in dirs:
                maildir.fsync_dir(d)
        if changed:
            conn.executemany(
                "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                [(maildir.format_flags(new), new_modseq, mailbox_id, uid)
                 for uid, _, _, new in changed],
            )
            conn.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?",
                         (new_modseq, mailbox_id))
            highest = new_modseq
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return FlagResult(
        tuple(MessageState(uid, new, new_modseq) for uid, _, _, new in changed),
        tuple(unchanged), tuple(modified), highest,
    )


# ---------------------------------------------------------------------------- EXPUNGE


def expunge(
    conn: sqlite3.Connection, mail_root: Path, mailbox_id: int, uids: Sequence[int], *,
    durable: bool,
) -> list[int]:
    """Remove messages by UID; return the UIDs removed.  The same discipline as the POP3
    expunge (pop3ops.py) — files unlinked and directories fsynced before the rows go, the
    whole under the write lock — but by mailbox id, so a session whose mailbox was renamed
    meanwhile can never remove messages from another mailbox that took the old name."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        ref = _ref(conn, mailbox_id)
        rows = select_uids(conn, "uid, filename, flags, size", mailbox_id, uids)
        if not rows:
            conn.execute("ROLLBACK")
            return []
        removed = remove_rows(conn, ref, rows, mail_root, durable=durable)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return removed


def remove_rows(conn: sqlite3.Connection, ref: MailboxRef,
                rows: Sequence[tuple[int, str, str, int]], mail_root: Path, *,
                durable: bool) -> list[int]:
    """The common part of every expunge (IMAP EXPUNGE/MOVE here, POP3 UPDATE in
    pop3ops.py), inside the caller's write transaction: the files unlinked and their
    directories fsynced *before* the rows go, so a crash leaves at worst a row whose file
    is gone (dropped by the next rescan), never a file nobody indexes.  `rows` are
    (uid, file name, flags text, size)."""
    folder = ref.folder(mail_root)
    dirs: set[Path] = set()
    for _uid, name, text, _size in rows:
        path = maildir.locate(folder, name, _flags(text))
        if path is None:
            continue  # already gone from disk; the row goes below
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        dirs.add(path.parent)
    if durable:
        for d in dirs:
            maildir.fsync_dir(d)
    removed = [r[0] for r in rows]
    # The messages_expunged trigger records each UID with highestmodseq + 1 ...
    conn.executemany("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?",
                     [(ref.id, uid) for uid in removed])
    # ... which this makes the mailbox's HIGHESTMODSEQ (RFC 7162 §3.2.10).
    conn.execute("UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?",
                 (ref.id,))
    prune_expunged(conn, ref.id)
    conn.execute("UPDATE accounts SET used_bytes = MAX(0, used_bytes - ?) WHERE id = ?",
                 (sum(r[3] for r in rows), ref.account_id))
    return removed


# ---------------------------------------------------------------------------- COPY / MOVE


class CopyNames:
    """Maildir base names for copies: the writer's recipe with `C` in place of its `Q`
    counter, so the two generators of one process can never produce the same name."""

    def __init__(self, hostname: str | None) -> None:
        self.host = maildir.UniqueNames(hostname).hostname
        self._counter = itertools.count(1)

    def next(self, size: int) -> str:
        now = time.time()
        sec = int(now)
        return (f"{sec}.M{int((now - sec) * 1_000_000)}P{os.getpid()}C{next(self._counter)}"
                f".{self.host},S={size}")


def _place(src: Path, folder: Path, base: str, flags: frozenset[str], link: bool) -> Path:
    if flags & _INFO_FLAGS:
        dest = folder / "cur" / maildir.file_name(base, flags)
    else:
        dest = folder / "new" / base
    if link:
        try:
            os.link(src, dest)
        except OSError:  # another file system, or links not permitted: copy the bytes
            tmp = folder / "tmp" / base
            tmp.write_bytes(src.read_bytes())
            os.rename(tmp, dest)
    else:
        os.rename(src, dest)
    return dest


def transfer(
    conn: sqlite3.Connection,
    mail_root: Path,
    source_id: int,
    uids: Sequence[int],
    dest: MailboxHandle,
    *,
    move: bool,
    names: CopyNames,
    durable: bool,
    default_quota: int = 0,
    in_flight: Callable[[], frozenset[str]] = frozenset,
) -> CopyResult:
    """COPY (hard links, new base names) or MOVE (rename, same base name) of the messages
    with these UIDs into `dest`, in UID order; new UIDs in the same order (RFC 4315 §3)."""
    del in_flight  # files we place are committed by us before any rescan can run
    placed: list[tuple[Path, Path]] = []  # (source file, placed file)
    conn.execute("BEGIN IMMEDIATE")
    try:
        src_ref = _ref(conn, source_id)
        dst_ref = _ref(conn, dest.id)
        dst_state = conn.execute(
            "SELECT uidnext, highestmodseq, uidvalidity FROM mailboxes WHERE id = ?", (dest.id,)
        ).fetchone()
        uidnext, modseq, uidvalidity = dst_state
        rows = select_uids(conn, "uid, filename, flags, internaldate, size, structure",
                            source_id, uids)
        if not move:
            quota_row = conn.execute(
                "SELECT used_bytes, quota_bytes FROM accounts WHERE id = ?",
                (dst_ref.account_id,)).fetchone()
            limit = quota_row[1] or default_quota
            if not Quota(quota_row[0], limit).allows(sum(r[4] for r in rows)):
                raise OverQuota("copy would exceed the quota")
        src_folder, dst_folder = src_ref.folder(mail_root), dst_ref.folder(mail_root)
        inserts: list[NewRow] = []
        pairs: list[tuple[int, int]] = []
        for uid, base, text, date, size, structure in rows:
            flags = _flags(text)
            path = maildir.locate(src_folder, base, flags)
            if path is None:
                continue  # vanished file: nothing to copy; the rescan drops the row
            new_base = base if move else names.next(size)
            placed.append((path, _place(path, dst_folder, new_base, flags, link=not move)))
            modseq += 1
            inserts.append((dest.id, uidnext, new_base, text, date, size, modseq, structure))
            pairs.append((uid, uidnext))
            uidnext += 1
        if durable and placed:
            dirs = {p.parent for _, p in placed}
            if move:
                dirs |= {s.parent for s, _ in placed}
            for d in dirs:
                maildir.fsync_dir(d)
        insert_messages(conn, inserts)
        conn.execute("UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
                     (uidnext, modseq, dest.id))
        if move and pairs:
            conn.executemany("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?",
                             [(source_id, s) for s, _ in pairs])
            conn.execute(
                "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?",
                (source_id,),
            )
            prune_expunged(conn, source_id)
        if not move:
            conn.execute("UPDATE accounts SET used_bytes = used_bytes + ? WHERE id = ?",
                         (sum(i[5] for i in inserts), dst_ref.account_id))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        _undo(placed, move)
        raise
    return CopyResult(uidvalidity, tuple(s for s, _ in pairs), tuple(d for _, d in pairs))


def _undo(placed: list[tuple[Path, Path]], move: bool) -> None:
    """A failed COPY removes its links; a failed MOVE puts the files back."""
    for source, dest in reversed(placed):
        try:
            if move:
                os.rename(dest, source)
            else:
                os.unlink(dest)
        except OSError:  # the rescan reconciles whatever is left
            pass
