"""What the SMTP, POP3 and IMAP listeners share: the listening sockets and the limits that
are about many connections at once (the total, the count per client address), connection
ids, and the first steps of a shutdown.

Each protocol server subclasses `NetServer` and keeps what differs: its sessions' timeouts
(one sweeper task per server, never a timer per connection, which keeps idle connections
cheap), the words of its refusals, and how long its shutdown lets work in progress finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import socket
import ssl
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Hashable)
Refusal = Literal["shutting_down", "too_many", "too_many_from_ip"]


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    kind: str  # "smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"
    host: str
    port: int
    tls: str  # "starttls" | "implicit"


class Listener:
    """One listening socket."""

    def __init__(self, spec: ListenerSpec) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.tls = spec.tls
        self.asyncio_server: asyncio.Server | None = None


class NetServer(Generic[S]):
    def __init__(self, *, max_connections: int, max_connections_per_ip: int,
                 cid_prefix: str, backlog: int = 1024) -> None:
        self.sessions: set[S] = set()
        self._max = max_connections
        self._max_per_ip = max_connections_per_ip
        self._per_ip: Counter[str] = Counter()
        self._cids = itertools.count(1)
        self._prefix = f"{cid_prefix}{os.getpid() % 1000:03d}"
        self._backlog = backlog
        self._shutting_down = False

    def next_cid(self) -> str:
        return f"{self._prefix}{next(self._cids):06d}"

    def _admit(self, session: S, ip: str) -> Refusal | None:
        """Count the session in, or say why it may not come in."""
        if self._shutting_down:
            return "shutting_down"
        if len(self.sessions) >= self._max:
            return "too_many"
        if self._per_ip[ip] >= self._max_per_ip:
            return "too_many_from_ip"
        self.sessions.add(session)
        self._per_ip[ip] += 1
        return None

    def _release(self, session: S, ip: str) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]

    async def _listen(self, listeners: Iterable[Listener], ssl_context: ssl.SSLContext | None,
                      handshake_timeout: float, session: Callable[[Any], asyncio.Protocol],
                      sockets: dict[tuple[str, int], socket.socket] | None) -> None:
        """Open every listener, on the socket inherited for its address if there is one
        (workers share sockets bound before the fork); `session(listener)` makes the
        protocol object of each connection."""
        loop = asyncio.get_running_loop()
        for lst in listeners:
            ctx = ssl_context if lst.tls == "implicit" else None
            if lst.tls == "implicit" and ctx is None:
                raise RuntimeError(f"listener {lst.kind} on port {lst.spec.port} needs a TLS "
                                   "certificate")
            timeout = handshake_timeout if ctx is not None else None
            sock = (sockets or {}).get((lst.spec.host, lst.spec.port))
            factory = functools.partial(session, lst)
            if sock is not None:
                lst.asyncio_server = await loop.create_server(
                    factory, sock=sock, ssl=ctx, backlog=self._backlog,
                    ssl_handshake_timeout=timeout)
            else:
                lst.asyncio_server = await loop.create_server(
                    factory, lst.spec.host, lst.spec.port, ssl=ctx,
                    backlog=self._backlog, reuse_address=True, ssl_handshake_timeout=timeout)
            log.info("event=listening kind=%s address=%s:%d tls=%s", lst.kind, lst.spec.host,
                     lst.spec.port, lst.tls)

    def _bound_ports(self, listeners: Iterable[Listener]) -> list[int]:
        ports = []
        for lst in listeners:
            if lst.asyncio_server is not None:
                ports += [s.getsockname()[1] for s in lst.asyncio_server.sockets]
        return ports

    def _stop_listening(self, listeners: Iterable[Listener]) -> None:
        """The first step of every shutdown: refuse newcomers, stop accepting."""
        self._shutting_down = True
        for lst in listeners:
            if lst.asyncio_server is not None:
                lst.asyncio_server.close()

    @staticmethod
    async def _cancel(tasks: Iterable[asyncio.Task[None] | None]) -> None:
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.sleep(0)
