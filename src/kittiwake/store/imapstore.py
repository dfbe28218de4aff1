"""The store's IMAP face: `MailStore.imap`, an `ImapStore` of async operations.

Everything IMAP needs from the store goes through here (DESIGN.md: nothing above the store
touches files or SQL).  Writes run as Calls on the committer thread, serialised with
deliveries and rescans; reads run on the reader pool.  After each write the account is
published on the `ChangeNotifier`, so other sessions in this process wake at once (IMAP
IDLE, RFC 2177); sessions also poll `state()` so changes from other processes are seen.

Quota (RFC 9208): the account's `quota_bytes` (0: the configured default, `set_default_quota`;
0 there too: unlimited) against its `used_bytes`, which
every transaction that adds or removes rows keeps current.  APPEND and COPY are refused
with `OverQuota`; `quota_exceeded(account, size)` is the check the SMTP backend makes before
accepting a message (452 4.2.2, RFC 3463).  Concurrent APPENDs can overshoot by at most one
message each: the check and the delivery are separate steps, as in Dovecot.

Walk-in: a SELECT or STATUS first reconciles the mailbox with its Maildir when its new/ or
cur/ directory changed since the last look (mtime), so files copied in by another program
get UIDs without a restart, at the cost of two stat() calls when nothing changed; the files
are not read then (walkin.py), the indexer parses them in the background.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kittiwake.store import db, fts, imapcache, mailboxops, maildir, messageops, search
from kittiwake.store.addresses import account_dir, fold
from kittiwake.store.errors import NotFound
from kittiwake.store.imaptypes import (
    AppendResult,
    Changes,
    CopyResult,
    FlagResult,
    ImapStatus,
    MailboxHandle,
    MailboxListing,
    MessageData,
    OverQuota,
    Quota,
    Snapshot,
    StoreMode,
)
from kittiwake.store.index import MailboxRef
from kittiwake.store.indexer import Indexer, cache_rows
from kittiwake.store.models import DeliveredMessage
from kittiwake.store.notify import ChangeNotifier, Subscription
from kittiwake.store.walkin import quick_reconcile
from kittiwake.store.workers import Prepared, WorkerPool

if TYPE_CHECKING:
    from kittiwake.store.mailstore import MailStore

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A directory whose mtime is this recent may still change within the same timestamp
#: tick, so its mtime is not trusted to mean "nothing new" next time.
_MTIME_SETTLE_NS = 100_000_000


def structure_version_ok(struct: object) -> bool:
    from kittiwake.message.structure import SCHEMA_VERSION

    return isinstance(struct, dict) and struct.get("v") == SCHEMA_VERSION


#: Messages per worker call when a session fills the cache itself (see fill_cache).
FILL_CHUNK = 512
#: FETCHes of at most this many messages try to read their files on the loop's thread.
INLINE_READS = 4


def _cache_writer(mailbox_id: int, prepared: list[Prepared]) -> Callable[[sqlite3.Connection], None]:
    def write(conn: sqlite3.Connection) -> None:
        with db.derived(conn):
            db.transaction(conn, lambda c: cache_rows(c, mailbox_id, prepared))

    return write


class ImapStore:
    def __init__(self, store: MailStore) -> None:
        self._store = store
        self.notifier = ChangeNotifier()
        self._names = messageops.CopyNames(store.settings.hostname)
        self._seen_mtimes: dict[int, tuple[tuple[int, int], int]] = {}  # mtimes, walked at
        self.indexer = Indexer(self)
        # Worker processes for parsing and text extraction (workers.py), one per core;
        # each call occupies one of these threads while its worker runs.
        size = max(1, min(4, os.cpu_count() or 1))
        self.workers = WorkerPool(size)
        self._worker_threads = concurrent.futures.ThreadPoolExecutor(
            size, thread_name_prefix="kittiwake-worker-call")
        self.interactive = 0  # fill_cache calls under way: the indexer waits for them
        self.last_interactive = -1e9  # loop time the last one ended
        self._background: set[asyncio.Task[None]] = set()
        self.default_quota = 0

    def start_indexer(self) -> None:
        """Start filling the response cache and full-text index in the background (the
        IMAP server does, at start); idempotent."""
        self.indexer.start()

    async def stop_indexer(self) -> None:
        """Stop the indexer and the worker processes (the IMAP server does, at shutdown)."""
        await self.indexer.stop()
        await asyncio.to_thread(self.workers.close)

    async def run_worker(self, name: str, *args: Any) -> Any:
        """Run `workers.FUNCTIONS[name]` in a worker process."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker_threads, self.workers.call, name,
                                          *args)

    async def fill_cache(self, handle: MailboxHandle, uids: Sequence[int], *,
                         header: bool) -> AsyncGenerator[list[Prepared], None]:
        """The response cache of messages the indexer has not reached (walked in, just
        delivered), made now for a client that asked (FETCH ENVELOPE of a mailbox opened
        for the first time): on every worker at once, yielded in UID order a chunk at a
        time so the session writes while the workers go on, and written back in the
        background.  `header`: the header block is wanted too (HEADER.FIELDS items).
        The indexer waits meanwhile: this client is waiting.  Use with
        `contextlib.aclosing`, so an early exit lets the indexer go again."""
        root = self._mail_root

        def rows(conn: sqlite3.Connection) -> tuple[str, list[Any]]:
            folder = messageops.folder_of(conn, root, handle.id)
            found = [(uid, name, tuple(text.split()), structure)
                     for uid, name, text, structure in messageops.select_uids(
                         conn, "uid, filename, flags, structure", handle.id, uids)]
            return str(folder), found

        self.interactive += 1
        tasks: list[asyncio.Future[Any]] = []
        try:
            folder, items = await self._read(rows)
            # Chunks small enough that the first comes back soon, enough of them to keep
            # every worker busy.
            step = max(25, min(FILL_CHUNK, -(-len(items) // (4 * self.workers.size))))
            tasks = [asyncio.ensure_future(self.run_worker(
                "prepare", folder, items[i : i + step], False, header))
                for i in range(0, len(items), step)]
            for task in tasks:
                prepared: list[Prepared] = await task
                if prepared:
                    self._in_background(self._write(_cache_writer(handle.id, prepared)))
                yield prepared
        finally:
            for task in tasks:
                task.cancel()
            self.interactive -= 1
            self.last_interactive = asyncio.get_running_loop().time()

    def _in_background(self, write: Awaitable[None]) -> None:
        """A cache write the client need not wait for (the committer may be busy with the
        indexer's); logged if it fails."""
        task = asyncio.ensure_future(write)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def kick_indexer(self) -> None:
        self.indexer.kick()

    @property
    def _mail_root(self) -> Path:
        return self._store.settings.mail_root

    @property
    def _durable(self) -> bool:
        return self._store.settings.fsync

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *accounts: str) -> T:
        def run(conn: sqlite3.Connection, _in_flight: Callable[[], frozenset[str]]) -> T:
            return fn(conn)

        try:
            return await self._store._call(run)
        finally:
            if accounts:
                self.notifier.publish(fold(a) for a in accounts)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._store._read(fn)

    def delivered(self, messages: Iterable[DeliveredMessage]) -> None:
        """Called by MailStore after deliveries: wake the recipients' sessions and the
        indexer."""
        self.notifier.publish(m.account for m in messages)
        self.indexer.kick()

    def subscribe(self, account: str) -> Subscription:
        return self.notifier.subscribe(fold(account))

    # ------------------------------------------------------------------ mailboxes

    async def mailbox(self, account: str, name: str) -> MailboxHandle:
        return await self._read(lambda conn: mailboxops.handle(conn, account, name))

    async def list_mailboxes(self, account: str, *, discover: bool = False) -> list[MailboxListing]:
        """LIST data; with `discover`, folders copied into the Maildir++ tree are adopted
        first (a write, so only when the caller asks: at LIST, not at every STATUS)."""
        if discover:
            await self._write(lambda conn: mailboxops.discover(conn, self._mail_root, account,
                                                                durable=self._durable))
        return await self._read(lambda conn: mailboxops.listing(conn, account))

    async def create_mailbox(self, account: str, name: str,
                             special_use: str | None = None) -> MailboxHandle:
        return await self._write(
            lambda conn: mailboxops.create(conn, self._mail_root, account, name, special_use,
                                           durable=self._durable), account)

    async def delete_mailbox(self, account: str, name: str) -> None:
        await self._write(
            lambda conn: mailboxops.delete(conn, self._mail_root, account, name,
                                           durable=self._durable), account)

    async def rename_mailbox(self, account: str, old: str, new: str) -> None:
        """RFC 9051 §6.3.6; renaming INBOX moves its messages to a new mailbox and leaves
        INBOX empty (its inferiors stay where they are)."""
        if old.upper() == maildir.INBOX:
            target = await self.create_mailbox(account, new)
            inbox = await self.mailbox(account, maildir.INBOX)
            uids = (await self.snapshot(inbox, rescan=False)).uids
            if uids:
                await self.copy(inbox, uids, target, move=True)
            return
        await self._write(
            lambda conn: mailboxops.rename(conn, self._mail_root, account, old, new,
                                           durable=self._durable), account)
        self._seen_mtimes.clear()

    async def set_subscribed(self, account: str, name: str, subscribed: bool) -> None:
        await self._write(lambda conn: mailboxops.set_subscribed(conn, account, name, subscribed))

    async def status(self, handle: MailboxHandle, *, rescan: bool = True) -> ImapStatus:
        if rescan:
            await self.rescan_if_changed(handle)
        return await self._read(lambda conn: mailboxops.status(conn, handle.id))

    def set_default_quota(self, limit_bytes: int) -> None:
        """The storage limit of accounts without their own `quota_bytes` (0 = none); the
        configuration's `[imap] quota`."""
        self.default_quota = max(0, limit_bytes)

    async def quota(self, account: str) -> Quota:
        default = self.default_quota
        return await self._read(lambda conn: mailboxops.quota(conn, account, default))

    async def quota_exceeded(self, account: str, size: int) -> bool:
        """For the SMTP backend: would a message of `size` octets exceed the quota?"""
        return not (await self.quota(account)).allows(size)

    # ------------------------------------------------------------------ walk-in

    def _dir_mtimes(self, handle: MailboxHandle) -> tuple[int, int] | None:
        folder = maildir.folder_dir(account_dir(self._mail_root, handle.account), handle.name)
        try:
            return (os.stat(folder / "new").st_mtime_ns, os.stat(folder / "cur").st_mtime_ns)
        except FileNotFoundError:
            return None

    def _clean(self, handle: MailboxHandle, mtimes: tuple[int, int] | None) -> bool:
        """True when a walk made after the last change of these mtimes saw everything."""
        seen = self._seen_mtimes.get(handle.id)
        return (mtimes is not None and seen is not None and seen[0] == mtimes
                and seen[1] - max(mtimes) > _MTIME_SETTLE_NS)

    async def rescan_if_changed(self, handle: MailboxHandle) -> None:
        mtimes = self._dir_mtimes(handle)
        if mtimes is None or self._clean(handle, mtimes):
            return
        mail_root = self._mail_root
        walked_at = time.time_ns()

        def run(conn: sqlite3.Connection, in_flight: Callable[[], frozenset[str]]) -> None:
            row = conn.execute(
                "SELECT m.id, m.account_id, a.address, m.name FROM mailboxes m JOIN accounts a"
                " ON a.id = m.account_id WHERE m.id = ?", (handle.id,)).fetchone()
            if row is None:
                return
            ref = MailboxRef(*row)
            result = quick_reconcile(conn, ref, ref.folder(mail_root), in_flight)
            if result.added or result.removed or result.reflagged:
                self.notifier.publish([ref.account])
                if result.added:
                    self.kick_indexer()

        await self._store._call(run)
        self._seen_mtimes[handle.id] = (mtimes, walked_at)

    async def _own(self, handles: Sequence[MailboxHandle], op: Awaitable[T]) -> T:
        """Run one of our own changes to these mailboxes' folders.  A folder that was in
        step with the index before stays so afterwards (its new mtime is recorded), so the
        next SELECT does not walk it again for a change we made ourselves.  Another
        program writing at the same moment is missed until the folder changes again —
        the same window Dovecot's Maildir "dirty sync" has."""
        clean = [h for h in handles if self._clean(h, self._dir_mtimes(h))]
        try:
            return await op
        finally:
            now = time.time_ns()
            for h in clean:
                after = self._dir_mtimes(h)
                if after is not None:
                    # Recorded as walked "now", settled once the tick has passed.
                    self._seen_mtimes[h.id] = (after, max(now, max(after) + _MTIME_SETTLE_NS + 1))

    # ------------------------------------------------------------------ selected state

    async def snapshot(self, handle: MailboxHandle, *, rescan: bool = True) -> Snapshot:
        if rescan:
            await self.rescan_if_changed(handle)
        return await self._read(lambda conn: messageops.snapshot(conn, handle))

    async def first_unseen(self, handle: MailboxHandle) -> int | None:
        return await self._read(lambda conn: messageops.first_unseen(conn, handle.id))

    async def deleted_uids(self, handle: MailboxHandle) -> list[int]:
        return await self._read(lambda conn: messageops.deleted_uids(conn, handle.id))

    async def state(self, handle: MailboxHandle) -> tuple[int, int] | None:
        """(HIGHESTMODSEQ, UIDNEXT), None when the mailbox was deleted: the cheap poll,
        one row by key, read on the loop's thread (MailStore._read_now)."""
        return self._store._read_now(lambda conn: messageops.state(conn, handle.id))

    async def states(self, ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        """`state` of many mailboxes in one read: the IDLE watcher's poll."""
        wanted = list(ids)
        return await self._read(lambda conn: messageops.states(conn, wanted))

    async def changes(self, handle: MailboxHandle, since: int) -> Changes:
        return await self._read(lambda conn: messageops.changes(conn, handle.id, since))

    async def message_data(self, handle: MailboxHandle, uids: Sequence[int], *,
                           structure: bool = True) -> list[MessageData]:
        return await self._read(
            lambda conn: messageops.message_data(conn, handle.id, uids, structure=structure))

    async def search(self, handle: MailboxHandle, uids: Sequence[int],
                     queries: Sequence[search.TextQuery]) -> list[set[int]]:
        """UIDs among `uids` matching each content query (see search.py): from the
        full-text index for the messages it covers, by reading the rest."""
        if not queries or not uids:
            return [set() for _ in queries]
        root = self._mail_root

        def run(conn: sqlite3.Connection) -> list[set[int]]:
            folder = messageops.folder_of(conn, root, handle.id)
            usable = [i for i, q in enumerate(queries) if fts.usable(q)]
            if usable and fts.available(conn) and fts.rowid(handle.uidvalidity, 1):
                indexed = imapcache.indexed_uids(conn, handle.id, uids)
            else:
                usable, indexed = [], set()
            out: list[set[int]] = [set() for _ in queries]
            if usable:
                rest = [u for u in uids if u not in indexed]
                rows = messageops.message_data(conn, handle.id, rest, structure=False)
                scanned = search.scan(folder, rows, [queries[i] for i in usable])
                for i, extra in zip(usable, scanned, strict=True):
                    out[i] = (fts.match(conn, handle.uidvalidity, queries[i]) & indexed) | extra
            others = [i for i in range(len(queries)) if i not in usable]
            if others:
                rows = messageops.message_data(conn, handle.id, uids, structure=False)
                for i, found in zip(others, search.scan(folder, rows,
                                                        [queries[i] for i in others]),
                                    strict=True):
                    out[i] = found
            return out

        return await self._read(run)

    async def fast_rows(self, handle: MailboxHandle, uids: Sequence[int], *,
                        structures: bool, header: str | None, index: bool = True,
                        flags_only: bool = False) -> list[imapcache.FastRow]:
        return await self._read(lambda conn: imapcache.fast_rows(
            conn, handle.id, uids, structures=structures, header=header, index=index,
            flags_only=flags_only))

    async def cached(self, handle: MailboxHandle,
                     uids: Sequence[int]) -> dict[int, imapcache.Cached]:
        """The indexer's response cache for these messages (those it has reached)."""
        return await self._read(lambda conn: imapcache.cached(conn, handle.id, uids))

    async def message_files(self, handle: MailboxHandle, uids: Sequence[int], *,
                            structure: bool, budget: int,
                            ) -> tuple[list[MessageData], list[bytes | None] | None]:
        """Rows and, when together they are at most `budget` octets, the files' bytes (FETCH
        of one or a few bodies); else the bytes are None and the caller reads them in
        parts.  A few messages whose files are in the page cache are read right here
        (the common case: a client opening a message); the rest in one trip to the
        reader pool."""
        root = self._mail_root
        if len(uids) <= INLINE_READS:
            def now(conn: sqlite3.Connection) -> tuple[list[MessageData], Path, list[bytes | None] | None]:
                rows = messageops.message_data(conn, handle.id, uids, structure=structure)
                folder = messageops.folder_of(conn, root, handle.id)
                if sum(r.size for r in rows) > budget:
                    return rows, folder, None
                return rows, folder, messageops.read_files_cached(folder, rows)

            rows, folder, raws = self._store._read_now(now)
            if raws is None and sum(r.size for r in rows) <= budget:
                # Not in the page cache: the disk is read on a pool thread, not the loop's.
                raws = await self._read(lambda conn: messageops.read_files(folder, rows))
            return rows, raws

        def run(conn: sqlite3.Connection) -> tuple[list[MessageData], list[bytes | None] | None]:
            rows = messageops.message_data(conn, handle.id, uids, structure=structure)
            if sum(r.size for r in rows) > budget:
                return rows, None
            return rows, messageops.read_files(messageops.folder_of(conn, root, handle.id), rows)

        return await self._read(run)

    async def read_files(self, handle: MailboxHandle,
                         messages: Sequence[MessageData]) -> list[bytes | None]:
        root = self._mail_root
        return await self._read(lambda conn: messageops.read_files(
            messageops.folder_of(conn, root, handle.id), messages))

    async def structures(self, handle: MailboxHandle, messages: Sequence[MessageData],
                         bodies: Sequence[bytes | None] | None = None) -> list[dict[str, Any] | None]:
        """The parsed structure of each message: from the cache, or parsed now (and cached)
        when the row has none or an older schema.  None when the file has vanished."""
        out: list[dict[str, Any] | None] = []
        missing: list[int] = []
        for i, m in enumerate(messages):
            struct = json.loads(m.structure) if m.structure else None
            if not structure_version_ok(struct):
                missing.append(i)
                struct = None
            out.append(struct)
        if not missing:
            return out
        from kittiwake.message.structure import parse_structure

        need = [messages[i] for i in missing]
        raws = ([bodies[i] for i in missing] if bodies is not None
                else await self.read_files(handle, need))
        parsed: list[tuple[int, str]] = []

        def parse() -> None:
            for i, m, raw in zip(missing, need, raws, strict=True):
                if raw is None:
                    continue
                struct = parse_structure(raw)
                out[i] = struct
                parsed.append((m.uid, json.dumps(struct, separators=(",", ":"))))

        await asyncio.to_thread(parse)
        if parsed:
            # Cached for next time without making this FETCH wait for the committer (the
            # indexer may be keeping it busy): a background write, logged if it fails.
            self._in_background(self._write(
                lambda conn: messageops.save_structures(conn, handle.id, parsed)))
        return out

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("event=structure_cache_failed", exc_info=task.exception())

    # ------------------------------------------------------------------ changes

    async def store_flags(self, handle: MailboxHandle, uids: Sequence[int], mode: StoreMode,
                          flags: Iterable[str], unchanged_since: int | None = None) -> FlagResult:
        wanted = tuple(flags)
        return await self._own([handle], self._write(
            lambda conn: messageops.store_flags(conn, self._mail_root, handle.id, uids, mode,
                                                wanted, unchanged_since, durable=self._durable),
            handle.account))

    async def expunge(self, handle: MailboxHandle, uids: Sequence[int]) -> list[int]:
        """Remove messages by UID (files first, then rows; the index records each UID with
        its modseq for QRESYNC VANISHED)."""
        wanted = list(uids)
        return await self._own([handle], self._write(
            lambda conn: messageops.expunge(conn, self._mail_root, handle.id, wanted,
                                            durable=self._durable), handle.account))

    async def copy(self, source: MailboxHandle, uids: Sequence[int], dest: MailboxHandle, *,
                   move: bool = False) -> CopyResult:
        return await self._own([source, dest], self._write(
            lambda conn: messageops.transfer(conn, self._mail_root, source.id, uids, dest,
                                             move=move, names=self._names,
                                             durable=self._durable,
                                             default_quota=self.default_quota),
            source.account, dest.account))

    async def append(self, account: str, mailbox: str, content: bytes, *,
                     flags: Iterable[str] = (), internaldate: float | None = None) -> AppendResult:
        """APPEND through the delivery path (group commit, structure cached on the way)."""
        handle = await self.mailbox(account, mailbox)
        if not (await self.quota(account)).allows(len(content)):
            raise OverQuota("message would exceed the quota")
        delivered = await self._own([handle], self._store.deliver(
            account, content, mailbox=handle.name, flags=frozenset(flags),
            internaldate=internaldate))
        return AppendResult(handle.uidvalidity, delivered.uid)


__all__ = ["ImapStore", "NotFound"]
