"""The SMTP Backend: recipient policy and local delivery (DESIGN.md, "The way a message travels").

Every listener's sessions end here. RCPT is accepted only for our domains' accounts and
aliases, or for anyone when the client authenticated; never an open relay. At end of data
each local recipient gets its own copy with Return-Path, Delivered-To and Received prepended,
and the 250 goes out only when every copy is durable.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Protocol

from kittiwake.address import Address
from kittiwake.dsn import DsnRecipient, build_dsn, decode_orcpt, should_notify, xtext_decode
from kittiwake.mailauth import (
    DMARC_REJECTED,
    Action,
    DkimKeyStore,
    InboundAuthenticator,
    seal_forwarded_async,
    sign_outbound_async,
)
from kittiwake.message.headers import (
    date_header,
    delivered_to_header,
    get_field,
    message_id,
    received_header,
    return_path_header,
    split_header,
    unfold,
)
from kittiwake.queue.models import Origin, QueuedMessage, QueuedRecipientSpec
from kittiwake.queue.notify import Notification
from kittiwake.sasl import CredentialLookup, ScramCredentials
from kittiwake.smtp import replies as R
from kittiwake.smtp.replies import Reply, ReplyError
from kittiwake.smtpclient.types import DeliveryResult
from kittiwake.smtpserver.backend import Envelope, SessionInfo
from kittiwake.store.directory import Directory
from kittiwake.store.mailstore import MailStore
from kittiwake.store.models import Account, DeliveryRequest, Resolution

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundSettings:
    hostname: str
    # "own": authenticated users send only as their own addresses (accounts and aliases that
    # lead to them), in MAIL FROM and in From:; "any": no check (a trusted relay setup).
    sender_policy: str = "own"
    hide_submitter_ip: bool = False
    dkim_sign: bool = True  # submitted mail and our bounces (RFC 6376)
    arc_seal: bool = True  # mail forwarded to external alias targets (RFC 8617)
    default_quota: int = 0  # bytes per account without its own quota (0 = none)


class DirectoryCredentials:
    """The SASL credential lookup over the account directory (shared by SMTP, IMAP, POP3)."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    def verify_password(self, username: str, password: str) -> bool:
        return self._directory.verify_password(username, password)

    def scram_credentials(self, username: str) -> ScramCredentials | None:
        text = self._directory.scram_credentials(username)
        if not text:
            return None
        try:
            return ScramCredentials.from_text(text)
        except ValueError:
            log.warning("event=bad_scram_record user=%s", username)
            return None


class DirectoryCache:
    """A few seconds' memo of domain and recipient lookups.

    Every message asks the same questions at RCPT and again at end of data; answering them
    from SQLite each time was the largest cost per message. Only positive answers are kept,
    so a new user works at once; a removal takes effect within `ttl` seconds.
    """

    def __init__(self, directory: Directory, ttl: float = 5.0, max_entries: int = 10000) -> None:
        self._directory = directory
        self._ttl = ttl
        self._max = max_entries
        self._domains: dict[str, tuple[float, bool]] = {}
        self._resolved: dict[str, tuple[float, Resolution]] = {}
        self._accounts: dict[str, tuple[float, Account]] = {}

    def is_local_domain(self, name: str) -> bool:
        now = time.monotonic()
        hit = self._domains.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        if len(self._domains) >= self._max:
            self._domains.clear()
        value = self._directory.is_local_domain(name)
        if value:  # only positive answers: a new domain or user works at once
            self._domains[name] = (now + self._ttl, value)
        return value

    def account(self, address: str) -> Account | None:
        """Quota and usage; a few seconds stale at most, which a quota can afford."""
        now = time.monotonic()
        hit = self._accounts.get(address)
        if hit is not None and hit[0] > now:
            return hit[1]
        if len(self._accounts) >= self._max:
            self._accounts.clear()
        value = self._directory.account(address)
        if value is not None:
            self._accounts[address] = (now + self._ttl, value)
        return value

    def resolve(self, address: str) -> Resolution:
        now = time.monotonic()
        hit = self._resolved.get(address)
        if hit is not None and hit[0] > now:
            return hit[1]
        if len(self._resolved) >= self._max:
            self._resolved.clear()
        value = self._directory.resolve(address)
        if value:
            self._resolved[address] = (now + self._ttl, value)
        return value


