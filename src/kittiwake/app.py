"""Wiring: config → concrete parts → running servers (DESIGN.md layer L4).

This is the only place (with cli.py) that reads `Config`; it hands each part its own small
settings value. It also owns process concerns: the event loop (uvloop when installed),
signals and graceful shutdown, worker processes sharing the listening ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from kittiwake import tlsconfig
from kittiwake.config import Config
from kittiwake.dns import DnsResolver, DnsSettings
from kittiwake.imap.connection import ConnectionSettings as ImapConnectionSettings
from kittiwake.imapserver.server import ImapServer, ImapServerSettings
from kittiwake.imapserver.server import ListenerSpec as ImapListenerSpec
from kittiwake.inbound import InboundBackend, InboundSettings
from kittiwake.mailauth import (
    AuthSettings,
    DkimKey,
    DkimKeyStore,
    InboundAuthenticator,
    KeyAlgorithm,
)
from kittiwake.pop3.server import ServerSettings as Pop3CoreSettings
from kittiwake.pop3server.server import ListenerSpec as Pop3ListenerSpec
from kittiwake.pop3server.server import Pop3Server, Pop3ServerSettings
from kittiwake.queue.runner import QueueRunner, RunnerSettings
from kittiwake.queue.schedule import RetrySchedule
from kittiwake.queue.spool import Spool
from kittiwake.smtp.server import ServerSettings
from kittiwake.smtpclient.types import ClientSettings
from kittiwake.smtpserver.server import ListenerSpec, SmtpServer, SmtpServerSettings
from kittiwake.store.directory import Directory
from kittiwake.store.mailstore import MailStore
from kittiwake.store.models import StoreSettings

log = logging.getLogger(__name__)


def prepare_data_dir(config: Config) -> None:
    """Create the data dir layout and a self-signed certificate when none exists yet."""
    for sub in ("", "mail", "queue", "tls", "dkim"):
        (config.data_dir / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(config.data_dir, 0o700)
    if not config.tls_cert.exists() or not config.tls_key.exists():
        tlsconfig.write_self_signed(config.tls_cert, config.tls_key, config.hostname)
        log.info("event=tls_selfsigned cert=%s", config.tls_cert)


def dkim_keystore(config: Config) -> DkimKeyStore:
    return DkimKeyStore(config.data_dir / "dkim")


def ensure_dkim_keys(config: Config, domain: str) -> list[DkimKey]:
    """An RSA-2048 and an Ed25519 key for `domain` unless it has keys already (RFC 8463
    dual signing: receivers that don't know Ed25519 still verify the RSA signature)."""
    store = dkim_keystore(config)
    if store.keys(domain):
        return []
    return [store.generate(domain, algorithm=alg) for alg in (KeyAlgorithm.RSA, KeyAlgorithm.ED25519)]


def bootstrap_development(config: Config) -> str | None:
    """The development default works out of the box: domain `localhost`, account postmaster.

    Returns the generated password when the account was created now, else None.
    """
    directory = Directory(config.db_path)
    try:
        if not directory.is_local_domain(config.hostname):
            directory.add_domain(config.hostname)
        postmaster = f"postmaster@{config.hostname}"
        if not directory.account_exists(postmaster):
            password = secrets.token_urlsafe(12)
            directory.add_account(postmaster, password)
            return password
        return None
    finally:
        directory.close()


def smtp_settings(config: Config) -> SmtpServerSettings:
    lim = config.limits
    core = ServerSettings(
        hostname=config.hostname,
        max_message_size=lim.max_message_size,
        max_command_line=lim.max_command_line,
        max_text_line=lim.max_text_line,
        max_errors=lim.max_errors,
        reject_bare_line_endings=lim.reject_bare_line_endings,
    )
    return SmtpServerSettings(
        core=core,
        max_recipients=lim.max_recipients,
        max_connections=lim.max_connections,
        max_connections_per_ip=lim.max_connections_per_ip,
        command_timeout=lim.command_timeout,
        data_timeout=lim.data_timeout,
        greeting_delay=lim.greeting_delay,
        tls_handshake_timeout=lim.tls_handshake_timeout,
        shutdown_grace=lim.shutdown_grace,
        auth_max_failures=config.submission.auth_max_failures,
        auth_lockout=config.submission.auth_lockout,
    )


@dataclass
class Running:
    """What `start` started, so tests and `serve` can stop it the same way."""

    store: MailStore
    directory: Directory
    smtp: SmtpServer
    spool: Spool
    runner: QueueRunner | None
    pop3: Pop3Server | None = None
    imap: ImapServer | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)


