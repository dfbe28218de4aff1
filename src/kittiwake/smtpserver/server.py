"""SMTP listeners: accept, limit, time out and shut down sessions (RFC 5321 §4.5.3.2).

Limits are enforced here, not in the sessions, because they are about many connections at
once: the total, the count per client address, idle time. Timeouts are checked by one sweeper
for all sessions instead of a timer per connection, which keeps idle connections cheap.
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
from dataclasses import dataclass

from kittiwake import sasl
from kittiwake.credentials import AuthThrottle
from kittiwake.smtp import replies as R
from kittiwake.smtp.replies import Reply
from kittiwake.smtp.server import ServerSettings
from kittiwake.smtpserver.backend import Backend
from kittiwake.smtpserver.session import Session

log = logging.getLogger(__name__)

_B32 = "0123456789BCDFGHJKLMNPQRSTVWXYZ"


@dataclass(frozen=True, slots=True)
class SmtpServerSettings:
    core: ServerSettings
    max_recipients: int = 100
    max_connections: int = 20000
    max_connections_per_ip: int = 50
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    greeting_delay: float = 0.0
    tls_handshake_timeout: float = 30.0
    shutdown_grace: float = 30.0
    auth_max_failures: int = 10
    auth_lockout: float = 900.0


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    kind: str  # "smtp" | "submission" | "submissions"
    host: str
    port: int
    tls: str  # "starttls" | "implicit"


class Listener:
    """One listening socket and the per-kind core settings of its sessions."""

    def __init__(self, server: SmtpServer, spec: ListenerSpec, backend: Backend) -> None:
        self.server = server
        self.spec = spec
        self.kind = spec.kind
        self.tls = spec.tls
        self.backend = backend
        self.asyncio_server: asyncio.Server | None = None
        base = server.settings.core
        if spec.kind != "smtp":
            # RFC 6409 submission: AUTH, offered only once TLS is up (RFC 8314 §3.3/ §4.1).
            mechs = sasl.available(tls_active=True, channel_binding_available=False)
            base = dataclasses.replace(base, auth_mechanisms=mechs, auth_requires_tls=True)
        self._plain = dataclasses.replace(base, starttls=server.ssl_context is not None)
        self._tls = dataclasses.replace(base, starttls=False)

    def core_settings(self, *, tls_active: bool) -> ServerSettings:
        return self._tls if tls_active else self._plain


class SmtpServer:
    def __init__(
        self, settings: SmtpServerSettings, listeners: list[ListenerSpec], backend: Backend,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.settings = settings
        self.ssl_context = ssl_context
        self.listeners = [Listener(self, spec, backend) for spec in listeners]
        self.sessions: set[Session] = set()
        self._per_ip: Counter[str] = Counter()
        self._cids = itertools.count(1)
        self._qcounter = itertools.count()
        self._sweeper: asyncio.Task[None] | None = None
        self._shutting_down = False
        self._idle_waiter: asyncio.Event | None = None
        self._prefix = f"{os.getpid() % 1000:03d}"
        self.throttle = AuthThrottle(
            max_failures_per_ip=settings.auth_max_failures,
            max_failures_per_account=settings.auth_max_failures,
            lockout=settings.auth_lockout)
        self.sasl_settings = sasl.SaslSettings()

    # --- identifiers ----------------------------------------------------------------------
    def next_cid(self) -> str:
        return f"{self._prefix}{next(self._cids):06d}"

    def next_queue_id(self) -> str:
        """Short, unique and roughly time-ordered, like Postfix's long queue ids."""
        n = int(time.time() * 1_000_000)
        out = []
        while n:
            n, r = divmod(n, len(_B32))
            out.append(_B32[r])
        return "".join(reversed(out)) + f"{os.getpid() % 10000:04d}{next(self._qcounter) % 100000:05d}"

    # --- admission ------------------------------------------------------------------------
    def admit(self, session: Session) -> Reply | None:
        assert session.info is not None
        ip = session.info.peer_ip
        if self._shutting_down:
            return R.SERVICE_SHUTTING_DOWN
        if len(self.sessions) >= self.settings.max_connections:
            return R.TOO_MANY_CONNECTIONS
        if self._per_ip[ip] >= self.settings.max_connections_per_ip:
            return R.TOO_MANY_CONNECTIONS_FROM_IP
        self.sessions.add(session)
        self._per_ip[ip] += 1
        return None

    def release(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            assert session.info is not None
            ip = session.info.peer_ip
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]
        if self._idle_waiter is not None and not any(s.in_transaction for s in self.sessions):
            self._idle_waiter.set()

    def session_idle(self, session: Session) -> None:
        """A session finished a Backend step; during shutdown, idle sessions get 421 now."""
        if self._shutting_down and not session.in_transaction:
            session.close(R.SERVICE_SHUTTING_DOWN)

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, sockets: dict[tuple[str, int], socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for lst in self.listeners:
            ctx = self.ssl_context if lst.tls == "implicit" else None
            if lst.tls == "implicit" and ctx is None:
                raise RuntimeError(f"listener {lst.kind} on port {lst.spec.port} needs a TLS certificate")
            timeout = self.settings.tls_handshake_timeout if ctx is not None else None
            sock = (sockets or {}).get((lst.spec.host, lst.spec.port))

            def factory(lst: Listener = lst) -> Session:
                return Session(lst)

            if sock is not None:
                lst.asyncio_server = await loop.create_server(
                    factory, sock=sock, ssl=ctx, backlog=4096, ssl_handshake_timeout=timeout)
            else:
                lst.asyncio_server = await loop.create_server(
                    factory, lst.spec.host, lst.spec.port, ssl=ctx, backlog=4096,
                    reuse_address=True, ssl_handshake_timeout=timeout)
            log.info("event=listening kind=%s address=%s:%d tls=%s", lst.kind, lst.spec.host,
                     lst.spec.port, lst.tls)
        self._sweeper = loop.create_task(self._sweep())

    def bound_ports(self) -> list[int]:
        ports = []
        for lst in self.listeners:
            if lst.asyncio_server is not None:
                for s in lst.asyncio_server.sockets:
                    ports.append(s.getsockname()[1])
        return ports

    async def _sweep(self) -> None:
        """Close sessions idle past their timeout with 421 4.4.2 (RFC 5321 §4.5.3.2)."""
        while True:
            await asyncio.sleep(min(1.0, max(0.05, self.settings.command_timeout / 4)))
            now = time.monotonic()
            for s in list(self.sessions):
                if not s.busy and now - s.last_activity > s.timeout:
                    if s.info is not None:
                        log.info("event=timeout cid=%s peer=%s", s.info.cid, s.info.peer_ip)
                    s.close(R.TIMEOUT)

    async def shutdown(self) -> None:
        """Stop accepting; let transactions finish within the grace period; 421 the rest."""
        self._shutting_down = True
        for lst in self.listeners:
            if lst.asyncio_server is not None:
                lst.asyncio_server.close()
        for s in list(self.sessions):
            if not s.in_transaction:
                s.close(R.SERVICE_SHUTTING_DOWN)
        if any(s.in_transaction for s in self.sessions):
            self._idle_waiter = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle_waiter.wait(), self.settings.shutdown_grace)
        for s in list(self.sessions):
            s.close(R.SERVICE_SHUTTING_DOWN)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await asyncio.sleep(0)