class InboundBackend:
    def __init__(self, settings: InboundSettings, directory: Directory, store: MailStore,
                 queue: OutboundQueue | None = None, *,
                 authenticator: InboundAuthenticator | None = None,
                 keystore: DkimKeyStore | None = None) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.keystore = keystore
        self.directory = directory
        self.store = store
        self.queue = queue
        self.lookup = DirectoryCache(directory)
        self._credentials = DirectoryCredentials(directory)

    def credentials(self) -> CredentialLookup | None:
        return self._credentials

    @property
    def credentials_lookup(self) -> CredentialLookup:
        """The same lookup for the IMAP and POP3 listeners."""
        return self._credentials

    def owns(self, user: str, address: str) -> bool:
        """True when `address` is the user's account or an alias that delivers to it."""
        if address.lower() == user.lower():
            return True
        return user.lower() in (a.lower() for a in self.lookup.resolve(address).local)

    def mail_from(self, session: SessionInfo, envelope: Envelope) -> None:
        if session.listener == "smtp":
            return None
        # Submission (RFC 6409 §4.3): only authenticated users, only as themselves.
        user = session.authenticated_as
        if user is None:
            raise ReplyError(R.AUTH_REQUIRED)
        if self.settings.sender_policy == "any":
            return None
        if envelope.sender is None or not self.owns(user, _key(envelope.sender)):
            raise ReplyError(R.SENDER_NOT_OWNED)
        return None

    def rcpt_to(
        self, session: SessionInfo, envelope: Envelope, recipient: Address,
        params: dict[str, str | None],
    ) -> None:
        submission = session.listener != "smtp"
        if submission and session.authenticated_as is None:
            raise ReplyError(R.AUTH_REQUIRED)
        if self.lookup.is_local_domain(recipient.domain):
            resolution = self.lookup.resolve(_key(recipient))
            if not resolution:
                raise ReplyError(R.NO_SUCH_USER)
            self._check_quota(resolution.local, envelope)
            if resolution.remote and self.queue is None:
                raise ReplyError(R.NO_SUCH_USER)  # no outbound queue in this process
            return
        if session.authenticated_as is None:
            raise ReplyError(R.RELAY_DENIED)  # never an open relay
        if self.queue is None:
            raise ReplyError(R.RELAY_DENIED)

    def _check_quota(self, accounts: tuple[str, ...], envelope: Envelope) -> None:
        """RFC 9208 §4.1 / RFC 3463 X.2.2: a full mailbox is a temporary failure (452), so
        the sender retries once the owner has made room."""
        size = envelope.mail_params.get("SIZE")
        declared = int(size) if size and size.isdigit() else 0
        for address in accounts:
            account = self.lookup.account(address)
            if account is None:
                continue
            limit = account.quota_bytes or self.settings.default_quota
            if limit and account.used_bytes + declared >= limit:
                raise ReplyError(R.OVER_QUOTA)

    async def data(
        self, session: SessionInfo, envelope: Envelope, content: bytes, queue_id: str
    ) -> Reply:
        now = dt.datetime.now(dt.UTC).astimezone()
        mailbox = "INBOX"
        forwarding_domain: str | None = None
        if session.listener != "smtp":
            content = self._submission_content(session, content, now)
            if self.settings.dkim_sign and self.keystore is not None:
                content = await sign_outbound_async(content, None, self.keystore)
        elif self.authenticator is not None:
            # RFC 7489 §6.6: SPF, DKIM and DMARC on the message as received, at end of DATA.
            verdict = await self.authenticator.authenticate(
                content, session.peer_ip, session.helo or "",
                str(envelope.sender) if envelope.sender is not None else "")
            log.info("event=mailauth cid=%s queue_id=%s %s", session.cid, queue_id,
                     verdict.summary())
            if verdict.action is Action.REJECT:
                raise ReplyError(verdict.reply or DMARC_REJECTED)
            if verdict.action is Action.QUARANTINE:
                mailbox = "Junk"
            content = verdict.content
        local: dict[str, Address] = {}  # account → the recipient address that led there
        remote: list[tuple[str, dict[str, str | None]]] = []
        delivered: list[tuple[Address, dict[str, str | None]]] = []  # owed a success DSN
        for rcpt, params in zip(envelope.recipients, envelope.rcpt_params, strict=True):
            if self.lookup.is_local_domain(rcpt.domain):
                resolution = self.lookup.resolve(_key(rcpt))
                for account in resolution.local:
                    local.setdefault(account, rcpt)  # two aliases of one account: one copy
                if resolution.local and should_notify("success", params.get("NOTIFY")):
                    delivered.append((rcpt, params))
                # Forwarding keeps NOTIFY; ORCPT records the address the sender used.
                if resolution.remote:
                    forwarding_domain = forwarding_domain or rcpt.domain
                    fwd = dict(params)
                    fwd.setdefault("ORCPT", "rfc822;" + xtext_encode(str(rcpt)))
                    remote.extend((target, fwd) for target in resolution.remote)
            else:
                remote.append((str(rcpt), params))
        if not local and not remote:
            raise ReplyError(R.NO_SUCH_USER)
        if remote:  # queued first: a crash before the 250 at worst duplicates, never loses
            outgoing = content
            if (forwarding_domain is not None and session.listener == "smtp"
                    and self.settings.arc_seal and self.keystore is not None):
                # RFC 8617: our seal vouches for the results we saw, so DMARC at the next
                # hop can trust a message that forwarding broke.
                outgoing = await seal_forwarded_async(content, forwarding_domain,
                                                      self.keystore, self.settings.hostname)
            await self._enqueue(session, envelope, outgoing, queue_id, remote, now)
        if local:
            requests = [
                DeliveryRequest(account=account, mailbox=mailbox, content=self._local_headers(
                    session, envelope, queue_id, rcpt, now) + content)
                for account, rcpt in local.items()
            ]
            await self.store.deliver_many(requests)
            if delivered and envelope.sender is not None:
                await self._report_delivery(envelope, content, delivered, now)
        return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")

    async def _report_delivery(self, envelope: Envelope, content: bytes,
                               delivered: list[tuple[Address, dict[str, str | None]]],
                               now: dt.datetime) -> None:
        """RFC 3461 §4.1: NOTIFY=SUCCESS asks for a DSN on successful delivery; we are the
        final hop, so the sender gets a "delivered" report (RFC 3464 §2.3.3) carrying the
        ENVID and ORCPT it gave (RFC 3464 §2.2.1, §2.3.1). The message is stored already,
        so a failure here is logged, not answered: a 4xx now would make the client send the
        message twice."""
        sender = str(envelope.sender)
        params = envelope.mail_params
        envid = params.get("ENVID")
        recipients = []
        for rcpt, rcpt_params in delivered:
            orcpt = rcpt_params.get("ORCPT")
            original = None
            if orcpt:
                kind, addr = decode_orcpt(orcpt)
                original = f"{kind};{addr}"
            recipients.append(DsnRecipient(
                final_recipient=str(rcpt), original_recipient=original, action="delivered",
                status="2.0.0", diagnostic="smtp; 250 2.0.0 delivered to mailbox"))
        try:
            report = build_dsn(
                reporting_mta=self.settings.hostname,
                original_envelope_id=xtext_decode(envid) if envid else None,
                arrival_date=now, original_sender=sender, recipients=recipients,
                original_message=content, ret=params.get("RET"), kind="success", now=now,
                postmaster=f"MAILER-DAEMON@{self.settings.hostname}",
                message_id_domain=self.settings.hostname)
            header_end = report.find(b"\r\n\r\n")
            await self.inject(Notification(
                recipient=sender, content=report, eight_bit=not report.isascii(),
                smtputf8=not report[:header_end].isascii() or not sender.isascii()))
        except Exception:
            log.exception("event=dsn_failed kind=success to=<%s>", sender)
            return
        log.info("event=dsn kind=success to=<%s> nrcpt=%d", sender, len(recipients))

    def _received(self, session: SessionInfo, envelope: Envelope, queue_id: str,
                  rcpt: str | None, now: dt.datetime) -> bytes:
        hide = session.listener != "smtp" and self.settings.hide_submitter_ip
        return received_header(
            from_helo=session.helo or session.peer_ip, from_ip=session.peer_ip,
            from_rdns=None, by_host=self.settings.hostname,
            protocol=_with_keyword(session, envelope), queue_id=queue_id,
            recipient=rcpt,
            tls=f"{session.tls_version} cipher {session.tls_cipher}"
            if session.tls_version else None,
            when=now, hide_ip=hide,
        )

    def _local_headers(self, session: SessionInfo, envelope: Envelope, queue_id: str,
                       rcpt: Address, now: dt.datetime) -> bytes:
        sender = str(envelope.sender) if envelope.sender is not None else None
        return (return_path_header(sender) + delivered_to_header(str(rcpt))
                + self._received(session, envelope, queue_id, str(rcpt), now))

    async def _enqueue(self, session: SessionInfo, envelope: Envelope, content: bytes,
                       queue_id: str, remote: list[tuple[str, dict[str, str | None]]],
                       now: dt.datetime) -> None:
        assert self.queue is not None
        specs = [QueuedRecipientSpec(addr, orcpt=params.get("ORCPT"), notify=params.get("NOTIFY"))
                 for addr, params in remote]
        one = remote[0][0] if len(remote) == 1 else None
        received = self._received(session, envelope, queue_id, one, now)
        params = envelope.mail_params
        await self.queue.enqueue(
            queue_id, received + content,
            str(envelope.sender) if envelope.sender is not None else "", specs,
            envid=params.get("ENVID"), ret=params.get("RET"), smtputf8=envelope.smtputf8,
            eight_bit=(params.get("BODY") or "").upper() == "8BITMIME",
            origin="smtp" if session.listener == "smtp" else "submission",
            auth_user=session.authenticated_as)

    def _submission_content(self, session: SessionInfo, content: bytes, now: dt.datetime
                            ) -> bytes:
        """RFC 6409 §8: complete Date and Message-ID; and From: must be the user's own."""
        header, _ = split_header(content)
        user = session.authenticated_as
        if user is not None and self.settings.sender_policy == "own":
            from_field = get_field(header, "from")
            if from_field is None:
                raise ReplyError(R.FROM_MISSING)
            for addr in _header_addresses(from_field):
                if not self.owns(user, addr):
                    raise ReplyError(R.FROM_NOT_OWNED)
        extra = b""
        if get_field(header, "date") is None:
            extra += date_header(now)
        if get_field(header, "message-id") is None:
            extra += b"Message-ID: " + message_id(self.settings.hostname).encode() + b"\r\n"
        return extra + content

    async def deliver_queued(self, message: QueuedMessage, recipients: list[str],
                             content: bytes) -> list[DeliveryResult]:
        """Store queued mail addressed to our own domains (from `kittiwake sendmail`)."""
        results: list[DeliveryResult] = []
        requests: list[DeliveryRequest] = []
        head = return_path_header(message.sender or None)
        forward: list[str] = []
        for rcpt in recipients:
            resolution = self.lookup.resolve(rcpt)
            if not resolution:
                results.append(DeliveryResult(rcpt, R.NO_SUCH_USER, permanent=True,
                                              host=self.settings.hostname, delivered=False))
                continue
            requests.extend(DeliveryRequest(account=a, content=head + delivered_to_header(rcpt)
                                            + content) for a in resolution.local)
            forward.extend(resolution.remote)
            results.append(DeliveryResult(rcpt, R.MESSAGE_ACCEPTED, permanent=False,
                                          host=self.settings.hostname, delivered=True))
        if forward and self.queue is not None:
            # A retry after a crash must not collide with a copy queued by the first try:
            # a second copy beats a retry loop on a duplicate id (never lose, may duplicate).
            await self.queue.enqueue(f"F{message.queue_id}{secrets.token_hex(3)}", content,
                                     message.sender,
                                     [QueuedRecipientSpec(a) for a in forward],
                                     smtputf8=message.smtputf8, eight_bit=message.eight_bit,
                                     origin="smtp", auth_user=None)
        if requests:
            await self.store.deliver_many(requests)
        return results

    async def inject(self, note: Notification) -> None:
        """Deliver a DSN the queue owes: locally when the sender is ours, else queue it.

        The envelope sender is null (RFC 3461 §6.2), so a DSN can never cause another one.
        """
        now = dt.datetime.now(dt.UTC).astimezone()
        resolution = self.lookup.resolve(note.recipient)
        if resolution.local:
            head = return_path_header(None) + delivered_to_header(note.recipient)
            await self.store.deliver_many([
                DeliveryRequest(account=account, content=head + note.content)
                for account in resolution.local])
            return
        if self.queue is None:
            log.warning("event=dsn_dropped to=<%s> reason=no_queue", note.recipient)
            return
        # Unique even for two reports in one microsecond (concurrent sessions).
        queue_id = f"B{int(now.timestamp() * 1e6):x}{secrets.token_hex(3)}"
        content = note.content
        if self.settings.dkim_sign and self.keystore is not None:
            content = await sign_outbound_async(content, None, self.keystore)
        await self.queue.enqueue(queue_id, content, "", [QueuedRecipientSpec(note.recipient)],
                                 smtputf8=note.smtputf8, eight_bit=note.eight_bit,
                                 origin="bounce", auth_user=None)


