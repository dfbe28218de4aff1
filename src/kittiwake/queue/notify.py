"""Turn a notification the spool says is owed (`DsnDue`) into a DSN message ready to inject.

The glue between queue rows and :func:`kittiwake.dsn.build_dsn`: it maps stored replies to
RFC 3464 Status and Diagnostic-Code, decodes ENVID/ORCPT from xtext (RFC 3461 §4), and says
what envelope the DSN needs.  Pure: time, content and settings are passed in.

Action per kind (RFC 3464 §2.3.3): failure → "failed", delay → "delayed", success →
"relayed" — the queue only hands mail to other MTAs, and we owe a success report only when
the next hop did not take over DSN duty (RFC 3461 §5.2.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from kittiwake.dsn import (
    Action,
    DsnRecipient,
    bounce_allowed,
    build_dsn,
    decode_orcpt,
    xtext_decode,
)
from kittiwake.queue.models import DsnDue, QueuedRecipient
from kittiwake.queue.schedule import RetrySchedule
from kittiwake.smtp.replies import Reply

__all__ = ["Notification", "build_notification", "diagnostic_code", "dsn_status"]

_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}\Z")
_ACTIONS: dict[str, Action] = {"failure": "failed", "delay": "delayed", "success": "relayed"}
_DEFAULT_CLASS = {"failure": "5", "delay": "4", "success": "2"}


@dataclass(frozen=True, slots=True)
class Notification:
    """A DSN and its envelope: MAIL FROM:<> (RFC 3461 §6.2) to `recipient`, the original
    sender.  `eight_bit` asks for BODY=8BITMIME, `smtputf8` for SMTPUTF8 (RFC 6531)."""

    recipient: str
    content: bytes
    eight_bit: bool
    smtputf8: bool
    sender: str = ""


def dsn_status(reply: Reply | None, kind: str) -> str:
    """The RFC 3463 status for the report: the reply's enhanced code when it has one, else
    the class the reply code implies (RFC 3463 §3.1 "X.0.0")."""
    if reply is not None:
        if _ENHANCED.match(reply.enhanced):
            return reply.enhanced
        if 200 <= reply.code < 600:
            return f"{reply.code // 100}.0.0"
    return f"{_DEFAULT_CLASS[kind]}.0.0"


def diagnostic_code(reply: Reply) -> str:
    """RFC 3464 §2.3.6 with diagnostic-type "smtp": the reply as the remote sent it."""
    text = " ".join(" ".join(line.split()) for line in reply.lines)
    parts = [str(reply.code), reply.enhanced, text]
    return "smtp; " + " ".join(p for p in parts if p)


def build_notification(
    due: DsnDue,
    original: bytes | None,
    *,
    reporting_mta: str,
    postmaster: str,
    message_id_domain: str,
    schedule: RetrySchedule,
    now: float,
    max_original_size: int = 1_000_000,
) -> Notification | None:
    """Build the DSN for `due`; None when no DSN may be sent (null sender, RFC 3461 §6.2).

    `original` is the queued content, or None when its file is lost (then the report
    returns nothing of it).
    """
    message = due.message
    if not bounce_allowed(message.sender):
        return None
    recipients = [_recipient(r, due.kind, schedule) for r in due.recipients]
    content = build_dsn(
        reporting_mta=reporting_mta,
        original_envelope_id=xtext_decode(message.envid) if message.envid else None,
        arrival_date=_time(message.arrival),
        original_sender=message.sender,
        recipients=recipients,
        original_message=original or b"",
        ret=message.ret,
        kind=due.kind,
        now=_time(now),
        postmaster=postmaster,
        message_id_domain=message_id_domain,
        max_original_size=max_original_size,
    )
    header_end = content.find(b"\r\n\r\n")
    return Notification(
        recipient=message.sender,
        content=content,
        eight_bit=not content.isascii(),
        smtputf8=not content[:header_end].isascii() or not message.sender.isascii()
        or any(not r.final_recipient.isascii() or not (r.original_recipient or "").isascii()
               for r in recipients),
    )


def _recipient(rcpt: QueuedRecipient, kind: str, schedule: RetrySchedule) -> DsnRecipient:
    original = None
    if rcpt.orcpt:
        addr_type, addr = decode_orcpt(rcpt.orcpt)
        original = f"{addr_type};{addr}"
    host = rcpt.last_host.split("[", 1)[0].strip() if rcpt.last_host else None
    return DsnRecipient(
        final_recipient=rcpt.recipient,
        original_recipient=original,
        action=_ACTIONS[kind],
        status=dsn_status(rcpt.last_reply, kind),
        remote_mta=host or None,
        diagnostic=diagnostic_code(rcpt.last_reply) if rcpt.last_reply else None,
        last_attempt=_time(rcpt.last_attempt) if rcpt.last_attempt is not None else None,
        will_retry_until=_time(schedule.expires_at(rcpt.first_seen)) if kind == "delay" else None,
    )


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
