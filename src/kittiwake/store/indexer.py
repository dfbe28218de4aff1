"""The background indexer: after delivery, off the path to the 250, each message gets its
IMAP response cache (ENVELOPE, BODYSTRUCTURE, BODY, header block) and its full-text
document (fts.py); messages walked in without a parsed structure get that too.

Progress is one number per mailbox, `index_state.indexed_uid` — UIDs only grow, so
everything above it is still to do — committed in the same transaction as the batch, so
a crash repeats at most one batch.  The CPU work (reading files, MIME parsing, decoding
text) runs in a separate process, so an indexing backlog (100,000 messages walked in) never
competes with the sessions for the event loop's interpreter lock (a plain child process
running this module, `serve()`; multiprocessing's spawn would re-import the server's main
module); the small write of each batch runs on the store's committer thread like every
other write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import pickle
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kittiwake.store import fts, maildir
from kittiwake.store.imapcache import common_fields
from kittiwake.store.index import MailboxRef

if TYPE_CHECKING:
    from kittiwake.store.imapstore import ImapStore

log = logging.getLogger(__name__)

BATCH = 200
COMMIT_CHUNK = 25  # documents per write transaction (see _batch)
IDLE_POLL = 5.0  # seconds between looks for work nobody told us about (other processes)


@dataclass(frozen=True, slots=True)
class Prepared:
    """What one message contributes to the cache and the index."""

    uid: int
    structure: str | None  # JSON, when the row had none (or an old schema)
    envelope: str
    bodystructure: str
    body: str
    ascii: bool
    header: bytes
    common: bytes  # the header's COMMON_FIELDS lines (imapcache.py)
    document: tuple[str, ...]


def prepare(folder: str, items: Sequence[tuple[int, str, tuple[str, ...], str | None]],
            ) -> list[Prepared]:
    """Runs in the worker process: read, parse what is missing, format, extract text."""
    from kittiwake.message.bodystructure import (
        format_body,
        format_bodystructure,
        format_envelope,
    )
    from kittiwake.message.structure import SCHEMA_VERSION, parse_structure

    out: list[Prepared] = []
    root = Path(folder)
    for uid, base, flags, structure in items:
        path = maildir.locate(root, base, flags)
        if path is None:
            continue
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            continue
        struct: Any = json.loads(structure) if structure else None
        new_json = None
        if not isinstance(struct, dict) or struct.get("v") != SCHEMA_VERSION:
            struct = parse_structure(raw)
            new_json = json.dumps(struct, separators=(",", ":"))
        envelope = format_envelope(struct)
        bodystructure = format_bodystructure(struct)
        body = format_body(struct)
        ascii_only = (envelope + bodystructure).isascii()
        header = raw[: struct.get("b", 0)]
        out.append(Prepared(uid, new_json, envelope, bodystructure, body, ascii_only, header,
                            common_fields(header), fts.document(raw, struct)))
    return out


def _spawn() -> subprocess.Popen[bytes] | None:
    """The worker: `python -m kittiwake.store.indexworker`, batches pickled over its stdin and
    stdout (a private pipe between two copies of this module, never peer data)."""
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "kittiwake.store.indexworker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    except OSError:
        log.warning("event=index_worker_unavailable; indexing in process")
        return None


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.stdin is not None:
        worker.stdin.close()
    try:
        worker.wait(5)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def serve() -> None:
    """The worker process's loop: one batch in, its results out, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            folder, items = pickle.load(stdin)
        except EOFError:
            return
        pickle.dump(prepare(folder, items), stdout)
        stdout.flush()


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
        self._pool: concurrent.futures.Executor | None = None
        self._worker: subprocess.Popen[bytes] | None = None
        self._fts = False
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
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.to_thread(_stop, worker)

    async def idle(self, timeout: float = 60.0) -> bool:
        """Wait until nothing is left to index (tests, benchmarks)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not await self._imap._read(_pending):
                return True
            await asyncio.sleep(0.05)
        return False

    def _executor(self) -> concurrent.futures.Executor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="indexer")
        return self._pool

    def _prepare(self, folder: str, items: list[tuple[int, str, tuple[str, ...], str | None]],
                 ) -> list[Prepared]:
        """In the indexer's thread: hand the batch to the worker process (started on first
        use, restarted if it died); without one, do the work here."""
        worker = self._worker
        if worker is None or worker.poll() is not None:
            worker = self._worker = _spawn()
        if worker is None or worker.stdin is None or worker.stdout is None:
            return prepare(folder, items)
        try:
            pickle.dump((folder, items), worker.stdin)
            worker.stdin.flush()
            result: list[Prepared] = pickle.load(worker.stdout)
        except Exception:
            log.warning("event=index_worker_lost; doing the batch in process", exc_info=True)
            worker.kill()
            self._worker = None
            return prepare(folder, items)
        return result

    async def _run(self) -> None:
        self._fts = await self._imap._write(fts.ensure)
        while True:
            try:
                work = await self._imap._read(_pending)
                for mailbox_id, validity, mark in work:
                    await self._batch(mailbox_id, validity, mark)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=index_failed")
                await asyncio.sleep(IDLE_POLL)
                continue
            if not work:
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
                "SELECT uid, filename, flags, structure FROM messages WHERE mailbox_id = ?"
                " AND uid > ? ORDER BY uid LIMIT ?", (mailbox_id, mark, BATCH)).fetchall()
            return str(folder), found, int(ref_row[4])

        got = await self._imap._read(rows)
        if got is None:
            return
        folder, found, uidnext = got
        items = [(uid, name, tuple(flags.split()), structure)
                 for uid, name, flags, structure in found]
        loop = asyncio.get_running_loop()
        prepared: list[Prepared] = (
            await loop.run_in_executor(self._executor(), self._prepare, folder, items)
            if items else [])
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

    def _committer(self, mailbox_id: int, validity: int, prepared: list[Prepared],
                   new_mark: int) -> Callable[[sqlite3.Connection], None]:
        use_fts = self._fts

        def commit(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                live = {r[0] for r in conn.execute(
                    "SELECT uid FROM messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ?",
                    (mailbox_id, prepared[0].uid if prepared else 0,
                     prepared[-1].uid if prepared else 0))}
                done = [p for p in prepared if p.uid in live]
                conn.executemany(
                    "INSERT OR REPLACE INTO imap_cache (mailbox_id, uid, envelope,"
                    " bodystructure, body, ascii) VALUES (?, ?, ?, ?, ?, ?)",
                    # Stored as UTF-8 octets: FETCH writes them to the wire as they are.
                    [(mailbox_id, p.uid, p.envelope.encode(), p.bodystructure.encode(),
                      p.body.encode(), int(p.ascii)) for p in done])
                conn.executemany(
                    "INSERT OR REPLACE INTO imap_header (mailbox_id, uid, header)"
                    " VALUES (?, ?, ?)", [(mailbox_id, p.uid, p.header) for p in done])
                conn.executemany(
                    "INSERT OR REPLACE INTO imap_common (mailbox_id, uid, common)"
                    " VALUES (?, ?, ?)", [(mailbox_id, p.uid, p.common) for p in done])
                conn.executemany(
                    "UPDATE messages SET structure = ? WHERE mailbox_id = ? AND uid = ?",
                    [(p.structure, mailbox_id, p.uid) for p in done if p.structure])
                if use_fts:
                    fts.insert(conn, [(rid, p.document) for p in done
                                      if (rid := fts.rowid(validity, p.uid)) is not None])
                conn.execute(
                    "INSERT INTO index_state (mailbox_id, indexed_uid) VALUES (?, ?)"
                    " ON CONFLICT (mailbox_id) DO UPDATE SET indexed_uid ="
                    " MAX(indexed_uid, excluded.indexed_uid)", (mailbox_id, new_mark))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return commit