class OutboundQueue(Protocol):
    """The part of the queue the Backend uses: durable enqueue, then wake the runner."""

    async def enqueue(self, queue_id: str, content: bytes, sender: str,
                      recipients: list[QueuedRecipientSpec], *, envid: str | None = None,
                      ret: str | None = None, smtputf8: bool = False, eight_bit: bool = False,
                      origin: Origin = "smtp", auth_user: str | None) -> None: ...


def _header_addresses(value: bytes) -> list[str]:
    """The addr-specs of an address-list header (RFC 5322 §3.4), groups included."""
    text = unfold(value).decode("utf-8", "replace")
    return [addr for _, addr in getaddresses([text]) if addr]


def xtext_encode(text: str) -> str:
    """RFC 3461 §4: "+" and "=" and anything outside printable ASCII become +XX."""
    out = []
    for byte in text.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (43, 61):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def _key(address: Address) -> str:
    return f"{address.local}@{address.domain}"


def _with_keyword(session: SessionInfo, envelope: Envelope) -> str:
    proto = session.protocol
    # RFC 6531 §3.7.3: UTF8SMTP[S][A] when the transaction used SMTPUTF8.
    if envelope.smtputf8:
        proto = "UTF8" + proto.replace("ESMTP", "SMTP")
    return proto
