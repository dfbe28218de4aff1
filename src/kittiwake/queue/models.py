"""Values the outbound queue hands out and takes in: queued messages, recipients, outcomes.

Kept apart from the spool so the runner, the CLI and the DSN glue can share them without
touching SQL.  Replies are stored as text ("550 5.1.1 No such user", continuation lines
after "\\n") so `kittiwake queue show` can print them and a bounce can rebuild the
RFC 3464 Status and Diagnostic-Code from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from kittiwake.dsn import Kind
from kittiwake.smtp.replies import Reply

__all__ = [
    "Delivered",
    "DsnDue",
    "Kind",
    "Origin",
    "Outcome",
    "Permanent",
    "QueueItem",
    "QueueSummary",
    "QueuedMessage",
    "QueuedRecipient",
    "QueuedRecipientSpec",
    "RecipientState",
    "RecoveryReport",
    "Transient",
    "format_reply",
    "parse_reply",
]

Origin = Literal["smtp", "submission", "sendmail", "bounce"]

_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}\Z")


class RecipientState(StrEnum):
    QUEUED = "queued"  # waiting for (another) attempt
    DELIVERED = "delivered"  # the next hop answered 250 to the end of data
    BOUNCED = "bounced"  # permanent failure or expiry; a DSN may be owed
    DELETED = "deleted"  # removed by the administrator (`kittiwake queue delete`)


@dataclass(frozen=True, slots=True)
class QueuedRecipientSpec:
    """A recipient to enqueue, with its RFC 3461 parameters as received (ORCPT stays
    xtext-encoded, exactly as the SMTP core validated it)."""

    recipient: str
    orcpt: str | None = None
    notify: str | None = None


# --- outcomes of one attempt (the runner turns a DeliveryResult into one of these) ---------


@dataclass(frozen=True, slots=True)
class Delivered:
    """Accepted by the next hop.  `remote_dsn` says the next hop advertised DSN and got our
    NOTIFY/ORCPT, so success reports are its job from now on (RFC 3461 §5.2.2); otherwise a
    NOTIFY=SUCCESS recipient is owed a "relayed" DSN by us."""

    reply: Reply
    host: str | None = None
    remote_dsn: bool = False


@dataclass(frozen=True, slots=True)
class Transient:
    """Deferred: try again at `next_attempt` (from RetrySchedule.next_attempt).  `warn`
    (from RetrySchedule.should_warn) asks for the one delay warning for this recipient."""

    reply: Reply
    host: str | None
    next_attempt: float
    warn: bool = False


@dataclass(frozen=True, slots=True)
class Permanent:
    """Given up: a 5xx, or a transient failure that outlived the queue lifetime (then
    `reply` is the last 4xx, and the bounce reports its 4.x.x status, RFC 3463 §3.1)."""

    reply: Reply
    host: str | None


Outcome = Delivered | Transient | Permanent


# --- what the spool hands out -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """The per-message envelope of a queued message.  `sender` is "" for the null path."""

    queue_id: str
    sender: str
    envid: str | None
    ret: str | None
    smtputf8: bool
    eight_bit: bool
    size: int
    arrival: float
    origin: str
    auth_user: str | None


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    id: int
    queue_id: str
    recipient: str
    domain: str  # lower-cased, A-label form: the key for MX lookup and grouping
    orcpt: str | None
    notify: str | None
    state: RecipientState
    attempts: int
    next_attempt: float
    last_reply: Reply | None
    last_host: str | None
    first_seen: float
    warned: bool
    last_attempt: float | None
    dsn: Kind | None  # the notification still owed for this recipient, if any


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One delivery job: recipients of one message at one domain, so a single SMTP
    transaction carries them all (RFC 5321 §3.3: many RCPT TO, one DATA)."""

    message: QueuedMessage
    domain: str
    recipients: tuple[QueuedRecipient, ...]

    @property
    def queue_id(self) -> str:
        return self.message.queue_id


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """A message and all its recipient rows (`kittiwake queue list|show`)."""

    message: QueuedMessage
    recipients: tuple[QueuedRecipient, ...]


@dataclass(frozen=True, slots=True)
class DsnDue:
    """A notification owed to `message.sender` about `recipients`, all of one kind."""

    message: QueuedMessage
    kind: Kind
    recipients: tuple[QueuedRecipient, ...]


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    tmp_removed: int = 0  # partial writes in queue/tmp: never acknowledged
    orphans_removed: int = 0  # complete files without a row: never acknowledged
    lost: tuple[str, ...] = ()  # queue ids whose file vanished: recipients bounced
    leases_cleared: int = 0  # recipients that were in flight when we stopped


# --- reply text -------------------------------------------------------------------------------


def format_reply(reply: Reply) -> str:
    """"550 5.1.1 first line" with any further lines after "\\n"."""
    lines = [" ".join(line.split()) for line in reply.lines] or [""]
    head = f"{reply.code} {reply.enhanced} {lines[0]}" if reply.enhanced else f"{reply.code} {lines[0]}"
    return "\n".join([head.rstrip(), *lines[1:]])


def parse_reply(text: str) -> Reply:
    """Inverse of :func:`format_reply`; tolerant, since a stored row is not worth a crash."""
    first, *rest = text.split("\n")
    code_text, _, remainder = first.partition(" ")
    try:
        code = int(code_text)
    except ValueError:
        return Reply(451, "4.3.0", tuple(text.split("\n")))
    enhanced, _, tail = remainder.partition(" ")
    if not _ENHANCED.match(enhanced):
        enhanced, tail = "", remainder
    lines = (tail, *rest)
    return Reply(code, enhanced, lines[0] if len(lines) == 1 else lines)
