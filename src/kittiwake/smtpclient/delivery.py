"""Delivering a message to one destination: MX routing, host fallback, connection reuse.

RFC 5321 §5.1: look up the domain's MX records, try the hosts in preference order and each
host's addresses in turn until one takes the message; with no MX the domain itself is the
host. RFC 7505: a null MX means the domain takes no mail (556 5.1.10 at once).

Recipients a host refuses only for now (4xx) are offered to the next host in the same
attempt, as Postfix does; recipients settled (2xx delivered, 5xx refused) are not. When no
host settles a recipient, it stays transient with the last reply seen, so the queue retries.

A `Destination` keeps its last good connection for the next message to the same place
(RFC 5321 §4.5.4.1: reuse beats opening connections), bounded in messages and in time;
`deliver()` is the one-message convenience on top.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from types import TracebackType

from kittiwake.address import AddressError, parse_address
from kittiwake.dns import DnsStatus, DnsTemporaryError, Resolver, ascii_name
from kittiwake.smtp.replies import Reply
from kittiwake.smtpclient.prepare import PreparedMessage, PreparedRecipient
from kittiwake.smtpclient.session import SessionError, SmtpSession
from kittiwake.smtpclient.types import ClientSettings, DeliveryResult, OutboundMessage

log = logging.getLogger(__name__)

NULL_MX = Reply(556, "5.1.10", "Recipient address has null MX")  # RFC 7505 §4.2


def parse_smarthost(text: str, default_port: int) -> tuple[str, int]:
    """"host", "host:port", "[host]:port", "[2001:db8::1]:port" → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad smarthost {text!r}")
        host, rest = text[1:end], text[end + 1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        rest = ":" + port
    else:
        host, rest = text, ""
    if not host:
        raise ValueError(f"bad smarthost {text!r}")
    if not rest:
        return host, default_port
    if not rest.startswith(":") or not rest[1:].isdigit() or not 0 < int(rest[1:]) < 65536:
        raise ValueError(f"bad smarthost port in {text!r}")
    return host, int(rest[1:])


def _ip(text: str) -> str | None:
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def tls_context(settings: ClientSettings) -> ssl.SSLContext | None:
    if settings.tls == "none":
        return None
    context = ssl.create_default_context(cafile=settings.ca_file)
    if not settings.tls_verify:
        # Opportunistic (or encrypt-only) TLS: any certificate is better than plain text
        # (RFC 7435), and refusing self-signed ones would only push mail back to clear text.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Destination:
    """Where mail for one domain goes (or the smarthost); reuses its connection.

    `send()` calls are serialised; use one Destination per concurrent connection wanted.
    Call `close()` (or use `async with`) to QUIT the kept connection.
    """

    def __init__(self, domain: str, settings: ClientSettings, resolver: Resolver) -> None:
        self.domain = ascii_name(domain) if not domain.startswith("[") else domain
        self.settings = settings
        self.resolver = resolver
        self._smarthost = (parse_smarthost(settings.smarthost, settings.port)
                           if settings.smarthost else None)
        self._tls_context = tls_context(settings)
        self._session: SmtpSession | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Destination:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, message: OutboundMessage) -> list[DeliveryResult]:
        """Deliver `message`; one result per recipient, in the message's order."""
        async with self._lock:
            return await self._send(message)

    async def _send(self, message: OutboundMessage) -> list[DeliveryResult]:
        msg = await PreparedMessage.prepare(message)
        final: dict[int, DeliveryResult] = {}
        for r in msg.recipients:
            if r.error is not None:
                final[r.index] = _synth(r, r.error)
            elif self._smarthost is None and r.domain != self.domain.lower():
                raise ValueError(f"recipient {r.as_given} is not in {self.domain}")
        pending = [r for r in msg.recipients if r.index not in final]
        failure = msg.sender_error
        limit = self.settings.max_message_size
        if failure is None and limit and msg.size > limit:
            failure = Reply(552, "5.3.4", f"message size {msg.size} exceeds the limit of {limit}")
        if failure is not None:
            final.update((r.index, _synth(r, failure)) for r in pending)
            pending = []
        if pending:
            transient = await self._walk(msg, pending, final)
            final.update(transient)
        results = [final[i] for i in range(len(msg.recipients))]
        log.debug("event=delivery domain=%s from=<%s> size=%d %s", self.domain, message.sender,
                 msg.size, " ".join(f"rcpt=<{r.recipient}> result={r.reply.code}"
                                    f"{'/' + r.reply.enhanced if r.reply.enhanced else ''}"
                                    f"{' host=' + r.host if r.host else ''}" for r in results))
        return results

    async def _walk(self, msg: PreparedMessage, pending: list[PreparedRecipient],
                    final: dict[int, DeliveryResult]) -> dict[int, DeliveryResult]:
        """Try the kept connection, then the hosts in order; return the unsettled results.

        `last` holds each unsettled recipient's latest transient result: a host that could
        not even be reached also counts, so the reply reported is the last one seen.
        """
        last: dict[int, DeliveryResult] = {}

        async def use(session: SmtpSession) -> list[PreparedRecipient]:
            for index, result in (await session.transact(msg, pending)).items():
                if result.delivered or result.permanent:
                    final[index] = result
                else:
                    last[index] = result
            await self._keep(session)
            return [r for r in pending if r.index not in final]

        kept = self._session
        if kept is not None:
            fresh = kept.usable and kept.messages < self.settings.reuse_limit and \
                asyncio.get_running_loop().time() - kept.opened_at < \
                self.settings.reuse_time_limit
            if fresh:
                pending = await use(kept)
            else:
                await self.close()
        if not pending:
            return {}

        routes = await self._routes()
        if isinstance(routes, Reply):
            return {r.index: _synth(r, routes) for r in pending}
        hosts, port = routes
        dns_trouble: Reply | None = None
        attempts = 0
        for host in hosts:
            if attempts >= self.settings.max_addresses or not pending:
                break
            try:
                addresses = [ip] if (ip := _ip(host)) else await asyncio.wait_for(
                    self.resolver.addresses(host), self.settings.dns_timeout)
            except (DnsTemporaryError, TimeoutError) as exc:
                dns_trouble = Reply(451, "4.4.3", f"cannot look up {host}: {exc or 'timeout'}")
                continue
            for address in addresses:
                if attempts >= self.settings.max_addresses or not pending:
                    break
                attempts += 1
                session = await self._open(host, address, port)
                if isinstance(session, Reply):
                    for r in pending:
                        last[r.index] = _synth(r, session, permanent=False, host=host,
                                               address=address)
                    continue
                pending = await use(session)
        if not pending:
            return {}
        if not last and dns_trouble is None and attempts == 0:
            # Every host name resolved to nothing: the domain (implicit MX) or its MX hosts
            # have no address at all (RFC 5321 §5.1) — that will not fix itself soon.
            why = Reply(550, "5.4.4", f"no address found for the mail hosts of {self.domain}")
            return {r.index: _synth(r, why) for r in pending}
        fallback = dns_trouble or Reply(451, "4.4.1", "no mail host could be reached")
        return {r.index: last.get(r.index) or _synth(r, fallback) for r in pending}

    async def _routes(self) -> tuple[list[str], int] | Reply:
        if self._smarthost is not None:
            return [self._smarthost[0]], self._smarthost[1]
        if self.domain.startswith("["):  # RFC 5321 §4.1.3: an address literal, no DNS
            ip = _ip(self.domain)
            return ([ip], self.settings.port) if ip else Reply(553, "5.1.2", "bad address literal")
        try:
            mx = await asyncio.wait_for(self.resolver.mx(self.domain), self.settings.dns_timeout)
        except TimeoutError:
            return Reply(451, "4.4.3", f"MX lookup for {self.domain} timed out")
        if mx.status is DnsStatus.NULL_MX:
            return NULL_MX
        if mx.status is DnsStatus.NXDOMAIN:
            return Reply(550, "5.1.2", f"domain {self.domain} not found")
        if mx.status is DnsStatus.TEMPFAIL:
            return Reply(451, "4.4.3", f"MX lookup for {self.domain} failed: {mx.detail}")
        return list(mx.hosts), self.settings.port

    async def _open(self, host: str, address: str, port: int) -> SmtpSession | Reply:
        s = self.settings
        modes = [s.tls, "none"] if s.tls == "opportunistic" else [s.tls]
        auth = s.smarthost_auth if self._smarthost is not None else None
        reply = Reply(451, "4.4.1", f"cannot connect to {host}")
        for mode in modes:
            session = SmtpSession(host, address, port, s)
            try:
                await session.connect(tls=mode, tls_context=self._tls_context, auth=auth)
                return session
            except SessionError as exc:
                await session.close()
                reply = exc.reply
                log.info("event=smtp_host_failed peer=%s reason=%r", session.peer, reply.lines[0])
                if not (exc.tls_failed and mode == "opportunistic"):
                    break
                # Like Postfix at level "may": a failed handshake is retried without TLS.
        return reply

    async def _keep(self, session: SmtpSession) -> None:
        """Keep `session` for the next message if it is sound; close what is not kept."""
        old: SmtpSession | None
        if session is self._session:
            if session.usable:
                return
            old, self._session = session, None
        elif session.usable and session.messages < self.settings.reuse_limit:
            old, self._session = self._session, session
        else:
            old = session
        if old is not None:
            await old.close()  # bounded by quit_timeout


def _synth(rcpt: PreparedRecipient, reply: Reply, *, permanent: bool | None = None,
           host: str | None = None, address: str | None = None) -> DeliveryResult:
    """A result no transaction gave (DNS, local checks, hosts that could not be used)."""
    return DeliveryResult(recipient=rcpt.recipient.address, reply=reply,
                          permanent=reply.code >= 500 if permanent is None else permanent,
                          host=host, delivered=False, address=address)


def _domain_of(address: str) -> str | None:
    try:
        return parse_address(address, smtputf8=True).ascii_domain
    except AddressError:
        return None


async def deliver(message: OutboundMessage, settings: ClientSettings,
                  resolver: Resolver) -> list[DeliveryResult]:
    """Deliver one message to its recipients' domain (all in one domain) and QUIT."""
    if not message.recipients:
        return []
    domain = next((d for r in message.recipients if (d := _domain_of(r.address))), "invalid")
    async with Destination(domain, settings, resolver) as destination:
        return await destination.send(message)
