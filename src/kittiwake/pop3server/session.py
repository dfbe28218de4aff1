"""One POP3 connection: bytes between the transport and the sans-IO core, and the store.

Like the SMTP session this is an ``asyncio.Protocol``, so an idle connection costs a few
small objects; a task exists only while a login, a RETR/TOP read, the QUIT-time deletion or
a TLS handshake is under way, and reading is paused meanwhile so a pipelining client
(RFC 2449 §6.6) cannot make us buffer without bound. Writing honours the transport's flow
control, so a client that pipelines RETR for every message but reads slowly holds at most
one message in our buffers.

Semantics (RFC 1939): the maildrop is the INBOX as listed at login and locked against other
POP3 sessions ([IN-USE], RFC 2449 §8.1.1); deletions reach the store only in the UPDATE
state after QUIT. A dropped connection, an autologout or a shutdown deletes nothing (§6).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from kittiwake import sasl
from kittiwake.pop3 import events as ev
from kittiwake.pop3 import replies as R
from kittiwake.pop3.events import MaildropEntry
from kittiwake.pop3.replies import Reply
from kittiwake.pop3.server import ServerConnection
from kittiwake.store.errors import NotFound
from kittiwake.tlsconfig import describe

if TYPE_CHECKING:
    from kittiwake.pop3server.server import Listener, MaildropLease

log = logging.getLogger(__name__)

INBOX = "INBOX"  # RFC 1939 §1: POP3 serves the maildrop, which is the IMAP INBOX


class Session(asyncio.Protocol):
    __slots__ = (
        "_closing", "_drained", "_listener", "_lock", "_mechanism",
        "_retrieved", "_sasl_final", "_sasl_user", "_started", "_task", "cid", "conn",
        "deleted", "last_activity", "peer_ip", "tls_version", "transport", "updating",
    )

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection | None = None
        self.cid = "-"
        self.peer_ip = "?"
        self.tls_version: str | None = None
        self.updating = False
        self.deleted = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._drained: asyncio.Future[None] | None = None  # set while writing is paused
        self._lock: MaildropLease | None = None
        self._mechanism: sasl.Mechanism | None = None
        self._sasl_final = False
        self._sasl_user: str | None = None
        self._retrieved = 0
        self._started = time.monotonic()
        self.last_activity = self._started

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        lst = self._listener
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer_ip = str(peer[0])
        self.cid = lst.server.next_cid()
        implicit = lst.tls == "implicit"
        conn = ServerConnection(lst.core_settings(tls_active=implicit), tls_active=implicit)
        refusal = lst.server.admit(self, self.peer_ip)
        if refusal is not None:
            self._closing = True
            transport.write(conn.abort(refusal))
            transport.close()
            log.info("event=refused cid=%s peer=%s", self.cid, self.peer_ip)
            return
        self.conn = conn
        if implicit:
            self.tls_version = describe(transport.get_extra_info("ssl_object"))[0]
        transport.write(conn.greeting())

    def data_received(self, data: bytes) -> None:
        if self.conn is None or self._closing:
            return
        self.last_activity = time.monotonic()
        self.conn.receive_data(data)
        self._pump()

    def eof_received(self) -> bool | None:
        if self.conn is not None and not self._closing:
            self.conn.receive_data(b"")
            self._pump()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._wake_writer()
        task = self._task
        if task is not None and not task.done():
            if not self.updating:
                task.cancel()  # RFC 1939 §6: no UPDATE unless the client said QUIT
        else:
            self._release_lock()
        conn = self.conn
        if conn is not None:
            self._listener.server.release(self, self.peer_ip)
            log.info(
                "event=session cid=%s peer=%s tls=%s user=%s retrieved=%d deleted=%d "
                "errors=%d duration=%.3f",
                self.cid, self.peer_ip, self.tls_version or "-", conn.authenticated_as or "-",
                self._retrieved, self.deleted, conn.error_count,
                time.monotonic() - self._started,
            )

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self.last_activity = time.monotonic()
        self._wake_writer()
        if self._task is None and not self._closing and self.transport is not None:
            self.transport.resume_reading()  # _pump paused it for the client to catch up
            self._pump()

    def _wake_writer(self) -> None:
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- control from the server ----------------------------------------------------------
    @property
    def sweepable(self) -> bool:
        """Subject to the idle timeout: waiting for the client, or stalled on it."""
        return not self.updating and (self._task is None or self._drained is not None)

    def close(self, reply: Reply | None = None) -> None:
        """Say `reply` (if any) and close; used by the autologout and shutdown."""
        if self._closing:
            return
        if reply is not None and self.conn is not None and self.transport is not None:
            self.transport.write(self.conn.abort(reply))
        self._closing = True
        if self._task is None:
            # Now, not at connection_lost: closing TLS waits for the peer's close_notify,
            # and a client that never sends one must not keep the maildrop locked.
            self._release_lock()
        if self.transport is not None:
            self.transport.close()

    # --- driving the core -----------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self._closing:
            self.transport.write(data)

    def _pump(self) -> None:
        conn = self.conn
        if conn is None or self._task is not None or self._closing:
            return
        while not self._closing:
            event = conn.next_event()
            if event is None:
                break
            if isinstance(event, ev.Output):
                self._write(event.data)
                if self._drained is not None and not conn.closed:
                    # The client is not reading what it asked for (pipelined LISTs, say):
                    # parse nothing more until resume_writing, so buffers stay bounded.
                    if self.transport is not None:
                        self.transport.pause_reading()
                    return
                continue
            if isinstance(event, ev.ConnectionClosed):
                break
            # Needs I/O: answer it in a task and read nothing more until it is done.
            if self.transport is not None:
                self.transport.pause_reading()
            self._task = asyncio.get_running_loop().create_task(self._handle(event))
            return
        if conn.closed:
            self.close()

    async def _handle(self, event: ev.Event) -> None:
        conn = self.conn
        assert conn is not None
        try:
            self._write(await self._answer(event))
            if self._drained is not None:
                await self._drained  # flow control: the client reads before we go on
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=error cid=%s", self.cid)
            if not self._closing and conn.awaiting_reply:
                failure = R.UPDATE_FAILED if isinstance(event, ev.Update) else R.TEMP_FAILURE
                self._write(conn.send(failure))
        finally:
            self._task = None
            self.updating = False
            if self._closing:
                self._release_lock()
            else:
                self.last_activity = time.monotonic()
                if self.transport is not None:
                    self.transport.resume_reading()
                self._pump()
            self._listener.server.session_idle()

    async def _answer(self, event: ev.Event) -> bytes:
        conn = self.conn
        assert conn is not None
        if isinstance(event, ev.Login):
            return await self._login(event.user, event.password)
        if isinstance(event, ev.AuthStart | ev.AuthResponse):
            return await self._sasl(event)
        if isinstance(event, ev.Retrieve):
            return await self._retrieve(event)
        if isinstance(event, ev.Update):
            return await self._update(event)
        if isinstance(event, ev.StartTls):
            await self._start_tls()
            return b""
        raise AssertionError(f"unexpected event {event!r}")

    # --- authentication -------------------------------------------------------------------
    async def _login(self, user: str, password: str) -> bytes:
        """USER/PASS (RFC 1939 §7); the argon2 check runs in a thread."""
        conn = self.conn
        server = self._listener.server
        assert conn is not None
        if not server.throttle.check(self.peer_ip, user, time.monotonic()):
            log.info("event=auth_throttled cid=%s peer=%s", self.cid, self.peer_ip)
            return conn.send(R.THROTTLED)
        if not await asyncio.to_thread(server.credentials.verify_password, user, password):
            return await self._failed(user, "USER", "invalid credentials")
        return await self._open(user)

    async def _sasl(self, event: ev.AuthStart | ev.AuthResponse) -> bytes:
        """One step of an RFC 5034 exchange with the shared SASL mechanisms."""
        conn = self.conn
        server = self._listener.server
        assert conn is not None
        if isinstance(event, ev.AuthStart):
            if not server.throttle.check(self.peer_ip, None, time.monotonic()):
                log.info("event=auth_throttled cid=%s peer=%s", self.cid, self.peer_ip)
                return conn.send(R.THROTTLED)
            self._mechanism = sasl.new_mechanism(
                event.mechanism, server.credentials, settings=server.sasl_settings)
            self._sasl_final = False
            if self._mechanism is None:
                return conn.send(R.UNKNOWN_MECHANISM)
            data = event.initial
        else:
            data = event.data
            if self._sasl_final:
                # RFC 4422 §5: the success data went out as a challenge; the client
                # acknowledges it with an empty response.
                user, self._sasl_user, self._sasl_final = self._sasl_user, None, False
                if data or user is None:
                    return conn.send(R.AUTH_CANCELLED)
                return await self._open(user)
        mechanism = self._mechanism
        if mechanism is None:
            return conn.send(R.AUTH_CANCELLED)
        step = await asyncio.to_thread(mechanism.step, data)
        if isinstance(step, sasl.Challenge):
            return conn.send_challenge(step.data)
        self._mechanism = None
        if isinstance(step, sasl.Failure):
            return await self._failed(step.username, mechanism.name, step.reason)
        if step.final_data:
            self._sasl_final = True
            self._sasl_user = step.authcid
            return conn.send_challenge(step.final_data)
        return await self._open(step.authcid)

    async def _failed(self, user: str | None, mechanism: str, reason: str) -> bytes:
        conn = self.conn
        assert conn is not None
        delay = self._listener.server.throttle.record_failure(
            self.peer_ip, user, time.monotonic())
        log.info('event=auth_failed cid=%s peer=%s user=%s mechanism=%s reason="%s" '
                 "delay=%.1f", self.cid, self.peer_ip, user or "-", mechanism, reason, delay)
        await asyncio.sleep(delay)  # slows guessing; the reading side is paused meanwhile
        return conn.send(R.AUTH_FAILED)

    async def _open(self, user: str) -> bytes:
        """Lock the maildrop and list it (RFC 1939 §4: the TRANSACTION state begins)."""
        conn = self.conn
        server = self._listener.server
        assert conn is not None
        server.throttle.record_success(self.peer_ip, user, time.monotonic())
        try:
            lock = await server.store.lock_maildrop(user)
        except NotFound:
            log.warning("event=no_maildrop cid=%s user=%s", self.cid, user)
            return conn.send(R.TEMP_FAILURE)
        if lock is None:
            log.info("event=in_use cid=%s peer=%s user=%s", self.cid, self.peer_ip, user)
            return conn.send(R.IN_USE)
        try:
            drop = await server.store.maildrop(user, INBOX)
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        if self._closing:
            self._release_lock()
        # RFC 1939 §7: the unique-id is stable across sessions; UIDVALIDITY.UID is, for as
        # long as IMAP's own identity of the message holds (RFC 9051 §2.3.1.1).
        entries = [MaildropEntry(m.uid, m.size, f"{drop.uidvalidity}.{m.uid}")
                   for m in drop.messages]
        log.info("event=auth cid=%s peer=%s user=%s messages=%d", self.cid, self.peer_ip, user,
                 len(entries))
        return conn.accept_login(user, entries)

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    # --- the maildrop ---------------------------------------------------------------------
    async def _retrieve(self, event: ev.Retrieve) -> bytes:
        conn = self.conn
        assert conn is not None and conn.authenticated_as is not None
        try:
            message = await self._listener.server.store.read_message(
                conn.authenticated_as, INBOX, event.entry.uid)
        except NotFound:
            # Expunged by an IMAP session since our login: say so rather than fail hard.
            return conn.send(R.MESSAGE_GONE)
        self._retrieved += 1
        return conn.send_message(message)

    async def _update(self, event: ev.Update) -> bytes:
        """RFC 1939 §6: remove the messages marked as deleted, then sign off. Not cancelled
        when the client goes away meanwhile: it did say QUIT."""
        conn = self.conn
        assert conn is not None and conn.authenticated_as is not None
        self.updating = True
        if event.deleted:
            removed = await self._listener.server.store.expunge(
                conn.authenticated_as, INBOX, list(event.deleted))
            self.deleted = len(removed)
        return conn.send(R.BYE)

    async def _start_tls(self) -> None:
        conn = self.conn
        server = self._listener.server
        assert conn is not None and self.transport is not None
        if server.ssl_context is None:
            self._write(conn.send(R.TLS_NOT_AVAILABLE))
            return
        self._write(conn.send(R.BEGIN_TLS))
        # Tell the core now, not after the handshake: once start_tls() is called, every
        # byte reaching data_received has come through TLS, and a client's first command
        # can arrive before this coroutine resumes. The core has already discarded what
        # was pipelined in clear text (RFC 2595 §4); reading stays paused for it meanwhile
        # because this task is running.
        conn.tls_started()
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self.transport, self, server.ssl_context, server_side=True,
                ssl_handshake_timeout=server.settings.tls_handshake_timeout)
        except (OSError, TimeoutError, ConnectionError) as e:
            log.info("event=tls_failed cid=%s error=%s", self.cid, type(e).__name__)
            self.close()
            return
        if transport is None:
            self.close()
            return
        self.transport = transport
        self.tls_version = describe(transport.get_extra_info("ssl_object"))[0]
