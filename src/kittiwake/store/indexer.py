"""The background indexer: after delivery, off the path to the 250, each message gets its
IMAP response cache (ENVELOPE, BODYSTRUCTURE, BODY, header block) and its full-text
document (fts.py); messages walked in without a parsed structure get that too.

Progress is one number per mailbox, `index_state.indexed_uid` — UIDs only grow, so
everything above it is still to do — committed in the same transaction as the batch, so
a crash repeats at most one batch.  The CPU work (reading files, MIME parsing, decoding
text) runs in a worker process (workers.py), so an indexing backlog (100,000 messages
walked in) never competes with the sessions for the event loop's interpreter lock; the
small write of each batch runs on the store's committer thread like every other write.
The indexer steps aside while a session is filling the cache itself (a FETCH of
ENVELOPE over messages not indexed yet, `ImapStore.fill_cache`): that client is waiting.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kittiwake.store import db, fts, messageops
from kittiwake.store.index import WITH_STRUCTURE, MailboxRef, store_structures
from kittiwake.store.workers import Prepared

if TYPE_CHECKING:
    from kittiwake.store.imapstore import ImapStore

log = logging.getLogger(__name__)

BATCH = 100
COMMIT_CHUNK = 25  # documents per write transaction (see _batch)
IDLE_POLL = 5.0  # seconds between looks for work nobody told us about (other processes)
GRACE = 2.0  # seconds the indexer waits after a session's own fill_cache
COMPACT_CHECK = 600.0  # seconds between looks at the full-text index's dead rows (fts.py)


def _pending(conn: sqlite3.Connection) -> list[tuple[int, int, int]]:
    return [(mid, validity, mark) for mid, validity, mark in conn.execute(
        "SELECT m.id, m.uidvalidity, COALESCE(s.indexed_uid, 0) FROM mailboxes m"
        " LEFT JOIN index_state s ON s.mailbox_id = m.id"
        " WHERE m.uidnext - 1 > COALESCE(s.indexed_uid, 0)")]


class Indexer:
    def __init__(self, imap: ImapStore) -> None:
        self._imap = imap
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fts = False
        self._checked = -1e9  # loop time of the last look at the index's dead rows
        self.indexed = 0  # messages done by this process (tests, logs)

    def kick(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def idle(self, timeout: float = 60.0) -> bool:
        """Wait until nothing is left to index (tests, benchmarks)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not await self._imap._read(_pending):
                return True
            await asyncio.sleep(0.05)
        return False

    async def _run(self) -> None:
        self._fts = await self._imap._write(fts.ensure)
        while True:
            try:
                work = await self._imap._read(_pending)
                for mailbox_id, validity, mark in work:
                    await self._batch(mailbox_id, validity, mark)
                busy = bool(work) or (self._fts and await self._compact())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=index_failed")
                await asyncio.sleep(IDLE_POLL)
                continue
            if not busy:
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL)
                except TimeoutError:
                    pass
                self._wake.clear()

    async def _batch(self, mailbox_id: int, validity: int, mark: int) -> None:
        mail_root = self._imap._store.settings.mail_root

        def rows(conn: sqlite3.Connection) -> tuple[str, list[Any], int] | None:
            ref_row = conn.execute(
                "SELECT m.id, m.account_id, a.address, m.name, m.uidnext FROM mailboxes m"
                " JOIN accounts a ON a.id = m.account_id WHERE m.id = ?", (mailbox_id,)
            ).fetchone()
            if ref_row is None:
                return None
            folder = MailboxRef(*ref_row[:4]).folder(mail_root)
            found = conn.execute(
                f"SELECT uid, filename, flags, structure FROM {WITH_STRUCTURE}"
                " WHERE mailbox_id = ? AND uid > ? ORDER BY uid LIMIT ?",
                (mailbox_id, mark, BATCH)).fetchall()
            return str(folder), found, int(ref_row[4])

        got = await self._imap._read(rows)
        if got is None:
            return
        folder, found, uidnext = got
        items = [(uid, name, tuple(flags.split()), structure)
                 for uid, name, flags, structure in found]
        await self._wait_for_sessions()
        prepared: list[Prepared] = (
            await self._imap.run_worker("prepare", folder, items, True) if items else [])
        # Done up to the last row read; with none left, up to UIDNEXT - 1 (the highest UIDs
        # may have been expunged, and must not keep the mailbox "pending" for ever).
        new_mark = found[-1][0] if len(found) == BATCH else uidnext - 1
        # Committed in small pieces: the full-text insert is the costly part of a write, and
        # a delivery's commit waits behind it on the committer thread.
        by_uid = {p.uid: p for p in prepared}
        for start in range(0, max(len(items), 1), COMMIT_CHUNK):
            chunk = items[start : start + COMMIT_CHUNK]
            last = start + COMMIT_CHUNK >= len(items)
            mark = new_mark if last else chunk[-1][0]
            done = [by_uid[i[0]] for i in chunk if i[0] in by_uid]
            await self._imap._write(self._committer(mailbox_id, validity, done, mark))
        self.indexed += len(prepared)

    async def _compact(self) -> bool:
        """A step of the full-text index's compaction (fts.py) when there is nothing new
        to index: start one when due, copy a batch, or swap the copy in.  True while it
        has more to do."""
        loop = asyncio.get_running_loop()
        if not await self._imap._read(fts.rebuilding):
            if loop.time() - self._checked < COMPACT_CHECK:
                return False
            self._checked = loop.time()
            # Counted on a reader (a scan of the index): the committer is not held up.
            if not (await self._imap._read(fts.compaction_due)
                    and await self._imap._write(fts.start_compaction)):
                return False
        work = await self._imap._write(lambda conn: fts.rebuild_work(conn, BATCH))
        if work is None:
            await self._imap._write(fts.finish_compaction)
            return False
        mailbox_id, validity, done, rows = work
        await self._wait_for_sessions()
        folder = await self._imap._read(lambda conn: str(messageops.folder_of(
            conn, self._imap._store.settings.mail_root, mailbox_id)))
        items = [(uid, name, tuple(flags.split()), structure)
                 for uid, name, flags, structure in rows]
        docs: list[tuple[int, tuple[str, ...]]] = (
            await self._imap.run_worker("documents", folder, items) if items else [])
        rows_out = [(rid, doc) for uid, doc in docs
                    if (rid := fts.rowid(validity, uid)) is not None]

        def commit(conn: sqlite3.Connection) -> None:
            with db.derived(conn):
                db.transaction(conn, lambda c: fts.rebuild_commit(c, mailbox_id, done, rows_out))

        await self._imap._write(commit)
        return True

    async def _wait_for_sessions(self) -> None:
        """A client waiting on fill_cache goes first, and keeps the cores for a moment
        after each of its batches (a FETCH over 100,000 messages is many of them)."""
        loop = asyncio.get_running_loop()
        while self._imap.interactive or loop.time() - self._imap.last_interactive < GRACE:
            await asyncio.sleep(0.1)

    def _committer(self, mailbox_id: int, validity: int, prepared: list[Prepared],
                   new_mark: int) -> Callable[[sqlite3.Connection], None]:
        use_fts = self._fts

        def work(conn: sqlite3.Connection) -> None:
            cache_rows(conn, mailbox_id, prepared)
            live = {r[0] for r in conn.execute(
                "SELECT uid FROM messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ?",
                (mailbox_id, prepared[0].uid if prepared else 0,
                 prepared[-1].uid if prepared else 0))}
            done = [p for p in prepared if p.uid in live]
            if use_fts:
                docs = [(rid, p.document) for p in done if p.document
                        and (rid := fts.rowid(validity, p.uid)) is not None]
                fts.insert(conn, docs)
                if done and fts.also_next(conn, mailbox_id, done[0].uid):
                    fts.insert(conn, docs, fts.NEXT)  # a compaction is under way
            conn.execute(
                "INSERT INTO index_state (mailbox_id, indexed_uid) VALUES (?, ?)"
                " ON CONFLICT (mailbox_id) DO UPDATE SET indexed_uid ="
                " MAX(indexed_uid, excluded.indexed_uid)", (mailbox_id, new_mark))

        def commit(conn: sqlite3.Connection) -> None:
            with db.derived(conn):
                db.transaction(conn, work)

        return commit