def client_settings(config: Config) -> ClientSettings:
    d = config.delivery
    auth = (d.smarthost_user, d.smarthost_password) if d.smarthost_user else None
    return ClientSettings(
        helo_name=config.hostname, port=d.port, tls=d.tls, connect_timeout=d.connect_timeout,
        smarthost=d.smarthost or None, smarthost_auth=auth,
        source_address=d.source_address or None,
        max_message_size=config.limits.max_message_size)


def retry_schedule(config: Config) -> RetrySchedule:
    q = config.queue
    return RetrySchedule(minimal_backoff=q.minimal_backoff, maximal_backoff=q.maximal_backoff,
                         max_lifetime=q.max_lifetime, delay_warning_after=q.delay_warning_after)


async def start(config: Config, *, sockets: dict[tuple[str, int], socket.socket] | None = None,
                run_queue: bool = True) -> Running:
    """Start the store, the queue runner and the listeners. With several workers, only the
    first runs the queue (`run_queue`), so one process owns outbound delivery."""
    prepare_data_dir(config)
    store = MailStore(StoreSettings(data_dir=config.data_dir, fsync=config.fsync,
                                    sync=config.sync, hostname=config.hostname))
    await store.start()
    directory = Directory(config.db_path)
    spool = Spool(config.data_dir, fsync=config.fsync)
    ssl_context = None
    if config.tls_cert.exists() and config.tls_key.exists():
        ssl_context = tlsconfig.server_context(config.tls_cert, config.tls_key)
    sub = config.submission
    dns_settings = DnsSettings(nameservers=config.dns.nameservers, port=config.dns.port,
                               timeout=config.dns.timeout)
    resolver = DnsResolver(dns_settings)
    ma = config.mailauth
    authenticator = InboundAuthenticator(AuthSettings(
        hostname=config.hostname, dns=dns_settings, spf_timeout=ma.spf_timeout,
        always_accept_from=ma.always_accept_from, never_accept_from=ma.never_accept_from,
        trusted_arc_sealers=ma.trusted_arc_sealers, enforce_dmarc=ma.enforce_dmarc,
        reject_spf_fail=ma.reject_spf_fail), resolver) if ma.verify else None
    backend = InboundBackend(
        InboundSettings(hostname=config.hostname, sender_policy=sub.sender_policy,
                        hide_submitter_ip=sub.hide_client_ip, dkim_sign=ma.sign,
                        arc_seal=ma.arc_seal, default_quota=config.imap.quota),
        directory, store, authenticator=authenticator, keystore=dkim_keystore(config))
    runner = QueueRunner(
        RunnerSettings(hostname=config.hostname, poll_interval=config.queue.poll_interval,
                       concurrency=config.delivery.concurrency,
                       per_domain=config.delivery.per_domain),
        spool, retry_schedule(config), client_settings(config), resolver,
        inject=backend.inject, is_local=directory.is_local_domain,
        deliver_local=backend.deliver_queued)
    backend.queue = runner
    if run_queue:
        await runner.start()
    specs = [ListenerSpec(lc.kind, lc.host, lc.port, lc.tls) for lc in config.listeners
             if lc.protocol in ("smtp", "submission")]
    smtp = SmtpServer(smtp_settings(config), specs, backend, ssl_context)
    await smtp.start(sockets)
    running = Running(store=store, directory=directory, smtp=smtp, spool=spool,
                      runner=runner if run_queue else None)
    imap_specs = [ImapListenerSpec(lc.kind, lc.host, lc.port, lc.tls)
                  for lc in config.listeners if lc.protocol == "imap"]
    store.imap.set_default_quota(config.imap.quota)
    if run_queue:  # one indexer per data dir: the first worker runs it, like the queue
        store.imap.start_indexer()
    if imap_specs:
        i = config.imap
        running.imap = ImapServer(
            ImapServerSettings(
                core=ImapConnectionSettings(max_append_size=config.limits.max_message_size),
                hostname=config.hostname, max_connections=i.max_connections,
                max_connections_per_ip=i.max_connections_per_ip, autologout=i.autologout,
                idle_timeout=i.idle_timeout, compress=i.compress,
                tls_handshake_timeout=config.limits.tls_handshake_timeout,
                auth_max_failures=config.submission.auth_max_failures,
                auth_lockout=config.submission.auth_lockout),
            imap_specs, store.imap, backend.credentials_lookup, ssl_context,
            throttle=smtp.throttle)
        await running.imap.start(sockets)
    pop3_specs = [Pop3ListenerSpec(lc.kind, lc.host, lc.port, lc.tls)
                  for lc in config.listeners if lc.protocol == "pop3"]
    if pop3_specs:
        p = config.pop3
        running.pop3 = Pop3Server(
            Pop3ServerSettings(
                core=Pop3CoreSettings(hostname=config.hostname,
                                      plaintext_auth=p.allow_plaintext_auth),
                max_connections=p.max_connections,
                max_connections_per_ip=p.max_connections_per_ip,
                idle_timeout=p.idle_timeout,
                tls_handshake_timeout=config.limits.tls_handshake_timeout,
                auth_max_failures=config.submission.auth_max_failures,
                auth_lockout=config.submission.auth_lockout),
            pop3_specs, store, backend.credentials_lookup, ssl_context,
            throttle=smtp.throttle)  # one throttle: guesses cannot be spread over protocols
        await running.pop3.start(sockets)
    return running


