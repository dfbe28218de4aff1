"""One IMAP connection: octets between the transport and the sans-IO core, commands to
their handlers, and the selected mailbox's updates to the client.

A Session is an `asyncio.Protocol` (as in smtpserver: an idle connection costs a few small
objects, not a task).  Each command runs in a task; reading pauses while it runs if the
client pipelines a lot, so a client cannot make us buffer without bound.  IDLE and
AUTHENTICATE need input while they run: the core reports DONE and SASL responses as events,
which `_pump` hands to the running handler through `next_input`.

Output is collected and written in large chunks (`send` then `flush`), compressed when
COMPRESS=DEFLATE is active (RFC 4978: raw deflate, one sync flush per chunk so the client
can always decode what it has), with write flow control so FETCH of a large mailbox to a
slow client cannot fill memory.

Updates from other sessions are delivered by `sync` at the end of each command — EXPUNGE
only where RFC 9051 §7.5.1 allows it (see selected.py) — and continuously during IDLE.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import deque
from typing import TYPE_CHECKING, cast

from kittiwake.imap import commands as c
from kittiwake.imap.connection import ServerConnection
from kittiwake.imap.events import (
    AuthenticateResponse,
    ConnectionClosed,
    IdleDone,
    ParseError,
    SendContinuation,
)
from kittiwake.imap.response import (
    UNAVAILABLE,
    Response,
    Status,
    Tagged,
    Untagged,
    capability,
)
from kittiwake.imapserver import capabilities
from kittiwake.imapserver.dispatch import handle
from kittiwake.imapserver.selected import SelectedMailbox
from kittiwake.store.errors import NotFound
from kittiwake.store.imapstore import ImapStore
from kittiwake.store.notify import Subscription
from kittiwake.tlsconfig import describe

if TYPE_CHECKING:
    from kittiwake.imapserver.server import ImapServer, ImapServerSettings, Listener

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024  # output is written once this much is collected
_PAUSE_INPUT = 256 * 1024  # stop reading while a command runs and this much is buffered
InputEvent = IdleDone | AuthenticateResponse | ParseError


class Session(asyncio.Protocol):
    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.server: ImapServer = listener.server
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection | None = None
        self.cid = "-"
        self.peer_ip = "?"
        self.account: str | None = None
        self.selected: SelectedMailbox | None = None
        self.condstore = False  # RFC 7162 §3.1: a CONDSTORE-enabling command was seen
        self.saved: list[int] = []  # RFC 5182 SEARCH RETURN (SAVE) result, as UIDs
        self.tls_version: str | None = None
        self.idling = False
        self.last_activity = time.monotonic()
        self._started = self.last_activity
        self._out: list[bytes] = []
        self._out_size = 0
        self._deflate: zlib._Compress | None = None
        self._inflate: zlib._Decompress | None = None
        self._task: asyncio.Task[None] | None = None
        self._inbox: deque[InputEvent] = deque()
        self._input_waiter: asyncio.Future[None] | None = None
        self._sub: Subscription | None = None
        self._last_poll = 0.0
        self._closing = False
        self._paused = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._commands = 0

    # --- what handlers use ------------------------------------------------------------------
    @property
    def settings(self) -> ImapServerSettings:
        return self.server.settings

    @property
    def store(self) -> ImapStore:
        return self.server.store

    @property
    def utf8(self) -> bool:
        return self.conn is not None and self.conn.utf8

    @property
    def qresync(self) -> bool:
        return self.conn is not None and "QRESYNC" in self.conn.enabled

    @property
    def selected_id(self) -> int | None:
        return self.selected.handle.id if self.selected is not None else None

    def view_state(self) -> tuple[int, int] | None:
        v = self.selected
        return (v.known_modseq, v.uidnext) if v is not None else None

    @property
    def busy(self) -> bool:
        return self._task is not None and not self.idling

    @property
    def timeout(self) -> float:
        s = self.settings
        if self.account is None:
            return s.login_timeout
        if self.idling:
            return s.idle_timeout
        return s.autologout

    def capabilities(self) -> list[str]:
        assert self.conn is not None
        starttls = self.listener.tls == "starttls" and self.server.ssl_context is not None
        return capabilities.for_session(self.server, self.conn,
                                        authenticated=self.account is not None,
                                        starttls=starttls)

    def pump_soon(self) -> None:
        """After a continuation: input that arrived with the command (a pipelined DONE) is
        read now that the core expects it."""
        asyncio.get_running_loop().call_soon(self._pump)

    def send(self, response: Response) -> None:
        assert self.conn is not None
        data = self.conn.send(response)
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= _CHUNK:
            self._write_out()

    def send_raw(self, data: bytes) -> None:
        """Octets already in IMAP syntax (untagged data built by the FETCH fast path)."""
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= _CHUNK:
            self._write_out()

    async def flush(self) -> None:
        """Write what is collected; wait while the transport's buffer is full."""
        self._write_out()
        if not self._can_write.is_set() and not self._closing:
            await self._can_write.wait()

    async def drain(self) -> None:
        """Between batches of a long response: wait while the transport's buffer is full;
        what is collected stays until it reaches a chunk (or the command ends), so a short
        response goes out with its completion in one write."""
        if self._out_size >= _CHUNK:
            self._write_out()
        if not self._can_write.is_set() and not self._closing:
            await self._can_write.wait()

    async def next_input(self) -> InputEvent:
        """The next DONE / SASL response / error line (IDLE and AUTHENTICATE)."""
        while not self._inbox:
            if self._closing:
                raise ConnectionError("connection closed")
            self._input_waiter = asyncio.get_running_loop().create_future()
            await self._input_waiter
        return self._inbox.popleft()

    def input_ready(self) -> bool:
        return bool(self._inbox)

    def authenticated(self, account: str) -> None:
        self.account = account
        self._sub = self.store.subscribe(account)
        log.info("event=login cid=%s peer=%s user=%s tls=%s", self.cid, self.peer_ip, account,
                 self.tls_version or "-")

    def wake(self) -> None:
        if self._sub is not None:
            self._sub.wake()

    def wake_clear(self) -> None:
        if self._sub is not None:
            self._sub.clear()

    async def wait_for_change(self, timeout: float) -> bool:
        assert self._sub is not None
        woke = await self._sub.wait(timeout)
        return woke

    async def sync(self, *, expunges: bool, force: bool = False) -> None:
        """Bring the selected view up to date and send what changed (RFC 9051 §7.5.1).
        Polls the index only when notified, forced, or `poll_interval` has passed."""
        view = self.selected
        if view is None or view.gone:
            if self._sub is not None:
                self._sub.clear()  # nothing to learn: do not let IDLE spin on the wake-up
            return
        view.condstore = self.condstore
        now = time.monotonic()
        sub = self._sub
        if force or (sub is not None and sub.pending) or (
                now - self._last_poll >= self.settings.poll_interval):
            if sub is not None:
                sub.clear()
            self._last_poll = now
            state = await self.store.state(view.handle)
            if state is None:  # deleted by another session: nothing sensible remains
                self.close("Selected mailbox was deleted")
                return
            if state != (view.known_modseq, view.uidnext):
                try:
                    changes = await self.store.changes(view.handle, view.known_modseq)
                except NotFound:  # deleted since the poll: as above
                    self.close("Selected mailbox was deleted")
                    return
                view.apply(changes)
        for data in view.flush(expunges_allowed=expunges, qresync=self.qresync,
                               with_uid=self.qresync):
            self.send(data)

    async def start_tls(self) -> bool:
        """After the tagged OK to STARTTLS (the core has dropped any pipelined plaintext,
        RFC 9051 §6.2.1): the handshake.  False when it failed (the session is closed)."""
        assert self.transport is not None and self.server.ssl_context is not None
        self._write_out()
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self.transport, self, self.server.ssl_context, server_side=True,
                ssl_handshake_timeout=self.settings.tls_handshake_timeout)
        except (OSError, TimeoutError, ConnectionError) as e:
            log.info("event=tls_failed cid=%s error=%s", self.cid, type(e).__name__)
            self.close(None)
            return False
        if transport is None:
            self.close(None)
            return False
        self.transport = transport
        self.tls_version = describe(transport.get_extra_info("ssl_object"))[0]
        return True

    def start_compress(self) -> None:
        """After the tagged OK to COMPRESS DEFLATE (RFC 4978 §3): everything from here on,
        both ways, is raw deflate.  Octets already received past the command were
        compressed; they are inflated and fed back."""
        assert self.conn is not None
        self._write_out()
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)
        rest = self.conn.unprocessed_data()
        if rest:
            self.conn.receive_data(self._inflate.decompress(rest))

    def close(self, text: str | None) -> None:
        """Say BYE (if `text`) and close; used by LOGOUT-less ends, timeouts, shutdown."""
        if self._closing:
            return
        if text is not None and self.conn is not None and self.transport is not None:
            self.send(Untagged(Status.BYE, text))
            self._write_out()
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer_ip = str(peer[0])
        self.cid = self.server.next_cid()
        implicit = self.listener.tls == "implicit"
        self.conn = ServerConnection(self.listener.core_settings(tls_active=implicit),
                                     tls_active=implicit)
        refusal = self.server.admit(self, self.peer_ip)
        if refusal is not None:
            self.close(refusal)
            self.conn = None
            log.info("event=refused cid=%s peer=%s reason=\"%s\"", self.cid, self.peer_ip,
                     refusal)
            return
        if implicit:
            self.tls_version = describe(transport.get_extra_info("ssl_object"))[0]
        self.send(Untagged(Status.OK, "Kittiwake IMAP4rev2 ready",
                           capability(self.capabilities())))
        self._write_out()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or self._closing:
            return
        self.last_activity = time.monotonic()
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error:
                self.close("Invalid compressed data")
                return
        conn.receive_data(data)
        self._pump()

    def eof_received(self) -> bool | None:
        if self.conn is not None and not self._closing:
            self.conn.receive_data(b"")
            self._pump()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._can_write.set()
        if self._input_waiter is not None and not self._input_waiter.done():
            self._input_waiter.set_result(None)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._sub is not None:
            self._sub.close()
        if self.conn is not None:
            self.server.release(self, self.peer_ip)
            log.info("event=session cid=%s peer=%s user=%s tls=%s commands=%d errors=%d "
                     "duration=%.3f", self.cid, self.peer_ip, self.account or "-",
                     self.tls_version or "-", self._commands, self.conn.error_count,
                     time.monotonic() - self._started)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        # The client is reading what we send: activity, for the autologout (a FETCH of a
        # big mailbox to a slow client may stream for longer than the timeout).  Only a
        # full buffer draining calls this, never a keepalive, so IDLE still times out.
        self.last_activity = time.monotonic()
        self._can_write.set()

    # --- driving the core -------------------------------------------------------------------
    def _write_out(self) -> None:
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        if self.transport is None or self.transport.is_closing():
            return
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.transport.write(data)

    def _pump(self) -> None:
        conn = self.conn
        if conn is None or self._closing:
            return
        while not self._closing:
            event = conn.next_event()
            if event is None:
                break
            if isinstance(event, SendContinuation):
                self.send_raw(event.data)
                continue
            if isinstance(event, ConnectionClosed):
                self.close(None)
                break
            if self._task is not None and isinstance(event, IdleDone | AuthenticateResponse
                                                     | ParseError):
                self._inbox.append(event)
                if self._input_waiter is not None and not self._input_waiter.done():
                    self._input_waiter.set_result(None)
                self.wake()
                continue
            if isinstance(event, ParseError):
                self.send(event.response)
                if event.fatal or conn.error_count > self.settings.max_errors:
                    if not event.fatal:
                        self.send(Untagged(Status.BYE, "Too many protocol errors"))
                    self._write_out()
                    self.close(None)
                    break
                continue
            if isinstance(event, IdleDone | AuthenticateResponse):
                continue  # cannot happen without a running command; ignore
            self._start(event)
            break
        self._write_out()
        if self._task is not None and not self._paused and conn.buffered > _PAUSE_INPUT \
                and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True

    def _start(self, command: c.Command) -> None:
        self._commands += 1
        self._task = asyncio.get_running_loop().create_task(self._run(command))

    async def _run(self, command: c.Command) -> None:
        conn = self.conn
        assert conn is not None
        try:
            tagged = await handle(self, command)
            if tagged is not None and not self._closing:
                self.send(tagged)
            await self.flush()
            if conn.closed:
                self._write_out()
                self.close(None)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=error cid=%s command=%s", self.cid, type(command).__name__)
            if not self._closing and conn.pending is command:
                self.send(Tagged(command.tag, Status.NO, "Internal error, try again later",
                                 UNAVAILABLE))
                self._write_out()
        finally:
            self._task = None
            self._inbox.clear()
            self.idling = False
            self.server.idlers.discard(self)
            if not self._closing:
                self.last_activity = time.monotonic()
                if self._paused and self.transport is not None:
                    self.transport.resume_reading()
                    self._paused = False
                asyncio.get_running_loop().call_soon(self._pump)
