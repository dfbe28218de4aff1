"""One outbound SMTP connection: asyncio around the sans-IO `smtp.client.ClientConnection`.

`SmtpSession.connect` reads the greeting, says EHLO (HELO when EHLO is refused, RFC 5321
§3.2), starts TLS (RFC 3207) and authenticates (RFC 4954) as the settings ask; every step
that fails raises `SessionError` with a reply saying why, and the caller moves on to the
next host. `transact` sends one message to some recipients, possibly in several
transactions, and returns a `DeliveryResult` per recipient; from then on nothing raises.

Every wait has a deadline: connect, each reply (the RFC 5321 §4.5.3.2 timeouts, per command)
and each write. A server trickling bytes cannot stretch a reply's deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable, Iterator

from kittiwake.smtp.client import (
    ClientConnection,
    Command,
    CommandKind,
    ConnectionClosed,
    Event,
    ProtocolError,
    ReadyForContent,
    ServerReply,
    TransactionDone,
    TransactionOutcome,
    mail_command,
    rcpt_command,
)
from kittiwake.smtp.replies import Reply
from kittiwake.smtpclient.prepare import PreparedMessage, PreparedRecipient
from kittiwake.smtpclient.types import ClientSettings, DeliveryResult

log = logging.getLogger(__name__)

_NETWORK_ERRORS = (OSError, EOFError, ssl.SSLError, asyncio.IncompleteReadError)


class SessionError(Exception):
    """This host cannot be used now; `reply` says why (transient for the recipients)."""

    def __init__(self, reply: Reply, *, tls_failed: bool = False) -> None:
        super().__init__(reply.lines[0])
        self.reply = reply
        self.tls_failed = tls_failed


class SmtpSession:
    def __init__(self, host: str, address: str, port: int, settings: ClientSettings) -> None:
        self.host = host
        self.address = address
        self.port = port
        self.settings = settings
        self.core = ClientConnection()
        self.tls = False
        self.messages = 0
        self.opened_at = 0.0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._dirty = False  # a transaction ran: RSET before the next one

    @property
    def peer(self) -> str:
        return f"{self.host}[{self.address}]:{self.port}"

    @property
    def usable(self) -> bool:
        return self._writer is not None and not self.core.broken and not self.core.in_transaction

    # --- opening --------------------------------------------------------------------------
    async def connect(self, *, tls: str, tls_context: ssl.SSLContext | None,
                      auth: tuple[str, str] | None = None) -> None:
        s = self.settings
        self.opened_at = asyncio.get_running_loop().time()
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.address, self.port,
                    local_addr=(s.source_address, 0) if s.source_address else None),
                s.connect_timeout)
        except TimeoutError:
            raise SessionError(Reply(451, "4.4.1", f"connect to {self.peer}: timed out")) from None
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise SessionError(Reply(451, "4.4.1", f"connect to {self.peer}: {why}")) from None
        greeting = await self._reply()
        if not 200 <= greeting.code < 300:  # RFC 5321 §3.1: 554 (or 4xx): "not here, not now"
            raise SessionError(greeting)
        await self._hello()
        if tls != "none" and tls_context is not None:
            if self.core.capabilities.starttls:
                await self._starttls(tls, tls_context)
            elif tls == "required":
                raise SessionError(Reply(451, "4.7.4",
                                         f"TLS is required, but was not offered by {self.host}"))
        if auth is not None:
            await self._authenticate(*auth)

    async def _hello(self) -> None:
        reply = await self._command(self.core.ehlo(self.settings.helo_name))
        if 200 <= reply.code < 300:
            return
        if reply.code >= 500:  # RFC 5321 §3.2: an old server refusing EHLO gets HELO
            reply = await self._command(self.core.helo(self.settings.helo_name))
            if 200 <= reply.code < 300:
                return
        raise SessionError(reply)

    async def _starttls(self, tls: str, context: ssl.SSLContext) -> None:
        reply = await self._command(self.core.starttls())
        if reply.code != 220:
            if tls == "required":
                raise SessionError(Reply(451, "4.7.4", f"{self.host} refused STARTTLS: "
                                         f"{reply.code} {reply.lines[0]}"))
            return  # opportunistic: carry on in plain text (RFC 3207 §4.1)
        assert self._writer is not None
        try:
            await asyncio.wait_for(
                self._writer.start_tls(context, server_hostname=self._tls_name(context),
                                       ssl_handshake_timeout=self.settings.tls_handshake_timeout),
                self.settings.tls_handshake_timeout + 1)
        except (TimeoutError, *_NETWORK_ERRORS) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            self._close_now()
            raise SessionError(Reply(451, "4.7.5", f"TLS handshake with {self.peer} failed: {why}"),
                               tls_failed=True) from None
        self.core.tls_started()
        self.tls = True
        await self._hello()  # RFC 3207 §4.2: capabilities must be asked for again

    def _tls_name(self, context: ssl.SSLContext) -> str | None:
        try:
            ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            return self.host  # SNI, and the name a verified certificate must carry
        return self.host.strip("[]") if context.check_hostname else None

    async def _authenticate(self, user: str, password: str) -> None:
        # Credentials never cross the wire in clear text (RFC 4954 §4 and §14).
        if not self.tls:
            raise SessionError(Reply(454, "4.7.0",
                                     f"refusing to authenticate to {self.host} without TLS"))
        mechanisms = self.core.capabilities.auth
        if "PLAIN" in mechanisms:
            out = self.core.auth_plain(user, password)
        elif "LOGIN" in mechanisms:
            out = self.core.auth_login(user, password)
        else:
            raise SessionError(Reply(454, "4.7.0", f"{self.host} offers no AUTH PLAIN or LOGIN"))
        await self._write(out)
        for _ in range(4):  # LOGIN needs two challenges; anything more is cancelled
            reply = await self._reply()
            if reply.code == 334:
                await self._write(self.core.data_to_send())
                continue
            if reply.code == 235:
                return
            raise SessionError(reply)
        raise SessionError(Reply(454, "4.7.0", f"{self.host}: AUTH did not finish"))

    # --- transactions ---------------------------------------------------------------------
    async def transact(self, msg: PreparedMessage, rcpts: list[PreparedRecipient]
                       ) -> dict[int, DeliveryResult]:
        """Deliver `msg` to `rcpts` over this connection; a result per recipient index."""
        results = await self._transact(msg, rcpts)
        return {r.index: result for r, result in results}

    async def _transact(self, msg: PreparedMessage, rcpts: list[PreparedRecipient]
                        ) -> list[tuple[PreparedRecipient, DeliveryResult]]:
        caps = self.core.capabilities
        results: list[tuple[PreparedRecipient, DeliveryResult]] = []
        utf8 = caps.smtputf8 and (msg.message.smtputf8 or not msg.sender_as_given.isascii()
                                  or any(not r.as_given.isascii() for r in rcpts))
        if not utf8 and msg.needs_smtputf8:
            # RFC 6531 §3.2: no SMTPUTF8 at the server → the message cannot go there.
            return [self._result(r, Reply(553, "5.6.7", f"{self.host} does not support "
                                          "SMTPUTF8, which this message needs")) for r in rcpts]
        sendable = []
        for r in rcpts:
            if not utf8 and r.ascii is None:
                results.append(self._result(r, Reply(553, "5.6.7", "non-ASCII recipient, but "
                                                     f"{self.host} does not support SMTPUTF8")))
            else:
                sendable.append(r)
        if not sendable:
            return results
        body, converted = None, False
        if msg.eight_bit:
            if caps.eight_bit_mime or utf8:
                body = "8BITMIME"
            elif await msg.converted() is not None:
                converted = True  # RFC 6152 §3: converted to 7 bits for this server
            else:
                return results + [self._result(r, Reply(
                    554, "5.6.3", f"{self.host} does not support 8BITMIME and the message "
                    "cannot be converted to 7 bits")) for r in sendable]
        size = len(await msg.converted() or b"") if converted else msg.size
        if caps.size and size > caps.size:  # RFC 1870 §6.1: do not send what will be refused
            return results + [self._result(r, Reply(
                552, "5.3.4", f"message size {size} exceeds the limit of {self.host} "
                f"({caps.size})")) for r in sendable]
        sender = msg.sender_as_given if utf8 else (msg.sender_ascii or "")
        dsn = caps.dsn  # RFC 3461 §5.2.2: without DSN at the server, the parameters stay here
        mail = mail_command(sender, size=size if caps.size is not None else None, body=body,
                            smtputf8=utf8, ret=msg.ret if dsn else None,
                            envid=msg.message.envid if dsn else None)
        commands = {r.index: rcpt_command(
            r.as_given if utf8 else (r.ascii or ""),
            notify=r.notify if dsn else None,
            orcpt=r.orcpt if dsn else None) for r in sendable}
        queue = list(sendable)
        for _ in range(len(sendable)):  # each round settles at least one recipient
            if not queue:
                break
            batch, queue = queue[:self.settings.max_recipients], queue[self.settings.max_recipients:]
            outcome = await self._transaction(mail, [commands[r.index] for r in batch],
                                              lambda: msg.chunks(converted))
            delivered = outcome.final is not None and 200 <= outcome.final.code < 300
            for r, rcpt_reply, reply in zip(batch, outcome.rcpts, outcome.replies, strict=True):
                if delivered and rcpt_reply is not None and rcpt_reply.code == 452 \
                        and rcpt_reply.enhanced in ("", "4.5.3"):
                    # RFC 5321 §4.5.3.1.10: "too many recipients" → the rest go in another
                    # transaction right away.
                    queue.append(r)
                else:
                    results.append(self._result(r, reply, relayed=not dsn))
            if not self.usable:
                break
        for r in queue:
            results.append(self._result(r, Reply(451, "4.4.2", f"{self.host}: connection lost")))
        return results

    async def _transaction(self, mail: Command, rcpts: list[Command],
                           content: Callable[[], Iterator[bytes]]) -> TransactionOutcome:
        core = self.core
        try:
            if self._dirty:
                reply = await self._command(core.rset())
                if not 200 <= reply.code < 300:
                    raise SessionError(reply)
            self._dirty = True
            self.messages += 1
            await self._write(core.start_transaction(mail, rcpts))
            for _ in range(2 * len(rcpts) + 8):  # a reply per command, plus a few events
                event = await self._event()
                if isinstance(event, TransactionDone):
                    return event.outcome
                if isinstance(event, ReadyForContent):
                    for chunk in content():
                        await self._write(core.send_content(chunk),
                                          self.settings.data_block_timeout)
                    await self._write(core.end_content(), self.settings.data_block_timeout)
                elif isinstance(event, ServerReply):
                    if out := core.data_to_send():  # the next command when not pipelining
                        await self._write(out)
                else:
                    raise SessionError(self._broken_reply(event))
            raise SessionError(Reply(451, "4.5.0", f"{self.host}: transaction did not finish"))
        except SessionError as exc:
            kind = core.awaiting.kind.value if core.awaiting else "transaction"
            log.info("event=smtp_transaction_failed peer=%s during=%s reason=%r",
                     self.peer, kind, exc.reply.lines[0])
            outcome = core.abort_transaction(exc.reply)
            self._close_now()
            if outcome is None:  # failed before the transaction began (RSET)
                n = len(rcpts)
                outcome = TransactionOutcome(None, (None,) * n, None, None, (exc.reply,) * n)
            return outcome

    def _result(self, rcpt: PreparedRecipient, reply: Reply, *, relayed: bool = False
                ) -> tuple[PreparedRecipient, DeliveryResult]:
        ok = 200 <= reply.code < 300
        return rcpt, DeliveryResult(
            recipient=rcpt.recipient.address, reply=reply, permanent=reply.code >= 500,
            host=self.host, delivered=ok, address=self.address, tls=self.tls,
            relayed_without_dsn=ok and relayed and "SUCCESS" in (rcpt.notify or ""))

    # --- I/O ------------------------------------------------------------------------------
    async def _command(self, data: bytes) -> Reply:
        await self._write(data)
        return await self._reply()

    async def _reply(self) -> Reply:
        event = await self._event()
        if isinstance(event, ServerReply):
            return event.reply
        raise SessionError(self._broken_reply(event))

    def _broken_reply(self, event: Event) -> Reply:
        if isinstance(event, ProtocolError):
            return Reply(451, "4.5.0", f"{self.host}: protocol error: {event.reason}")
        waiting = event.command.kind.value if isinstance(event, ConnectionClosed) and \
            event.command else "nothing"
        return Reply(451, "4.4.2", f"{self.host}: connection closed (waiting for {waiting})")

    async def _event(self) -> Event:
        loop = asyncio.get_running_loop()
        awaiting = self.core.awaiting
        deadline = loop.time() + self._timeout(awaiting)
        what = awaiting.kind.value if awaiting else "reply"
        while True:
            event = self.core.next_event()
            if event is not None:
                return event
            remaining = deadline - loop.time()
            if remaining <= 0 or self._reader is None:
                break
            try:
                data = await asyncio.wait_for(self._reader.read(65536), remaining)
            except TimeoutError:
                break
            except _NETWORK_ERRORS as exc:
                raise SessionError(Reply(451, "4.4.2", f"{self.host}: connection lost "
                                         f"waiting for {what}: {exc}")) from None
            self.core.receive_data(data)
        raise SessionError(Reply(451, "4.4.2", f"{self.host}: timeout waiting for {what}"))

    def _timeout(self, command: Command | None) -> float:
        s = self.settings
        if command is None:
            return s.command_timeout
        return {CommandKind.GREETING: s.greeting_timeout, CommandKind.MAIL: s.mail_timeout,
                CommandKind.RCPT: s.rcpt_timeout, CommandKind.DATA: s.data_init_timeout,
                CommandKind.END_OF_DATA: s.data_final_timeout}.get(command.kind,
                                                                   s.command_timeout)

    async def _write(self, data: bytes, timeout: float | None = None) -> None:
        if self._writer is None:
            raise SessionError(Reply(451, "4.4.2", f"{self.host}: connection closed"))
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), timeout or self.settings.command_timeout)
        except TimeoutError:
            raise SessionError(Reply(451, "4.4.2", f"{self.host}: timeout sending")) from None
        except _NETWORK_ERRORS as exc:
            raise SessionError(Reply(451, "4.4.2", f"{self.host}: connection lost while "
                                     f"sending: {exc}")) from None

    # --- closing --------------------------------------------------------------------------
    async def close(self) -> None:
        """QUIT politely (RFC 5321 §4.1.1.10) when the connection is sound, then close."""
        if self._writer is None:
            return
        if self.usable:
            try:
                await asyncio.wait_for(self._quit(), self.settings.quit_timeout)
            except (TimeoutError, SessionError, *_NETWORK_ERRORS):
                pass
        writer, self._writer = self._writer, None
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), self.settings.quit_timeout)
        except (TimeoutError, *_NETWORK_ERRORS):
            writer.transport.abort()
        log.debug("event=smtp_close peer=%s tls=%s messages=%d", self.peer, self.tls,
                  self.messages)

    async def _quit(self) -> None:
        await self._command(self.core.quit())

    def _close_now(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.transport.abort()
