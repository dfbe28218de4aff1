"""The delivery writer: parallel file writes, then group commit of the index.

Ground rule (DESIGN.md, Storage): a delivery is acknowledged only after its file was written
to tmp/ and fsynced, renamed into new/ (or cur/), the directory fsynced, and its index row
committed.  Done one message at a time that is ~4 synchronous disk flushes per message; we
share the expensive half.

  stage 1, a pool of `write_threads`: as soon as a request arrives its file is written to
    tmp/, fsynced and renamed into place.  Requests never wait for each other here, and the
    fsyncs run in parallel (they release the GIL, and the file system merges concurrent
    journal commits).
  stage 2, one committer thread: takes *every* request whose file is in place (up to
    `max_batch`), fsyncs each distinct destination directory once for the lot, inserts all
    index rows in ONE transaction (one WAL fsync under synchronous=FULL), then resolves the
    callers' futures on their event loop (call_soon_threadsafe).

While the committer is busy, more files land and form the next batch, so directory fsyncs
and commits per message fall as concurrency rises (see `StoreStats`).

Failure rules: the caller's future gets the exception and its renamed file is unlinked (a
crash instead of an exception leaves it in new/ for the start-up rescan).  A group submitted
together — one message for several recipients — succeeds or fails as a whole, so one SMTP
reply is never a lie for some of them.  No row is committed for a file whose rename and
directory fsync have not completed.

Index maintenance (rescan) runs as a Call on the committer thread.  Names of files renamed
but not yet committed are tracked, and a rescan ignores them, so it never walks in a file
that a commit is about to index.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sqlite3
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kittiwake.store import db, maildir
from kittiwake.store.errors import NotFound, StoreClosed
from kittiwake.store.index import MailboxRef, find_mailbox
from kittiwake.store.models import DeliveredMessage, DeliveryRequest, StoreSettings, StoreStats
from kittiwake.store.structure import StructureParser, structure_json

log = logging.getLogger(__name__)

DIR_FSYNC_THREADS = 4


@dataclass(eq=False, slots=True)
class _Item:
    """One request's progress (filled in by one pool thread, then read by the committer)."""

    request: DeliveryRequest
    flags: frozenset[str]
    internaldate: float
    ref: MailboxRef | None = None
    base: str = ""
    size: int = 0
    structure: str | None = None
    tmp: Path | None = None  # written, not yet renamed
    dest: Path | None = None  # renamed into new/ or cur/


@dataclass(eq=False, slots=True)
class Group:
    """Requests that succeed or fail together, and the future their caller awaits."""

    items: list[_Item]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[DeliveredMessage]]
    remaining: int = 0  # items still in stage 1
    error: BaseException | None = None
    results: list[DeliveredMessage] | None = None

    @classmethod
    def of(cls, requests: list[DeliveryRequest], loop: asyncio.AbstractEventLoop) -> Group:
        now = time.time()
        items = [
            _Item(
                r,
                maildir.canonical_flags(r.flags),
                now if r.internaldate is None else r.internaldate,
            )
            for r in requests
        ]
        return cls(items, loop, loop.create_future(), remaining=len(items))