async def stop(running: Running) -> None:
    await running.smtp.shutdown()
    if running.pop3 is not None:
        await running.pop3.shutdown()
    if running.imap is not None:
        await running.imap.shutdown()
    await running.store.imap.stop_indexer()
    if running.runner is not None:
        await running.runner.stop()
    running.spool.close()
    await running.store.close()
    running.directory.close()
    running.stopped.set()


async def _serve(config: Config, sockets: dict[tuple[str, int], socket.socket] | None,
                 run_queue: bool = True) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    running = await start(config, sockets=sockets, run_queue=run_queue)
    log.info("event=started pid=%d hostname=%s", os.getpid(), config.hostname)
    await done.wait()
    log.info("event=stopping pid=%d", os.getpid())
    await stop(running)
    log.info("event=stopped pid=%d", os.getpid())


def _run(coro: Coroutine[Any, Any, None]) -> None:
    # The store's writer threads hand results back to the loop; with CPython's default 5 ms
    # GIL switch interval each hand-off can wait that long, which caps throughput per session.
    sys.setswitchinterval(0.005)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _reuseport_sockets(config: Config) -> dict[tuple[str, int], socket.socket]:
    """Listening sockets with SO_REUSEPORT, one set per worker: the kernel spreads
    connections across the worker processes."""
    out = {}
    for lc in config.listeners:
        family = socket.AF_INET6 if ":" in lc.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((lc.host, lc.port))
        s.listen(4096)
        s.setblocking(False)
        out[(lc.host, lc.port)] = s
    return out


def serve(config: Config) -> int:
    prepare_data_dir(config)
    if config.workers <= 1:
        _run(_serve(config, None))
        return 0
    children: list[int] = []
    for n in range(config.workers):
        sockets = _reuseport_sockets(config)
        pid = os.fork()
        if pid == 0:  # worker
            code = 0
            try:
                _run(_serve(config, sockets, run_queue=n == 0))
            except BaseException:
                log.exception("event=worker_crashed pid=%d", os.getpid())
                code = 1
            finally:
                os._exit(code)
        for s in sockets.values():
            s.close()
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for pid in children:
        _, st = os.waitpid(pid, 0)
        status |= os.waitstatus_to_exitcode(st) != 0
    sys.stderr.flush()
    return int(status)