def cache_rows(conn: sqlite3.Connection, mailbox_id: int, prepared: list[Prepared]) -> None:
    """Write the response cache of some messages (those still there); the caller owns the
    transaction."""
    if not prepared:
        return
    live = {r[0] for r in conn.execute(
        "SELECT uid FROM messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ?",
        (mailbox_id, prepared[0].uid, prepared[-1].uid))}
    done = [p for p in prepared if p.uid in live]
    conn.executemany(
        "INSERT OR REPLACE INTO imap_cache (mailbox_id, uid, envelope, bodystructure, body,"
        " ascii) VALUES (?, ?, ?, ?, ?, ?)",
        # Stored as UTF-8 octets: FETCH writes them to the wire as they are.
        [(mailbox_id, p.uid, p.envelope.encode(), p.bodystructure.encode(), p.body.encode(),
          int(p.ascii)) for p in done])
    conn.executemany(
        "INSERT OR REPLACE INTO imap_header (mailbox_id, uid, header) VALUES (?, ?, ?)",
        [(mailbox_id, p.uid, p.header) for p in done if p.header is not None])
    conn.executemany(
        "INSERT OR REPLACE INTO imap_common (mailbox_id, uid, common) VALUES (?, ?, ?)",
        [(mailbox_id, p.uid, p.common) for p in done if p.common is not None])
    store_structures(conn, mailbox_id, [(p.uid, p.structure) for p in done if p.structure])

