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
from dataclasses import dataclass

from kittiwake import netserver, sasl
from kittiwake.credentials import AuthThrottle
from kittiwake.netserver import ListenerSpec as ListenerSpec  # re-exported: callers name it here
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


class Listener(netserver.Listener):
    """One listening socket and the per-kind core settings of its sessions."""

    def __init__(self, server: SmtpServer, spec: ListenerSpec, backend: Backend) -> None:
        super().__init__(spec)
        self.server = server
        self.backend = backend
        base = server.settings.core
        if spec.kind != "smtp":
            # RFC 6409 submission: AUTH, offered only once TLS is up (RFC 8314 §3.3/ §4.1).
            mechs = sasl.available(tls_active=True, channel_binding_available=False)
            base = dataclasses.replace(base, auth_mechanisms=mechs, auth_requires_tls=True)
        self._plain = dataclasses.replace(base, starttls=server.ssl_context is not None)
        self._tls = dataclasses.replace(base, starttls=False)

    def core_settings(self, *, tls_active: bool) -> ServerSettings:
        return self._tls if tls_active else self._plain


class SmtpServer(netserver.NetServer[Session]):
    def __init__(
        self, settings: SmtpServerSettings, listeners: list[ListenerSpec], backend: Backend,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(max_connections=settings.max_connections,
                         max_connections_per_ip=settings.max_connections_per_ip,
                         cid_prefix="", backlog=4096)
        self.settings = settings
        self.ssl_context = ssl_context
        self.listeners = [Listener(self, spec, backend) for spec in listeners]
        self._qcounter = itertools.count()
        self._sweeper: asyncio.Task[None] | None = None
        self._idle_waiter: asyncio.Event | None = None
        self.throttle = AuthThrottle(
            max_failures_per_ip=settings.auth_max_failures,
            max_failures_per_account=settings.auth_max_failures,
            lockout=settings.auth_lockout)
        self.sasl_settings = sasl.SaslSettings()

    # --- identifiers ----------------------------------------------------------------------
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
        refusal = self._admit(session, session.info.peer_ip)
        if refusal is None:
            return None
        return {"shutting_down": R.SERVICE_SHUTTING_DOWN, "too_many": R.TOO_MANY_CONNECTIONS,
                "too_many_from_ip": R.TOO_MANY_CONNECTIONS_FROM_IP}[refusal]

    def release(self, session: Session) -> None:
        if session.info is not None:
            self._release(session, session.info.peer_ip)
        if self._idle_waiter is not None and not any(s.in_transaction for s in self.sessions):
            self._idle_waiter.set()

    def session_idle(self, session: Session) -> None:
        """A session finished a Backend step; during shutdown, idle sessions get 421 now."""
        if self._shutting_down and not session.in_transaction:
            session.close(R.SERVICE_SHUTTING_DOWN)

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, sockets: dict[tuple[str, int], socket.socket] | None = None) -> None:
        await self._listen(self.listeners, self.ssl_context, self.settings.tls_handshake_timeout,
                           Session, sockets)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def bound_ports(self) -> list[int]:
        return self._bound_ports(self.listeners)

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
        self._stop_listening(self.listeners)
        for s in list(self.sessions):
            if not s.in_transaction:
                s.close(R.SERVICE_SHUTTING_DOWN)
        if any(s.in_transaction for s in self.sessions):
            self._idle_waiter = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle_waiter.wait(), self.settings.shutdown_grace)
        for s in list(self.sessions):
            s.close(R.SERVICE_SHUTTING_DOWN)
        await self._cancel([self._sweeper])
