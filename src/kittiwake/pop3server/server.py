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
import itertools
import logging
import os
import socket
import ssl
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kittiwake import sasl
from kittiwake.credentials import AuthThrottle
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


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    kind: str  # "pop3" | "pop3s"
    host: str
    port: int
    tls: str  # "starttls" | "implicit"


class Listener:
    """One listening socket and the core settings of its sessions."""

    def __init__(self, server: Pop3Server, spec: ListenerSpec) -> None:
        self.server = server
        self.spec = spec
        self.kind = spec.kind
        self.tls = spec.tls
        self.asyncio_server: asyncio.Server | None = None
        base = server.settings.core
        self._plain = dataclasses.replace(base, stls=server.ssl_context is not None)
        self._tls = dataclasses.replace(base, stls=False)

    def core_settings(self, *, tls_active: bool) -> ServerSettings:
        return self._tls if tls_active else self._plain


class Pop3Server:
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
        self.listeners = [Listener(self, spec) for spec in listeners]
        self.sessions: set[Session] = set()
        # Not `throttle or ...`: an AuthThrottle tracking nobody has len() 0, so it is falsy.
        self.throttle = throttle if throttle is not None else AuthThrottle(
            max_failures_per_ip=settings.auth_max_failures,
            max_failures_per_account=settings.auth_max_failures,
            lockout=settings.auth_lockout,
        )
        self._per_ip: Counter[str] = Counter()
        self._cids = itertools.count(1)
        self._prefix = f"p{os.getpid() % 1000:03d}"
        self._sweeper: asyncio.Task[None] | None = None
        self._shutting_down = False
        self._idle_waiter: asyncio.Event | None = None

    def next_cid(self) -> str:
        return f"{self._prefix}{next(self._cids):06d}"

    # --- admission ------------------------------------------------------------------------
    def admit(self, session: Session, ip: str) -> Reply | None:
        if self._shutting_down:
            return R.SHUTTING_DOWN
        if len(self.sessions) >= self.settings.max_connections:
            return R.TOO_MANY_CONNECTIONS
        if self._per_ip[ip] >= self.settings.max_connections_per_ip:
            return R.TOO_MANY_CONNECTIONS
        self.sessions.add(session)
        self._per_ip[ip] += 1
        return None

    def release(self, session: Session, ip: str) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]
        self.session_idle()

    def session_idle(self) -> None:
        """During shutdown, wake the waiter once no session is applying deletions."""
        if self._idle_waiter is not None and not any(s.updating for s in self.sessions):
            self._idle_waiter.set()

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, sockets: dict[tuple[str, int], socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for lst in self.listeners:
            ctx = self.ssl_context if lst.tls == "implicit" else None
            if lst.tls == "implicit" and ctx is None:
                raise RuntimeError(f"listener {lst.kind} on port {lst.spec.port} needs a TLS "
                                   "certificate")
            timeout = self.settings.tls_handshake_timeout if ctx is not None else None
            sock = (sockets or {}).get((lst.spec.host, lst.spec.port))

            def factory(lst: Listener = lst) -> Session:
                return Session(lst)

            if sock is not None:
                lst.asyncio_server = await loop.create_server(
                    factory, sock=sock, ssl=ctx, backlog=1024, ssl_handshake_timeout=timeout)
            else:
                lst.asyncio_server = await loop.create_server(
                    factory, lst.spec.host, lst.spec.port, ssl=ctx, backlog=1024,
                    reuse_address=True, ssl_handshake_timeout=timeout)
            log.info("event=listening kind=%s address=%s:%d tls=%s", lst.kind, lst.spec.host,
                     lst.spec.port, lst.tls)
        self._sweeper = loop.create_task(self._sweep())

    def bound_ports(self) -> list[int]:
        ports = []
        for lst in self.listeners:
            if lst.asyncio_server is not None:
                ports += [s.getsockname()[1] for s in lst.asyncio_server.sockets]
        return ports

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
        self._shutting_down = True
        for lst in self.listeners:
            if lst.asyncio_server is not None:
                lst.asyncio_server.close()
        for s in list(self.sessions):
            if not s.updating:
                s.close(R.SHUTTING_DOWN)
        if any(s.updating for s in self.sessions):
            self._idle_waiter = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle_waiter.wait(), self.settings.shutdown_grace)
        for s in list(self.sessions):
            s.close(R.SHUTTING_DOWN)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await asyncio.sleep(0)
