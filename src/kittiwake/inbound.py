"""The SMTP Backend: recipient policy and local delivery (DESIGN.md, "The way a message travels").

Every listener's sessions end here. RCPT is accepted only for our domains' accounts and
aliases, or for anyone when the client authenticated; never an open relay. At end of data
each local recipient gets its own copy with Return-Path, Delivered-To and Received prepended,
and the 250 goes out only when every copy is durable.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from kittiwake.address import Address
from kittiwake.message.headers import delivered_to_header, received_header, return_path_header
from kittiwake.smtp import replies as R
from kittiwake.smtp.replies import Reply, ReplyError
from kittiwake.smtpserver.backend import Envelope, SessionInfo
from kittiwake.store.directory import Directory
from kittiwake.store.mailstore import MailStore
from kittiwake.store.models import DeliveryRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundSettings:
    hostname: str


class InboundBackend:
    def __init__(self, settings: InboundSettings, directory: Directory, store: MailStore) -> None:
        self.settings = settings
        self.directory = directory
        self.store = store

    async def mail_from(self, session: SessionInfo, envelope: Envelope) -> None:
        return None

    async def rcpt_to(
        self, session: SessionInfo, envelope: Envelope, recipient: Address,
        params: dict[str, str | None],
    ) -> None:
        domain = recipient.domain
        if self.directory.is_local_domain(domain):
            resolution = self.directory.resolve(_key(recipient))
            if not resolution.local:
                # Remote alias targets need the outbound queue; until it exists they are
                # refused like unknown users rather than accepted and lost.
                raise ReplyError(R.NO_SUCH_USER)
            return
        raise ReplyError(R.RELAY_DENIED)

    async def data(
        self, session: SessionInfo, envelope: Envelope, content: bytes, queue_id: str
    ) -> Reply:
        now = dt.datetime.now(dt.UTC).astimezone()
        sender = str(envelope.sender) if envelope.sender is not None else None
        return_path = return_path_header(sender)
        requests: list[DeliveryRequest] = []
        seen: set[str] = set()
        for rcpt in envelope.recipients:
            for account in self.directory.resolve(_key(rcpt)).local:
                if account in seen:  # two aliases of one account: one copy
                    continue
                seen.add(account)
                received = received_header(
                    from_helo=session.helo or session.peer_ip, from_ip=session.peer_ip,
                    from_rdns=None, by_host=self.settings.hostname,
                    protocol=_with_keyword(session, envelope), queue_id=queue_id,
                    recipient=str(rcpt),
                    tls=f"{session.tls_version} cipher {session.tls_cipher}"
                    if session.tls_version else None,
                    when=now,
                )
                head = return_path + delivered_to_header(str(rcpt)) + received
                requests.append(DeliveryRequest(account=account, content=head + content))
        if not requests:
            raise ReplyError(R.NO_SUCH_USER)
        await self.store.deliver_many(requests)
        return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


def _key(address: Address) -> str:
    return f"{address.local}@{address.domain}"


def _with_keyword(session: SessionInfo, envelope: Envelope) -> str:
    proto = session.protocol
    # RFC 6531 §3.7.3: UTF8SMTP[S][A] when the transaction used SMTPUTF8.
    if envelope.smtputf8:
        proto = "UTF8" + proto.replace("ESMTP", "SMTP")
    return proto
