"""POP3 listeners: accept, limit, time out and shut down sessions.

Port 110 speaks plain POP3 with STLS (RFC 2595 §4) and port 995 implicit TLS (RFC 8314 §3.2);
both share the limits here, which are about many connections at once: the total, the count
per client address, idle time. RFC 1939 §3 asks for an inactivity autologout of at least ten
minutes; one sweeper checks every session instead of a timer per connection, which keeps idle
connections cheap.

The maildrop comes from the store through the small :class:`MaildropStore` protocol
(``MailStore`` satisfies it), so tests can put a failing store behind a real listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kittiwake import netserver, sasl
from kittiwake.credentials import AuthThrottle
from kittiwake.netserver import ListenerSpec as ListenerSpec  # re-exported: callers name it here
from kittiwake.pop3 import replies as R
from kittiwake.pop3.replies import Reply
from kittiwake.pop3.server import ServerSettings
from kittiwake.pop3server.session import Session
from kittiwake.store.pop3ops import Maildrop

log = logging.getLogger(__name__)

#: RFC 1939 §3: "an inactivity autologout timer ... of at least 10 minutes".
MIN_IDLE_TIMEOUT = 600.0


class MaildropLease(Protocol):
    def release(self) -> None: ...


class MaildropStore(Protocol):
    """What a POP3 session needs from the store."""

    async def lock_maildrop(self, account: str) -> MaildropLease | None: ...

    async def maildrop(self, account: str, mailbox: str = ...) -> Maildrop: ...

    async def read_message(self, account: str, mailbox: str, uid: int) -> bytes: ...

    async def expunge(self, account: str, mailbox: str, uids: Sequence[int]) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class Pop3ServerSettings:
    core: ServerSettings = field(default_factory=ServerSettings)
    max_connections: int = 1000
    max_connections_per_ip: int = 20
    idle_timeout: float = MIN_IDLE_TIMEOUT
    tls_handshake_timeout: float = 30.0
    shutdown_grace: float = 10.0  # for sessions applying deletions (UPDATE) to finish
    auth_max_failures: int = 10  # per address and per account, within the throttle window
    auth_lockout: float = 900.0


class Listener(netserver.Listener):
    """One listening socket and the core settings of its sessions."""

    def __init__(self, server: Pop3Server, spec: ListenerSpec) -> None:
        super().__init__(spec)
        self.server = server
        base = server.settings.core
        self._plain = dataclasses.replace(base, stls=server.ssl_context is not None)
        self._tls = dataclasses.replace(base, stls=False)

    def core_settings(self, *, tls_active: bool) -> ServerSettings:
        return self._tls if tls_active else self._plain


class Pop3Server(netserver.NetServer[Session]):
    def __init__(
        self,
        settings: Pop3ServerSettings,
        listeners: list[ListenerSpec],
        store: MaildropStore,
        credentials: sasl.CredentialLookup,
        ssl_context: ssl.SSLContext | None,
        *,
        sasl_settings: sasl.SaslSettings | None = None,
        throttle: AuthThrottle | None = None,
    ) -> None:
        """``throttle`` may be shared with the other listeners (SMTP AUTH, IMAP), so a
        guesser cannot spread attempts over protocols; by default this server has its own."""
        self.settings = settings
        self.store = store
        self.credentials = credentials
        self.ssl_context = ssl_context
        self.sasl_settings = sasl_settings or sasl.SaslSettings()
        super().__init__(max_connections=settings.max_connections,
                         max_connections_per_ip=settings.max_connections_per_ip,
                         cid_prefix="p")
        self.listeners = [Listener(self, spec) for spec in listeners]
        # Not `throttle or ...`: an AuthThrottle tracking nobody has len() 0, so it is falsy.
        self.throttle = throttle if throttle is not None else AuthThrottle(
            max_failures_per_ip=settings.auth_max_failures,
            max_failures_per_account=settings.auth_max_failures,
            lockout=settings.auth_lockout,
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._idle_waiter: asyncio.Event | None = None

    # --- admission ------------------------------------------------------------------------
    def admit(self, session: Session, ip: str) -> Reply | None:
        refusal = self._admit(session, ip)
        if refusal is None:
            return None
        return R.SHUTTING_DOWN if refusal == "shutting_down" else R.TOO_MANY_CONNECTIONS

    def release(self, session: Session, ip: str) -> None:
        self._release(session, ip)
        self.session_idle()

    def session_idle(self) -> None:
        """During shutdown, wake the waiter once no session is applying deletions."""
        if self._idle_waiter is not None and not any(s.updating for s in self.sessions):
            self._idle_waiter.set()

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, sockets: dict[tuple[str, int], socket.socket] | None = None) -> None:
        await self._listen(self.listeners, self.ssl_context, self.settings.tls_handshake_timeout,
                           Session, sockets)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def bound_ports(self) -> list[int]:
        return self._bound_ports(self.listeners)

    async def _sweep(self) -> None:
        """Autologout (RFC 1939 §3): idle sessions are closed without entering UPDATE, so
        their deletion marks are dropped. A session stalled on a client that stopped
        reading counts as idle too."""
        timeout = self.settings.idle_timeout
        while True:
            await asyncio.sleep(min(1.0, max(0.05, timeout / 4)))
            now = time.monotonic()
            for s in list(self.sessions):
                if s.sweepable and now - s.last_activity > timeout:
                    log.info("event=timeout cid=%s peer=%s", s.cid, s.peer_ip)
                    s.close(R.AUTOLOGOUT)

    async def shutdown(self) -> None:
        """Stop accepting; let sessions in UPDATE finish within the grace period, so a
        client that said QUIT gets its deletions; close everything else now."""
        self._stop_listening(self.listeners)
        for s in list(self.sessions):
            if not s.updating:
                s.close(R.SHUTTING_DOWN)
        if any(s.updating for s in self.sessions):
            self._idle_waiter = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle_waiter.wait(), self.settings.shutdown_grace)
        for s in list(self.sessions):
            s.close(R.SHUTTING_DOWN)
        await self._cancel([self._sweeper])