@dataclass(eq=False, slots=True)
class Call:
    """A function to run on the committer thread with its connection (rescan, sweeps).  It
    receives the set of in-flight file names to leave alone."""

    fn: Callable[[sqlite3.Connection, Callable[[], frozenset[str]]], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the mail may still have been delivered
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _post(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # loop closed: nobody is waiting any more
        pass


class Writer:
    def __init__(self, settings: StoreSettings, parser: StructureParser | None) -> None:
        self._settings = settings
        self._parser = parser
        self._names = maildir.UniqueNames(settings.hostname)
        self._cv = threading.Condition()
        self._ready: deque[Group | Call] = deque()  # files in place / calls, for the committer
        self._in_stage1 = 0  # groups still writing files
        self._in_flight: set[str] = set()  # base names renamed into place but not committed
        self._closing = False
        self._dead = False  # the committer died of a bug; stage 1 must not queue for it
        self._thread: threading.Thread | None = None
        self._io = concurrent.futures.ThreadPoolExecutor(
            max(1, settings.write_threads), thread_name_prefix="kittiwake-store-io"
        )
        # Separate from _io so a directory fsync never queues behind a flood of file writes.
        self._dir_sync = concurrent.futures.ThreadPoolExecutor(
            DIR_FSYNC_THREADS, thread_name_prefix="kittiwake-store-dirsync"
        )
        self._io_conns = db.ThreadConnections(settings.db_path, durable=settings.fsync)
        # Updated under _cv; plain ints, so a reader sees whole values.
        self._counts: dict[str, int] = dict.fromkeys(StoreStats.__dataclass_fields__, 0)

    @property
    def stats(self) -> StoreStats:
        return StoreStats(**self._counts)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> concurrent.futures.Future[None]:
        """Start the committer; the returned future completes once its connection is open."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="kittiwake-store-commit", daemon=True
        )
        self._thread.start()
        return ready

    def stop(self) -> None:
        """Finish everything already submitted, then stop.  Blocking: call from a thread."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._io.shutdown(wait=True)
        self._dir_sync.shutdown(wait=True)
        self._io_conns.close_all()

    def submit(self, work: Group | Call) -> None:
        with self._cv:
            if self._closing or self._thread is None or not self._thread.is_alive():
                raise StoreClosed("mail store is not running")
            if isinstance(work, Call):
                self._ready.append(work)
                self._cv.notify()
                return
            self._in_stage1 += 1
        for n, item in enumerate(work.items):
            try:
                self._io.submit(self._stage1, work, item)
            except BaseException as exc:  # pool unusable: account for what never ran
                for unsent in work.items[n:]:
                    self._stage1_done(work, unsent, exc)
                raise

    # ------------------------------------------------------------------ stage 1 (pool)

    def _stage1(self, group: Group, item: _Item) -> None:
        try:
            self._write_one(item)
        except BaseException as exc:
            self._stage1_done(group, item, exc)
        else:
            self._stage1_done(group, item, None)

    def _stage1_done(self, group: Group, item: _Item, error: BaseException | None) -> None:
        with self._cv:
            if error is not None:
                group.error = group.error or error
            elif self._settings.fsync:
                self._counts["file_fsyncs"] += 1
            group.remaining -= 1
            if group.remaining:
                return
            self._in_stage1 -= 1
            if group.error is None and not self._dead:
                self._ready.append(group)
                self._cv.notify()
                return
            group.error = group.error or StoreClosed("mail store writer stopped")
            self._cv.notify()  # stop() may be waiting for stage 1 to drain
        self._fail(group)

    def _write_one(self, it: _Item) -> None:
        """Look up the mailbox, write + fsync the file in tmp/, rename it into place."""
        it.ref = find_mailbox(self._io_conns.get(), it.request.account, it.request.mailbox)
        if it.ref is None:
            raise NotFound(f"no mailbox {it.request.mailbox!r} for {it.request.account}")
        folder = it.ref.folder(self._settings.mail_root)
        content = it.request.content
        it.size = len(content)
        # Parsed here: off the event loop, overlapping other threads' fsyncs.
        it.structure = structure_json(self._parser, content)
        it.base = self._names.next(it.size)
        tmp = folder / "tmp" / it.base
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        it.tmp = tmp
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            # Maildir readers (and our rescan) take INTERNALDATE from the mtime.
            os.utime(fd, (it.internaldate, it.internaldate))
            if self._settings.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if it.flags:
            dest = folder / "cur" / maildir.file_name(it.base, it.flags)
        else:
            dest = folder / "new" / it.base
        with self._cv:  # before the rename, so a rescan can never see it unannounced
            self._in_flight.add(it.base)
        os.rename(tmp, dest)
        it.tmp, it.dest = None, dest

    # ------------------------------------------------------------------ stage 2 (committer)

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            conn = db.connect(self._settings.db_path, durable=self._settings.fsync)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            while (work := self._take()) is not None:
                if isinstance(work, Call):
                    self._run_call(conn, work)
                else:
                    self._commit_batch(conn, work)
        except BaseException as exc:  # a bug: fail what waits rather than hang callers forever
            log.exception("store committer died")
            with self._cv:
                self._closing = self._dead = True
                orphans, self._ready = list(self._ready), deque()
            for orphan in orphans:
                if isinstance(orphan, Call):
                    _post(orphan.loop, orphan.future, None, exc)
                else:
                    orphan.error = exc
                    self._fail(orphan)
        finally:
            conn.close()

    def _take(self) -> Call | list[Group] | None:
        """Block for work; return one Call, or every ready Group up to max_batch messages
        (a single group larger than that is taken whole: it must stay atomic).  None once
        closing and nothing is left in either stage."""
        with self._cv:
            while not self._ready and not (self._closing and self._in_stage1 == 0):
                self._cv.wait()
            if not self._ready:
                return None
            if isinstance(self._ready[0], Call):
                return self._ready.popleft()  # type: ignore[return-value]
            groups: list[Group] = []
            count = 0
            while self._ready:
                head = self._ready[0]
                if isinstance(head, Call):
                    break
                if groups and count + len(head.items) > self._settings.max_batch:
                    break
                self._ready.popleft()
                groups.append(head)
                count += len(head.items)
            return groups

    def _run_call(self, conn: sqlite3.Connection, call: Call) -> None:
        try:
            result = call.fn(conn, self._in_flight_names)
        except BaseException as exc:
            _post(call.loop, call.future, None, exc)
        else:
            _post(call.loop, call.future, result, None)

    def _in_flight_names(self) -> frozenset[str]:
        with self._cv:
            return frozenset(self._in_flight)

    def _commit_batch(self, conn: sqlite3.Connection, groups: list[Group]) -> None:
        try:
            self._fsync_dirs(groups)
            self._commit(conn, groups)
        except BaseException as exc:  # commit failed, or our bug: nobody is left hanging
            log.exception("delivery batch failed messages=%d", sum(len(g.items) for g in groups))
            for g in groups:
                g.error = g.error or exc
                g.results = None
        # Counters first: a caller woken by its future must see its own delivery counted.
        with self._cv:
            self._counts["batches"] += 1
            self._counts["messages"] += sum(len(g.results) for g in groups if g.results)
            self._in_flight.difference_update(
                it.base for g in groups if g.results is not None for it in g.items
            )
        for g in groups:
            if g.results is None:
                self._fail(g)
            else:
                _post(g.loop, g.future, g.results, None)

    def _fsync_dirs(self, groups: list[Group]) -> None:
        if not self._settings.fsync:
            return
        users: dict[Path, list[Group]] = defaultdict(list)
        for g in groups:
            for it in g.items:
                assert it.dest is not None
                users[it.dest.parent].append(g)
        jobs = {self._dir_sync.submit(maildir.fsync_dir, d): d for d in users}
        for fut, directory in jobs.items():
            exc = fut.exception()
            if exc is not None:
                for g in users[directory]:
                    g.error = g.error or exc
        with self._cv:
            self._counts["dir_fsyncs"] += len(jobs)

    def _commit(self, conn: sqlite3.Connection, groups: list[Group]) -> None:
        live = [g for g in groups if g.error is None]
        if not live:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            state: dict[int, list[int]] = {}
            for mailbox_id in {it.ref.id for g in live for it in g.items if it.ref}:
                row = conn.execute(
                    "SELECT uidnext, highestmodseq FROM mailboxes WHERE id = ?", (mailbox_id,)
                ).fetchone()
                if row is not None:
                    state[mailbox_id] = [row[0], row[1]]
            rows: list[tuple[Any, ...]] = []
            usage: dict[int, int] = defaultdict(int)
            results: dict[int, list[DeliveredMessage]] = {}
            for g in live:
                if not all(it.ref and it.ref.id in state for it in g.items):
                    # Deleted (e.g. `user del`) after we looked it up: fail, don't orphan.
                    g.error = NotFound("mailbox was deleted during delivery")
                    continue
                out = results[id(g)] = []
                for it in g.items:
                    assert it.ref is not None and it.dest is not None
                    st = state[it.ref.id]
                    uid, st[0] = st[0], st[0] + 1
                    st[1] += 1  # RFC 7162: each new message gets its own, higher modseq
                    rows.append(
                        (it.ref.id, uid, it.base, maildir.format_flags(it.flags),
                         it.internaldate, it.size, st[1], it.structure)
                    )  # fmt: skip
                    usage[it.ref.account_id] += it.size
                    out.append(DeliveredMessage(it.ref.account, it.ref.name, uid, it.dest))
            conn.executemany(
                "INSERT INTO messages (mailbox_id, uid, filename, flags, internaldate, size,"
                " modseq, structure) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(
                "UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
                [(uidnext, modseq, mid) for mid, (uidnext, modseq) in state.items()],
            )
            conn.executemany(
                "UPDATE accounts SET used_bytes = used_bytes + ? WHERE id = ?",
                [(size, aid) for aid, size in usage.items()],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        with self._cv:
            self._counts["commits"] += 1
        for g in live:
            if g.error is None:
                g.results = results[id(g)]

    def _fail(self, g: Group) -> None:
        """Remove a failed group's files, so a retry by the sender does not deliver twice,
        and hand the caller the error.  Best effort: if the unlink fails too, the file is
        durable and the next rescan keeps it (a duplicate, never a loss)."""
        for it in g.items:
            for path in (it.dest, it.tmp):
                if path is not None:
                    try:
                        os.unlink(path)
                    except OSError:
                        log.warning("could not remove file of failed delivery: %s", path)
        with self._cv:
            self._counts["failures"] += len(g.items)
            self._in_flight.difference_update(it.base for it in g.items)
        _post(g.loop, g.future, None, g.error or RuntimeError("delivery not completed"))
