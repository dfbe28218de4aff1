"""The store's IMAP face: `MailStore.imap`, an `ImapStore` of async operations.

Everything IMAP needs from the store goes through here (DESIGN.md: nothing above the store
touches files or SQL).  Writes run as Calls on the committer thread, serialised with
deliveries and rescans; reads run on the reader pool.  After each write the account is
published on the `ChangeNotifier`, so other sessions in this process wake at once (IMAP
IDLE, RFC 2177); sessions also poll `state()` so changes from other processes are seen.

Quota (RFC 9208): the account's `quota_bytes` (0 = unlimited) against its `used_bytes`, which
every transaction that adds or removes rows keeps current.  APPEND and COPY are refused
with `OverQuota`; `quota_exceeded(account, size)` is the check the SMTP backend makes before
accepting a message (452 4.2.2, RFC 3463).  Concurrent APPENDs can overshoot by at most one
message each: the check and the delivery are separate steps, as in Dovecot.

Walk-in: a SELECT or STATUS first reconciles the mailbox with its Maildir when its new/ or
cur/ directory changed since the last look (mtime), so files copied in by another program
get UIDs without a restart, at the cost of two stat() calls when nothing changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kittiwake.store import mailboxops, maildir, messageops, search
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
from kittiwake.store.models import DeliveredMessage
from kittiwake.store.notify import ChangeNotifier, Subscription
from kittiwake.store.rescan import reconcile

if TYPE_CHECKING:
    from kittiwake.store.mailstore import MailStore

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A directory whose mtime is this recent may still change within the same timestamp
#: tick, so its mtime is not trusted to mean "nothing new" next time.
_MTIME_SETTLE_NS = 2_000_000_000


def structure_version_ok(struct: object) -> bool:
    from kittiwake.message.structure import SCHEMA_VERSION

    return isinstance(struct, dict) and struct.get("v") == SCHEMA_VERSION


class ImapStore:
    def __init__(self, store: MailStore) -> None:
        self._store = store
        self.notifier = ChangeNotifier()
        self._names = messageops.CopyNames(store.settings.hostname)
        self._seen_mtimes: dict[int, tuple[int, int]] = {}

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
        """Called by MailStore after deliveries: wake the recipients' sessions."""
        self.notifier.publish(m.account for m in messages)

    def subscribe(self, account: str) -> Subscription:
        return self.notifier.subscribe(fold(account))

    # ------------------------------------------------------------------ mailboxes

    async def mailbox(self, account: str, name: str) -> MailboxHandle:
        return await self._read(lambda conn: mailboxops.handle(conn, account, name))

    async def list_mailboxes(self, account: str, *, discover: bool = False) -> list[MailboxListing]:
        """LIST data; with `discover`, folders copied into the Maildir++ tree are adopted
        first (a write, so only when the caller asks: at LIST, not at every STATUS)."""
        if discover:
            await self._write(lambda conn: mailboxops.discover(conn, self._mail_root, account))
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
            uids = [m.uid for m in (await self.snapshot(inbox, rescan=False)).messages]
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

    async def quota(self, account: str) -> Quota:
        return await self._read(lambda conn: mailboxops.quota(conn, account))

    async def quota_exceeded(self, account: str, size: int) -> bool:
        """For the SMTP backend: would a message of `size` octets exceed the quota?"""
        return not (await self.quota(account)).allows(size)

    # ------------------------------------------------------------------ walk-in

    def _dir_mtimes(self, handle: MailboxHandle) -> tuple[int, int] | None:
        folder = self._folder(handle)
        try:
            return (os.stat(folder / "new").st_mtime_ns, os.stat(folder / "cur").st_mtime_ns)
        except FileNotFoundError:
            return None

    async def rescan_if_changed(self, handle: MailboxHandle) -> None:
        mtimes = await asyncio.to_thread(self._dir_mtimes, handle)
        if mtimes is None or self._seen_mtimes.get(handle.id) == mtimes:
            return
        mail_root = self._mail_root
        parser = self._store._parser

        def run(conn: sqlite3.Connection, in_flight: Callable[[], frozenset[str]]) -> None:
            row = conn.execute(
                "SELECT m.id, m.account_id, a.address, m.name FROM mailboxes m JOIN accounts a"
                " ON a.id = m.account_id WHERE m.id = ?", (handle.id,)).fetchone()
            if row is None:
                return
            ref = MailboxRef(*row)
            result = reconcile(conn, ref, ref.folder(mail_root), parser, in_flight)
            if result.added or result.removed or result.reflagged:
                self.notifier.publish([ref.account])

        await self._store._call(run)
        if time.time_ns() - max(mtimes) > _MTIME_SETTLE_NS:
            self._seen_mtimes[handle.id] = mtimes
        else:
            self._seen_mtimes.pop(handle.id, None)

    # ------------------------------------------------------------------ selected state

    async def snapshot(self, handle: MailboxHandle, *, rescan: bool = True) -> Snapshot:
        if rescan:
            await self.rescan_if_changed(handle)
        return await self._read(lambda conn: messageops.snapshot(conn, handle))

    async def state(self, handle: MailboxHandle) -> tuple[int, int] | None:
        """(HIGHESTMODSEQ, UIDNEXT), None when the mailbox was deleted: the cheap poll."""
        return await self._read(lambda conn: messageops.state(conn, handle.id))

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

    async def search(self, handle: MailboxHandle, messages: Sequence[MessageData],
                     queries: Sequence[search.TextQuery]) -> list[set[int]]:
        """UIDs among `messages` matching each content query (see search.py)."""
        if not queries or not messages:
            return [set() for _ in queries]
        folder = self._folder(handle)
        return await self._read(lambda _conn: search.scan(folder, messages, queries))

    def _folder(self, handle: MailboxHandle) -> Path:
        return maildir.folder_dir(account_dir(self._mail_root, handle.account), handle.name)

    async def read_files(self, handle: MailboxHandle,
                         messages: Sequence[MessageData]) -> list[bytes | None]:
        folder = self._folder(handle)
        return await self._read(lambda _conn: messageops.read_files(folder, messages))

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
            await self._write(lambda conn: messageops.save_structures(conn, handle.id, parsed))
        return out

    # ------------------------------------------------------------------ changes

    async def store_flags(self, handle: MailboxHandle, uids: Sequence[int], mode: StoreMode,
                          flags: Iterable[str], unchanged_since: int | None = None) -> FlagResult:
        wanted = tuple(flags)
        return await self._write(
            lambda conn: messageops.store_flags(conn, self._mail_root, handle.id, uids, mode,
                                                wanted, unchanged_since, durable=self._durable),
            handle.account)

    async def expunge(self, handle: MailboxHandle, uids: Sequence[int]) -> list[int]:
        """Remove messages by UID (the store's shared expunge: files first, then rows; the
        index records each UID with its modseq for QRESYNC VANISHED)."""
        removed = await self._store.expunge(handle.account, handle.name, uids)
        self.notifier.publish([handle.account])
        return removed

    async def copy(self, source: MailboxHandle, uids: Sequence[int], dest: MailboxHandle, *,
                   move: bool = False) -> CopyResult:
        return await self._write(
            lambda conn: messageops.transfer(conn, self._mail_root, source.id, uids, dest,
                                             move=move, names=self._names,
                                             durable=self._durable),
            source.account, dest.account)

    async def append(self, account: str, mailbox: str, content: bytes, *,
                     flags: Iterable[str] = (), internaldate: float | None = None) -> AppendResult:
        """APPEND through the delivery path (group commit, structure cached on the way)."""
        handle = await self.mailbox(account, mailbox)
        if not (await self.quota(account)).allows(len(content)):
            raise OverQuota("message would exceed the quota")
        delivered = await self._store.deliver(account, content, mailbox=handle.name,
                                              flags=frozenset(flags), internaldate=internaldate)
        return AppendResult(handle.uidvalidity, delivered.uid)


__all__ = ["ImapStore", "NotFound"]
