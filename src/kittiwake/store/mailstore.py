"""The mail store: async delivery and reading over Maildir++ files and the SQLite index.

This is the store's face to the rest of Kittiwake (DESIGN.md: "the store is an interface";
nothing above it touches files or SQL).  Deliveries go to the group-commit writer thread
(see writer.py for the durability contract); reads run on a small pool with one read-only
connection per thread, which WAL lets proceed while the writer commits.  The event loop
never waits on a disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from kittiwake.store import db, maildir, pop3ops
from kittiwake.store.addresses import fold
from kittiwake.store.errors import NotFound, StoreClosed
from kittiwake.store.imapstore import ImapStore
from kittiwake.store.index import MailboxRef, canonical_name, find_mailbox
from kittiwake.store.models import (
    DeliveredMessage,
    DeliveryRequest,
    MailboxInfo,
    MailboxStatus,
    MessageRow,
    RescanResult,
    StoreSettings,
    StoreStats,
)
from kittiwake.store.rescan import reconcile, startup_sweep
from kittiwake.store.structure import StructureParser, default_parser
from kittiwake.store.writer import Call, Group, Writer

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_THREADS = 4


class MailStore:
    def __init__(
        self, settings: StoreSettings, *, parse_structure: StructureParser | None = None
    ) -> None:
        """`parse_structure` overrides `kittiwake.message.structure.parse_structure` (tests)."""
        self.settings = settings
        self._parser_override = parse_structure
        self._parser: StructureParser | None = None
        self._writer: Writer | None = None
        self._stats_source: Writer | None = None  # kept after close() for final numbers
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_conns = db.ThreadConnections(settings.db_path, durable=settings.fsync)
        self._imap: ImapStore | None = None

    @property
    def imap(self) -> ImapStore:
        """The IMAP operations (mailboxes, flags, copy/move, changes): imapstore.py."""
        if self._imap is None:
            self._imap = ImapStore(self)
        return self._imap

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the database, start the writer, and recover: stale tmp/ files are removed and
        every mailbox is reconciled with its files, so mail durable on disk but not yet in the
        index when we last stopped (a crash between rename and commit) gets its UID now."""
        if self._writer is not None:
            return
        parser = self._parser = self._parser_override or default_parser()
        if parser is None:
            log.warning("MIME structure parser unavailable; index will not cache structure")
        mail_root = self.settings.mail_root
        await asyncio.to_thread(mail_root.mkdir, mode=0o700, parents=True, exist_ok=True)
        writer = Writer(self.settings, parser)
        await asyncio.wrap_future(writer.start())
        self._writer = writer
        self._readers = concurrent.futures.ThreadPoolExecutor(
            READ_THREADS, thread_name_prefix="kittiwake-store-read"
        )
        self._stats_source = writer
        try:
            swept = await self._call(
                lambda conn, in_flight: startup_sweep(conn, mail_root, parser, in_flight)
            )
        except BaseException:
            await self.close()  # a half-started store must not keep threads alive
            raise
        log.info(
            "store started data_dir=%s walked_in=%d dropped=%d reflagged=%d",
            self.settings.data_dir,
            swept.added,
            swept.removed,
            swept.reflagged,
        )

    async def close(self) -> None:
        """Finish queued deliveries, then release threads and connections."""
        writer, readers = self._writer, self._readers
        self._writer = self._readers = None
        if writer is not None:
            await asyncio.to_thread(writer.stop)
        if readers is not None:
            await asyncio.to_thread(readers.shutdown, True)
        self._reader_conns.close_all()

    async def __aenter__(self) -> MailStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def stats(self) -> StoreStats:
        source = self._stats_source
        return source.stats if source is not None else StoreStats()

    # ------------------------------------------------------------------ delivery

    async def deliver(
        self,
        account: str,
        content: bytes,
        *,
        mailbox: str = maildir.INBOX,
        flags: frozenset[str] = frozenset(),
        internaldate: float | None = None,
    ) -> DeliveredMessage:
        """Store one message for one local account; returns once it is durable and indexed.
        `content` is kept byte for byte (CRLF line endings as received)."""
        request = DeliveryRequest(account, content, mailbox, flags, internaldate)
        (delivered,) = await self.deliver_many([request])
        return delivered

    async def deliver_many(self, items: Sequence[DeliveryRequest]) -> list[DeliveredMessage]:
        """Deliver several messages (typically one message to several recipients) as one
        unit: all are durable and indexed before this returns, or none is kept and the
        exception is raised."""
        if not items:
            return []
        for item in items:
            fold(item.account)  # fail fast on the caller's bad input, before any disk work
        group = Group.of(list(items), asyncio.get_running_loop())
        self._require_writer().submit(group)
        delivered = await group.future
        if self._imap is not None:  # wake IMAP sessions waiting in IDLE (RFC 2177)
            self._imap.delivered(delivered)
        return delivered

    async def rescan(self, account: str, mailbox: str = maildir.INBOX) -> RescanResult:
        """Reconcile one mailbox with its Maildir (walk-in of foreign files, vanished files,
        flags changed by other Maildir readers)."""
        mail_root, parser = self.settings.mail_root, self._parser

        def run(conn: sqlite3.Connection, in_flight: Callable[[], frozenset[str]]) -> RescanResult:
            ref = find_mailbox(conn, account, mailbox)
            if ref is None:
                raise NotFound(f"no mailbox {mailbox!r} for {account}")
            return reconcile(conn, ref, ref.folder(mail_root), parser, in_flight)

        result: RescanResult = await self._call(run)
        return result

    def _require_writer(self) -> Writer:
        if self._writer is None:
            raise StoreClosed("mail store is not started")
        return self._writer

    async def _call(self, fn: Callable[[sqlite3.Connection, Callable[[], frozenset[str]]], T]) -> T:
        call = Call(fn, asyncio.get_running_loop())
        self._require_writer().submit(call)
        result: T = await call.future
        return result

    # ------------------------------------------------------------------ reading

    async def mailboxes(self, account: str) -> list[MailboxInfo]:
        def run(conn: sqlite3.Connection) -> list[MailboxInfo]:
            rows = conn.execute(
                "SELECT m.name, m.special_use, m.subscribed FROM mailboxes m JOIN accounts a"
                " ON a.id = m.account_id WHERE a.address = ? ORDER BY m.name != 'INBOX', m.name",
                (fold(account),),
            ).fetchall()
            if not rows:
                raise NotFound(f"no account {account}")
            return [MailboxInfo(name, special, bool(sub)) for name, special, sub in rows]

        return await self._read(run)

    async def mailbox_status(self, account: str, mailbox: str = maildir.INBOX) -> MailboxStatus:
        def run(conn: sqlite3.Connection) -> MailboxStatus:
            ref = self._mailbox(conn, account, mailbox)
            row = conn.execute(
                "SELECT (SELECT COUNT(*) FROM messages WHERE mailbox_id = m.id), m.uidnext,"
                " m.uidvalidity, m.highestmodseq FROM mailboxes m WHERE m.id = ?",
                (ref.id,),
            ).fetchone()
            return MailboxStatus(*row)

        return await self._read(run)

    async def list_messages(self, account: str, mailbox: str = maildir.INBOX) -> list[MessageRow]:
        def run(conn: sqlite3.Connection) -> list[MessageRow]:
            ref = self._mailbox(conn, account, mailbox)
            return [
                MessageRow(uid, name, maildir.parse_flags(flags), size, date, modseq)
                for uid, name, flags, size, date, modseq in conn.execute(
                    "SELECT uid, filename, flags, size, internaldate, modseq FROM messages"
                    " WHERE mailbox_id = ? ORDER BY uid",
                    (ref.id,),
                )
            ]

        return await self._read(run)

    async def read_message(self, account: str, mailbox: str, uid: int) -> bytes:
        """The message's bytes exactly as stored."""
        mail_root = self.settings.mail_root

        def run(conn: sqlite3.Connection) -> bytes:
            ref = self._mailbox(conn, account, mailbox)
            row = conn.execute(
                "SELECT filename, flags FROM messages WHERE mailbox_id = ? AND uid = ?",
                (ref.id, uid),
            ).fetchone()
            if row is None:
                raise NotFound(f"no message uid={uid} in {mailbox!r} for {account}")
            path = maildir.locate(ref.folder(mail_root), row[0], maildir.parse_flags(row[1]))
            if path is None:
                raise NotFound(f"file of uid={uid} vanished (rescan will drop it)")
            return path.read_bytes()

        return await self._read(run)

    # ------------------------------------------------------------------ POP3 (pop3ops.py)

    async def maildrop(self, account: str, mailbox: str = maildir.INBOX) -> pop3ops.Maildrop:
        """UIDVALIDITY and messages of a mailbox from one read: a POP3 maildrop at login."""
        return await self._read(lambda conn: pop3ops.snapshot(conn, account, mailbox))

    async def lock_maildrop(self, account: str) -> pop3ops.MaildropLock | None:
        """The account's exclusive POP3 lock, or None when another session (in any process
        on this host) holds it."""
        return await asyncio.to_thread(pop3ops.lock_maildrop, self.settings.mail_root, account)

    async def expunge(self, account: str, mailbox: str, uids: Sequence[int]) -> list[int]:
        """Durably remove messages by UID (files unlinked, directories fsynced, rows
        deleted, MODSEQ raised); returns the UIDs that were still there to remove. Runs on
        the committer thread, so it never interleaves with a commit or a rescan here."""
        mail_root, durable = self.settings.mail_root, self.settings.fsync
        wanted = list(uids)

        def run(conn: sqlite3.Connection, _in_flight: Callable[[], frozenset[str]]) -> list[int]:
            return pop3ops.expunge(conn, mail_root, account, mailbox, wanted, durable=durable)

        removed: list[int] = await self._call(run)
        return removed

    @staticmethod
    def _mailbox(conn: sqlite3.Connection, account: str, mailbox: str) -> MailboxRef:
        ref = find_mailbox(conn, account, mailbox)
        if ref is None:
            raise NotFound(f"no mailbox {canonical_name(mailbox)!r} for {account}")
        return ref

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            raise StoreClosed("mail store is not started")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, functools.partial(self._with_conn, fn))

    def _with_conn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._reader_conns.get())

    def _read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read on the calling thread (the event loop's), with that thread's own
        connection.  Only for lookups by key on a hot index, which take a few
        microseconds: the hop to the reader pool and back costs more (~130 µs on a small
        VM), and a session's NOOP or one-message FETCH would mostly be that hop.  WAL
        readers never wait for the writer."""
        if self._readers is None:
            raise StoreClosed("mail store is not started")
        return fn(self._reader_conns.get())
