"""One SMTP connection: bytes between the transport and the sans-IO core, and the Backend.

A Session is an `asyncio.Protocol`, not a coroutine: an idle connection then costs a few
small objects instead of a task with its frame, which is what lets one process hold tens of
thousands of idle clients (issue #2 target: ≤ 6 KB each). A task exists only while the
Backend is working on MAIL/RCPT/end-of-data or during a TLS handshake; reading is paused
meanwhile so a pipelining client cannot make us buffer without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from kittiwake import sasl
from kittiwake.smtp import events as ev
from kittiwake.smtp import replies as R
from kittiwake.smtp.replies import Reply, ReplyError
from kittiwake.smtp.server import ServerConnection
from kittiwake.smtpserver.backend import Envelope, SessionInfo
from kittiwake.tlsconfig import describe

if TYPE_CHECKING:
    from kittiwake.smtpserver.server import Listener

log = logging.getLogger(__name__)


class Session(asyncio.Protocol):
    __slots__ = (
        "_auth_user", "_buf", "_busy", "_closing", "_envelope", "_errors", "_greeted",
        "_in_data", "_listener", "_messages", "_sasl", "_sasl_final", "_started", "_task", "conn",
        "info", "last_activity", "transport",
    )

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection | None = None
        self.info: SessionInfo | None = None
        self._envelope = Envelope()
        self._buf = bytearray()
        self._busy = False
        self._closing = False
        self._greeted = False
        self._in_data = False
        self._task: asyncio.Task[None] | None = None
        self._sasl: sasl.Mechanism | None = None
        self._sasl_final = False
        self._auth_user: str | None = None
        self._messages = 0
        self._errors = 0
        self._started = time.monotonic()
        self.last_activity = self._started

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        lst = self._listener
        peer = transport.get_extra_info("peername") or ("?", 0)
        sock = transport.get_extra_info("sockname") or ("?", 0)
        self.info = SessionInfo(
            cid=lst.server.next_cid(), listener=lst.kind, peer_ip=str(peer[0]),
            peer_port=int(peer[1]), local_ip=str(sock[0]), local_port=int(sock[1]),
        )
        refusal = lst.server.admit(self)
        if refusal is not None:
            self._closing = True
            transport.write(refusal.to_bytes())
            transport.close()
            log.info("event=refused cid=%s peer=%s reply=%d", self.info.cid, self.info.peer_ip,
                     refusal.code)
            return
        implicit = lst.tls == "implicit"
        if implicit:
            self._note_tls(transport)
        self.conn = ServerConnection(lst.core_settings(tls_active=implicit), tls_active=implicit)
        delay = lst.server.settings.greeting_delay
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._greet)
        else:
            self._greet()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or self._closing:
            return
        self.last_activity = time.monotonic()
        conn.receive_data(data)
        if self._greeted:
            self._pump()

    def eof_received(self) -> bool | None:
        if self.conn is not None and not self._closing:
            self.conn.receive_data(b"")
            if self._greeted:
                self._pump()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.info is not None and self.conn is not None:
            self._listener.server.release(self)
            i = self.info
            log.info(
                "event=session cid=%s peer=%s helo=%s tls=%s auth=%s messages=%d errors=%d "
                "duration=%.3f",
                i.cid, i.peer_ip, i.helo or "-", i.tls_version or "-", i.authenticated_as or "-",
                self._messages, self._errors, time.monotonic() - self._started,
            )

    # --- driving the core -----------------------------------------------------------------
    def _greet(self) -> None:
        if self._closing or self.conn is None or self.transport is None:
            return
        self._greeted = True
        self.transport.write(self.conn.greeting())
        self._pump()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self._closing:
            self.transport.write(data)

    def close(self, reply: Reply | None = None) -> None:
        """Say `reply` (if any) and close; used by timeouts and shutdown too."""
        if self._closing:
            return
        if reply is not None and self.conn is not None and self.transport is not None:
            self.transport.write(reply.to_bytes())
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    @property
    def in_transaction(self) -> bool:
        return self._busy or self._in_data or self._envelope.sender is not None or bool(
            self._envelope.recipients)

    @property
    def timeout(self) -> float:
        s = self._listener.server.settings
        return s.data_timeout if self._in_data else s.command_timeout

    @property
    def busy(self) -> bool:
        return self._busy

    def _pump(self) -> None:
        conn = self.conn
        if conn is None or self._busy or self._closing:
            return
        out: list[bytes] = []
        while not self._closing:
            event = conn.next_event()
            if event is None:
                break
            if isinstance(event, ev.DataChunk):
                self._buf += event.data
                continue
            if isinstance(event, ev.BdatStart):
                self._in_data = True
                self._buf.clear()
                continue
            if isinstance(event, ev.ConnectionClosed):
                self._closing = True
                if self.transport is not None:
                    self.transport.close()
                break
            reply = self._answer_now(event)
            if reply is None:  # needs the Backend or a handshake: continue in a task
                if out:
                    self._write(b"".join(out))
                    out.clear()
                self._busy = True
                if self.transport is not None:
                    self.transport.pause_reading()
                self._task = asyncio.get_running_loop().create_task(self._answer_later(event))
                return
            out.append(conn.send(reply))
            if conn.closed:
                self._write(b"".join(out))
                out.clear()
                self._closing = True
                if self.transport is not None:
                    self.transport.close()
                return
        if out:
            self._write(b"".join(out))

    def _answer_now(self, event: ev.Event) -> Reply | None:
        """The reply for events that need no I/O; None for those that do."""
        conn = self.conn
        info = self.info
        assert conn is not None and info is not None
        if isinstance(event, ev.Helo):
            self._reset()
            info.helo = event.name
            info.esmtp = event.extended
            if event.extended:
                return conn.ehlo_reply()
            return Reply(250, "", self._listener.server.settings.core.hostname)
        if isinstance(event, ev.DataStart):
            self._in_data = True
            self._buf.clear()
            return R.START_DATA
        if isinstance(event, ev.BdatChunkEnd):
            return R.OK.with_text(f"{event.size} octets received")
        if isinstance(event, ev.Rset):
            self._reset()
            return R.RESET_OK
        if isinstance(event, ev.Noop):
            return R.NOOP_OK
        if isinstance(event, ev.Quit):
            return R.BYE
        if isinstance(event, ev.Vrfy):
            return R.CANNOT_VRFY
        if isinstance(event, ev.Help):
            return R.HELP
        if isinstance(event, ev.ProtocolError):
            self._errors += 1
            return event.reply
        if isinstance(event, ev.StartTls):
            if self._listener.server.ssl_context is None:
                return R.TLS_NOT_AVAILABLE
            return None
        if isinstance(event, ev.RcptTo):
            if len(self._envelope.recipients) >= self._listener.server.settings.max_recipients:
                return R.TOO_MANY_RECIPIENTS
            return self._envelope_step(event)
        if isinstance(event, ev.MailFrom):
            return self._envelope_step(event)
        if isinstance(event, ev.DataEnd) and event.error is not None:
            self._in_data = False
            self._log_message(None, event.error, len(self._buf))
            self._reset()
            return event.error
        if isinstance(event, ev.AuthResponse) and event.line.strip() == "*":
            self._sasl = None  # RFC 4954 §4: "*" cancels the exchange
            return R.AUTH_CANCELLED
        return None  # DataEnd, AUTH: the Backend decides, asynchronously

    async def _answer_later(self, event: ev.Event) -> None:
        conn = self.conn
        assert conn is not None
        try:
            if isinstance(event, ev.StartTls):
                await self._start_tls()
                return
            if isinstance(event, ev.Auth | ev.AuthResponse):
                reply = await self._auth(event)
            else:
                reply = await self._ask_backend(event)
            if not self._closing:
                self._write(conn.send(reply))
                if conn.closed:
                    self.close()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=error cid=%s", self.info.cid if self.info else "-")
            if not self._closing and conn.awaiting_reply:
                self._write(conn.send(R.LOCAL_ERROR))
        finally:
            self._busy = False
            self._task = None
            if not self._closing:
                self.last_activity = time.monotonic()
                if self.transport is not None:
                    self.transport.resume_reading()
                self._pump()
                self._listener.server.session_idle(self)

    def _envelope_step(self, event: ev.MailFrom | ev.RcptTo) -> Reply:
        """MAIL and RCPT: the Backend answers synchronously (directory lookups only), which
        spares a task and a pause/resume of reading for each of them."""
        backend = self._listener.backend
        info = self.info
        assert info is not None
        env = self._envelope
        try:
            if isinstance(event, ev.MailFrom):
                env.sender = event.sender
                env.mail_params = dict(event.params)
                env.smtputf8 = "SMTPUTF8" in event.params
                try:
                    backend.mail_from(info, env)
                except ReplyError as e:
                    self._reset()
                    self._log_reject("mail", str(event.sender or "<>"), e.reply)
                    return e.reply
                return R.SENDER_OK
            try:
                backend.rcpt_to(info, env, event.recipient, dict(event.params))
            except ReplyError as e:
                self._log_reject("rcpt", str(event.recipient), e.reply)
                return e.reply
            env.recipients.append(event.recipient)
            env.rcpt_params.append(dict(event.params))
            return R.RECIPIENT_OK
        except Exception:
            log.exception("event=error cid=%s", info.cid)
            if isinstance(event, ev.MailFrom):
                self._reset()
            return R.LOCAL_ERROR

    async def _ask_backend(self, event: ev.Event) -> Reply:
        backend = self._listener.backend
        info = self.info
        assert info is not None
        env = self._envelope
        if isinstance(event, ev.DataEnd):
            self._in_data = False
            content = bytes(self._buf)
            self._buf = bytearray()
            queue_id = self._listener.server.next_queue_id()
            try:
                reply = await backend.data(info, env, content, queue_id)
            except ReplyError as e:
                reply = e.reply
            except Exception:
                log.exception("event=error cid=%s queue_id=%s", info.cid, queue_id)
                reply = R.LOCAL_ERROR
            self._log_message(queue_id, reply, len(content))
            if reply.is_positive:
                self._messages += 1
            self._reset()
            return reply
        raise AssertionError(f"unexpected event {event!r}")

    async def _auth(self, event: ev.Auth | ev.AuthResponse) -> Reply:
        """One step of an RFC 4954 exchange; the SASL work runs in a thread (argon2id)."""
        info = self.info
        server = self._listener.server
        assert info is not None
        if isinstance(event, ev.Auth):
            lookup = self._listener.backend.credentials()
            if lookup is None:
                return R.NOT_IMPLEMENTED
            if not server.throttle.check(info.peer_ip, None, time.monotonic()):
                log.info("event=auth_throttled cid=%s peer=%s", info.cid, info.peer_ip)
                return R.AUTH_THROTTLED
            self._sasl = sasl.new_mechanism(event.mechanism, lookup,
                                            settings=server.sasl_settings)
            self._sasl_final = False
            if self._sasl is None:
                return R.UNKNOWN_AUTH_MECHANISM
            data = None
            if event.initial is not None:
                data = sasl.decode_response(event.initial.encode("ascii", "replace"), initial=True)
                if data is None:
                    self._sasl = None
                    return R.AUTH_BAD_BASE64
        else:
            if self._sasl is None:
                return R.BAD_SEQUENCE
            if self._sasl_final:  # RFC 4954 §4: the empty answer to SCRAM's server-final
                return self._auth_done(event.line.strip() == "")
            data = sasl.decode_response(event.line.strip().encode("ascii", "replace"))
            if data is None:
                self._sasl = None
                return R.AUTH_BAD_BASE64
        mech = self._sasl
        assert mech is not None
        step = await asyncio.to_thread(mech.step, data)
        if isinstance(step, sasl.Challenge):
            return Reply(334, "", sasl.encode_challenge(step.data).decode("ascii"))
        claimed = step.authcid if isinstance(step, sasl.Success) else step.username
        if claimed and not server.throttle.check(info.peer_ip, claimed, time.monotonic()):
            # The account is locked (too many failures, from anywhere): refused even with
            # the right password, and with the same 454 either way, so that guessing on
            # from another address learns nothing. The lock is checked only now because
            # the mechanism is what knows the user name.
            self._sasl = None
            if isinstance(step, sasl.Failure):
                server.throttle.record_failure(info.peer_ip, None, time.monotonic())
            log.info("event=auth_throttled cid=%s peer=%s user=%s mechanism=%s", info.cid,
                     info.peer_ip, claimed, mech.name)
            return R.AUTH_THROTTLED
        if isinstance(step, sasl.Success):
            self._auth_user = step.authcid
            if step.final_data:
                self._sasl_final = True
                return Reply(334, "", sasl.encode_challenge(step.final_data).decode("ascii"))
            return self._auth_done(True)
        self._sasl = None
        delay = server.throttle.record_failure(info.peer_ip, step.username, time.monotonic())
        log.info("event=auth_failed cid=%s peer=%s user=%s mechanism=%s reason=\"%s\" delay=%.1f",
                 info.cid, info.peer_ip, step.username or "-", mech.name, step.reason, delay)
        await asyncio.sleep(delay)
        return R.AUTH_FAILED

    def _auth_done(self, ok: bool) -> Reply:
        info = self.info
        assert info is not None
        self._sasl = None
        self._sasl_final = False
        user = self._auth_user
        if not ok or user is None:
            return R.AUTH_CANCELLED
        info.authenticated_as = user
        self._listener.server.throttle.record_success(info.peer_ip, user, time.monotonic())
        log.info("event=auth cid=%s peer=%s user=%s", info.cid, info.peer_ip, user)
        return R.AUTH_OK

    async def _start_tls(self) -> None:
        conn = self.conn
        server = self._listener.server
        assert conn is not None and self.transport is not None and server.ssl_context
        self._write(conn.send(R.READY_FOR_TLS))
        # Reset the core now, not after the await: the client's first command over TLS can
        # be decrypted and delivered to data_received before start_tls() returns, and a core
        # still waiting for the handshake would drop it (the client then hangs).
        conn.tls_started()
        loop = asyncio.get_running_loop()
        try:
            new_transport = await loop.start_tls(
                self.transport, self, server.ssl_context, server_side=True,
                ssl_handshake_timeout=server.settings.tls_handshake_timeout,
            )
        except (OSError, TimeoutError) as e:
            log.info("event=tls_failed cid=%s error=%s", self.info.cid if self.info else "-",
                     type(e).__name__)
            self._closing = True
            self.transport.close()
            return
        if new_transport is None:
            self._closing = True
            return
        self.transport = new_transport
        self._note_tls(new_transport)
        self._reset()

    def _note_tls(self, transport: asyncio.BaseTransport) -> None:
        assert self.info is not None
        self.info.tls_version, self.info.tls_cipher = describe(
            transport.get_extra_info("ssl_object"))
        self.info.helo = ""

    def _reset(self) -> None:
        self._envelope = Envelope()
        self._buf = bytearray()
        self._in_data = False

    # --- logging --------------------------------------------------------------------------
    def _log_reject(self, stage: str, address: str, reply: Reply) -> None:
        i = self.info
        log.info("event=reject cid=%s peer=%s stage=%s address=%s reply=\"%d %s\"",
                 i.cid if i else "-", i.peer_ip if i else "-", stage, address, reply.code,
                 reply.enhanced)

    def _log_message(self, queue_id: str | None, reply: Reply, size: int) -> None:
        i = self.info
        env = self._envelope
        log.info(
            "event=message cid=%s queue_id=%s peer=%s from=<%s> rcpts=%s size=%d tls=%s "
            "result=\"%d %s\"",
            i.cid if i else "-", queue_id or "-", i.peer_ip if i else "-",
            env.sender or "", ",".join(f"<{r}>" for r in env.recipients) or "-", size,
            (i.tls_version if i else None) or "-", reply.code, reply.enhanced,
        )
