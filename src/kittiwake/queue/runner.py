"""The queue runner: takes due recipients from the spool, delivers them, records outcomes,
and sends the DSNs that are owed (DESIGN.md: queue runner → smtpclient → remote MTA).

It owns scheduling only; SMTP is `smtpclient`'s job and the durable state is the spool's.
The spool is synchronous SQLite, so its calls run in a thread. Connections to a destination
are reused while that destination has work (a `Destination` per domain), and at most
`per_domain` transactions run at once per domain, `concurrency` in total.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kittiwake.dns import Resolver
from kittiwake.dsn import decode_orcpt, xtext_decode
from kittiwake.queue.models import (
    Delivered,
    Origin,
    Outcome,
    Permanent,
    QueuedMessage,
    QueuedRecipientSpec,
    QueueItem,
    Transient,
)
from kittiwake.queue.notify import Notification, build_notification
from kittiwake.queue.schedule import RetrySchedule
from kittiwake.queue.spool import Spool
from kittiwake.smtpclient.delivery import Destination
from kittiwake.smtpclient.types import ClientSettings, DeliveryResult, OutboundMessage, Recipient

log = logging.getLogger(__name__)

Inject = Callable[[Notification], Awaitable[None]]
# Mail queued for one of our own domains (`kittiwake sendmail`, DSNs): the Backend stores it.
LocalDelivery = Callable[[QueuedMessage, list[str], bytes], Awaitable[list[DeliveryResult]]]


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    hostname: str
    poll_interval: float = 5.0  # how often the spool is checked without a wake-up
    concurrency: int = 20
    per_domain: int = 5
    batch: int = 100
    lease: float = 1800.0  # must outlast one attempt (RFC 5321 timeouts add up to ~25 min)
    # Messages one delivery task (one connection) is handed at a time: enough to make the
    # connection worth opening, few enough that a backlog spreads over `per_domain`
    # connections instead of queueing behind one.
    per_connection: int = 20


class QueueRunner:
    def __init__(
        self, settings: RunnerSettings, spool: Spool, schedule: RetrySchedule,
        client: ClientSettings, resolver: Resolver, inject: Inject,
        clock: Callable[[], float] = time.time,
        is_local: Callable[[str], bool] = lambda domain: False,
        deliver_local: LocalDelivery | None = None,
    ) -> None:
        self.is_local = is_local
        self.deliver_local = deliver_local
        self.settings = settings
        self.spool = spool
        self.schedule = schedule
        self.client = client
        self.resolver = resolver
        self.inject = inject
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._domain_slots: dict[str, asyncio.Semaphore] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def enqueue(self, queue_id: str, content: bytes, sender: str,
                      recipients: list[QueuedRecipientSpec], *, envid: str | None = None,
                      ret: str | None = None, smtputf8: bool = False, eight_bit: bool = False,
                      origin: Origin = "smtp", auth_user: str | None = None) -> None:
        """Durably queue a message (returns once fsynced and committed), then wake up."""
        await asyncio.to_thread(
            self.spool.enqueue, queue_id, content, sender, recipients, envid=envid, ret=ret,
            smtputf8=smtputf8, eight_bit=eight_bit, origin=origin, auth_user=auth_user,
            now=self.clock())
        self.wake()

    def wake(self) -> None:
        """New mail was queued or `queue flush` was asked: look now, not at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        report = await asyncio.to_thread(self.spool.recover, self.clock())
        if report.lost:
            log.error("event=queue_lost_files ids=%s", ",".join(report.lost))
        log.info("event=queue_started tmp_removed=%d orphans_removed=%d leases_cleared=%d",
                 report.tmp_removed, report.orphans_removed, report.leases_cleared)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in list(self._running):
            t.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _loop(self) -> None:
        last_cleanup = 0.0
        while not self._stopping:
            try:
                await self.run_once()
                now = self.clock()
                if now - last_cleanup > 300:
                    last_cleanup = now
                    await asyncio.to_thread(self.spool.cleanup, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=queue_error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            self._wake.clear()

    async def run_once(self) -> int:
        """Start deliveries for everything due; send owed DSNs. Returns groups started."""
        await self._send_dsns()
        s = self.settings
        free = s.concurrency - len(self._running)
        if free <= 0:
            return 0
        items = await asyncio.to_thread(
            self.spool.due, self.clock(), min(free * s.per_connection, s.batch),
            lease=s.lease, max_recipients=self.client.max_recipients)
        by_domain: dict[str, list[QueueItem]] = {}
        for item in items:
            by_domain.setdefault(item.domain, []).append(item)
        for domain, group in by_domain.items():
            # A backlog for one domain goes out over several connections at once (up to
            # `per_domain`, which the domain's semaphore enforces), each reused for its
            # share (RFC 5321 §4.5.4.1 asks for reuse; one connection per run was slow).
            tasks = max(1, min(s.per_domain, free, -(-len(group) // s.per_connection)))
            for share in (group[i::tasks] for i in range(tasks)):
                task = asyncio.get_running_loop().create_task(self._deliver_domain(domain, share))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        return len(items)

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait for deliveries in flight (tests, `queue flush`)."""
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            await asyncio.wait(list(self._running), timeout=deadline - time.monotonic())
        await self._send_dsns()

    async def _deliver_domain(self, domain: str, items: list[QueueItem]) -> None:
        if self.deliver_local is not None and self.is_local(domain):
            for item in items:
                try:
                    content = await asyncio.to_thread(self.spool.read_message, item.queue_id)
                    results = await self.deliver_local(
                        item.message, [r.recipient for r in item.recipients], content)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("event=local_delivery_error queue_id=%s", item.queue_id)
                    continue  # the lease expires and the recipients are tried again
                await self._record(item, results)
            self._wake.set()
            return
        sem = self._domain_slots.setdefault(domain, asyncio.Semaphore(self.settings.per_domain))
        async with sem, self._slots:
            dest = Destination(domain, self.client, self.resolver)
            try:
                for item in items:  # one connection, reused for each message
                    try:
                        results = await dest.send(self._outbound(item))
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("event=delivery_error queue_id=%s domain=%s",
                                      item.queue_id, domain)
                        continue  # the lease expires and the recipients are tried again
                    await self._record(item, results)
            finally:
                with contextlib.suppress(Exception):
                    await dest.close()
        self._wake.set()  # DSNs may be owed now

    def _outbound(self, item: QueueItem) -> OutboundMessage:
        m = item.message
        rcpts = []
        for r in item.recipients:
            orcpt = None
            if r.orcpt:
                with contextlib.suppress(ValueError):
                    kind, addr = decode_orcpt(r.orcpt)
                    orcpt = f"{kind};{addr}"
            rcpts.append(Recipient(r.recipient, notify=r.notify, orcpt=orcpt))
        # The spool keeps ENVID as it arrived (xtext, RFC 3461 §4); OutboundMessage wants it
        # decoded, as the client encodes it again on the wire.
        return OutboundMessage(
            sender=m.sender, recipients=tuple(rcpts), content=self.spool.message_path(m.queue_id),
            envid=xtext_decode(m.envid) if m.envid else None, ret=m.ret, smtputf8=m.smtputf8,
            eight_bit=m.eight_bit)

    async def _record(self, item: QueueItem, results: list[DeliveryResult]) -> None:
        now = self.clock()
        by_rcpt = {r.recipient: r for r in item.recipients}
        outcomes: list[tuple[str, Outcome]] = []
        for res in results:
            queued = by_rcpt.get(res.recipient)
            if queued is None:
                continue
            outcome: Outcome
            if res.delivered:
                outcome = Delivered(res.reply, res.host, remote_dsn=not res.relayed_without_dsn)
            elif res.permanent:
                outcome = Permanent(res.reply, res.host)
            else:
                nxt = self.schedule.next_attempt(queued.first_seen, queued.attempts + 1, now,
                                                 jitter=random.random())
                if nxt is None:  # expired: the last temporary failure becomes the bounce
                    outcome = Permanent(res.reply, res.host)
                else:
                    warn = self.schedule.should_warn(queued.first_seen, queued.warned, now)
                    outcome = Transient(res.reply, res.host, nxt, warn=warn)
            outcomes.append((res.recipient, outcome))
            log.info("event=delivery queue_id=%s to=<%s> host=%s result=\"%d %s\" outcome=%s",
                     item.queue_id, res.recipient, res.host or "-", res.reply.code,
                     res.reply.enhanced, type(outcome).__name__.lower())
        await asyncio.to_thread(self.spool.record_results, item.queue_id, outcomes, now)

    async def _send_dsns(self) -> None:
        owed = await asyncio.to_thread(self.spool.pending_dsns)
        for due in owed:
            try:
                original: bytes | None = await asyncio.to_thread(
                    self.spool.read_message, due.message.queue_id)
            except OSError:
                original = None
            note = build_notification(
                due, original, reporting_mta=self.settings.hostname,
                postmaster=f"MAILER-DAEMON@{self.settings.hostname}",
                message_id_domain=self.settings.hostname, schedule=self.schedule,
                now=self.clock())
            if note is not None:
                try:
                    await self.inject(note)
                except Exception:
                    log.exception("event=dsn_inject_failed queue_id=%s", due.message.queue_id)
                    continue  # stays owed; tried again on the next run
                log.info("event=dsn queue_id=%s kind=%s to=<%s>", due.message.queue_id,
                         due.kind, note.recipient)
            await asyncio.to_thread(self.spool.dsn_done, due.message.queue_id, due.kind,
                                    [r.id for r in due.recipients])
