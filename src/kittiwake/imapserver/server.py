"""IMAP listeners: accept, limit, time out and shut down sessions (RFC 9051 §5.4; RFC 8314).

Port 143 speaks plaintext with STARTTLS (RFC 9051 §6.2.1) and port 993 implicit TLS
(RFC 8314 §3.3); both share the limits here, which are about many connections at once: the
total, the count per client address, and idle time.  RFC 9051 §5.4 asks for an autologout
of at least 30 minutes once authenticated; before login a short timeout keeps scanners from
holding slots; a session in IDLE may stay much longer (RFC 2177 clients re-issue IDLE every
29 minutes).  One sweeper checks every session instead of a timer per connection, which
keeps idle connections cheap.

The watcher serves the sessions in IDLE: every `poll_interval` it reads the HIGHESTMODSEQ
and UIDNEXT of every mailbox an IDLE session has selected, in one query, and wakes the
sessions whose mailbox moved.  That catches changes from other processes (a second worker,
POP3 in another process, the CLI) within about half a second; changes made in this process
wake sessions at once through the store's ChangeNotifier.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
import time
from dataclasses import dataclass, field

from kittiwake import netserver, sasl
from kittiwake.credentials import AuthThrottle
from kittiwake.imap.connection import ConnectionSettings
from kittiwake.imapserver.session import Session
from kittiwake.netserver import ListenerSpec as ListenerSpec  # re-exported: callers name it here
from kittiwake.store.imapstore import ImapStore

log = logging.getLogger(__name__)

#: RFC 9051 §5.4: "an inactivity autologout timer of at least 30 minutes".
MIN_AUTOLOGOUT = 1800.0


@dataclass(frozen=True, slots=True)
class ImapServerSettings:
    """`core` carries the protocol limits (line, literal and APPEND sizes); the rest are
    about connections.  `poll_interval` bounds how late a change made by another process
    reaches a session (RFC 2177 IDLE)."""

    core: ConnectionSettings = field(default_factory=ConnectionSettings)
    hostname: str = "localhost"
    max_connections: int = 5000
    max_connections_per_ip: int = 50
    login_timeout: float = 60.0
    autologout: float = MIN_AUTOLOGOUT
    idle_timeout: float = 3600.0
    idle_keepalive: float = 120.0  # "* OK Still here" during IDLE, for NAT boxes
    poll_interval: float = 0.5
    tls_handshake_timeout: float = 30.0
    shutdown_grace: float = 10.0
    max_errors: int = 20  # protocol errors before the session is closed
    auth_max_failures: int = 10
    auth_lockout: float = 900.0
    # Password checks at once: argon2id takes ~64 MiB and a core each, so a burst of logins
    # must queue rather than multiply memory (more in parallel would not be faster).
    max_concurrent_auth: int = 2
    compress: bool = True  # offer COMPRESS=DEFLATE (RFC 4978)

    def __post_init__(self) -> None:
        if self.autologout < MIN_AUTOLOGOUT:
            raise ValueError(f"autologout must be at least {MIN_AUTOLOGOUT:.0f} s (RFC 9051 §5.4)")


class Listener(netserver.Listener):
    """One listening socket and the core settings of its sessions."""

    def __init__(self, server: ImapServer, spec: ListenerSpec) -> None:
        super().__init__(spec)
        self.server = server
        base = server.settings.core
        self._plain = dataclasses.replace(base, starttls=server.ssl_context is not None)
        self._tls = dataclasses.replace(base, starttls=False)

    def core_settings(self, *, tls_active: bool) -> ConnectionSettings:
        return self._tls if tls_active else self._plain


class ImapServer(netserver.NetServer[Session]):
    def __init__(
        self,
        settings: ImapServerSettings,
        listeners: list[ListenerSpec],
        store: ImapStore,
        credentials: sasl.CredentialLookup,
        ssl_context: ssl.SSLContext | None,
        *,
        sasl_settings: sasl.SaslSettings | None = None,
        throttle: AuthThrottle | None = None,
    ) -> None:
        """`store` is `MailStore.imap`.  `throttle` may be shared with SMTP AUTH and POP3,
        so a guesser cannot spread attempts over protocols."""
        super().__init__(max_connections=settings.max_connections,
                         max_connections_per_ip=settings.max_connections_per_ip,
                         cid_prefix="i")
        self.settings = settings
        self.store = store
        self.credentials = credentials
        self.ssl_context = ssl_context
        self.sasl_settings = sasl_settings or sasl.SaslSettings()
        self.listeners = [Listener(self, spec) for spec in listeners]
        self.throttle = throttle if throttle is not None else AuthThrottle(
            max_failures_per_ip=settings.auth_max_failures,
            max_failures_per_account=settings.auth_max_failures,
            lockout=settings.auth_lockout,
        )
        self.idlers: set[Session] = set()
        self.auth_slots = asyncio.Semaphore(max(1, settings.max_concurrent_auth))
        self._tasks: list[asyncio.Task[None]] = []

    # --- admission ------------------------------------------------------------------------
    def admit(self, session: Session, ip: str) -> str | None:
        """None, or why the connection is refused (the text of its BYE)."""
        refusal = self._admit(session, ip)
        if refusal is None:
            return None
        return {"shutting_down": "Server shutting down", "too_many": "Too many connections",
                "too_many_from_ip": "Too many connections from your address"}[refusal]

    def release(self, session: Session, ip: str) -> None:
        self.idlers.discard(session)
        self._release(session, ip)

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, sockets: dict[tuple[str, int], socket.socket] | None = None) -> None:
        await self._listen(self.listeners, self.ssl_context, self.settings.tls_handshake_timeout,
                           Session, sockets)
        self.start_background()

    def start_background(self) -> None:
        """The sweeper and the IDLE watcher (started by `start`; tests may run them alone)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._sweep()), loop.create_task(self._watch())]

    def bound_ports(self) -> list[int]:
        return self._bound_ports(self.listeners)

    async def _sweep(self) -> None:
        """Autologout (RFC 9051 §5.4).  A session busy with a command is left alone unless
        the client stopped reading our output for longer than the timeout."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for s in list(self.sessions):
                if now - s.last_activity > s.timeout:
                    log.info("event=timeout cid=%s peer=%s", s.cid, s.peer_ip)
                    s.close("Autologout; idle for too long")

    async def _watch(self) -> None:
        """Wake IDLE sessions whose mailbox changed in another process (see module doc)."""
        interval = self.settings.poll_interval
        while True:
            await asyncio.sleep(interval)
            watched = {s.selected_id: s for s in self.idlers if s.selected_id is not None}
            if not watched:
                continue
            try:
                states = await self.store.states({s.selected_id for s in self.idlers
                                                  if s.selected_id is not None})
            except Exception:
                log.exception("event=watch_failed")
                continue
            for s in list(self.idlers):
                if s.selected_id is not None and s.view_state() != states.get(s.selected_id):
                    s.wake()

    async def shutdown(self) -> None:
        """Stop accepting; give running commands (an APPEND being stored, a MOVE) the grace
        period to finish, then say BYE to everyone (RFC 9051 §7.1.5)."""
        self._stop_listening(self.listeners)
        deadline = time.monotonic() + self.settings.shutdown_grace
        for s in list(self.sessions):
            if not s.busy:
                s.close("Server shutting down")
        while any(s.busy for s in self.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for s in list(self.sessions):
            s.close("Server shutting down")
        await self._cancel(self._tasks)
