"""The seam between the SMTP server and what it serves (DESIGN.md: the Backend).

The server knows sessions, bytes and limits; the Backend knows recipients, relaying and
storage. Policy refusals are `ReplyError(reply)`; anything else raised is our own failure and
the session answers it with 451 4.3.0 so the sender retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from kittiwake.address import Address
from kittiwake.sasl import CredentialLookup
from kittiwake.smtp.replies import Reply


@dataclass(slots=True)
class SessionInfo:
    """What is known about one connection; the Backend reads it, the session writes it."""

    cid: str
    listener: str  # listener kind: "smtp", "submission", "submissions"
    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int
    helo: str = ""
    esmtp: bool = False
    tls_version: str | None = None
    tls_cipher: str | None = None
    authenticated_as: str | None = None

    @property
    def protocol(self) -> str:
        """RFC 3848 / RFC 6531 `with` keyword for the Received header."""
        base = "ESMTP" if self.esmtp else "SMTP"
        if self.tls_version:
            base += "S"
        if self.authenticated_as:
            base += "A"
        return base


@dataclass(slots=True)
class Envelope:
    """One mail transaction: MAIL FROM, its parameters, and the accepted recipients."""

    sender: Address | None = None
    mail_params: dict[str, str | None] = field(default_factory=dict)
    recipients: list[Address] = field(default_factory=list)
    rcpt_params: list[dict[str, str | None]] = field(default_factory=list)
    smtputf8: bool = False


class Backend(Protocol):
    def mail_from(self, session: SessionInfo, envelope: Envelope) -> None:
        """Called with `envelope.sender`/`mail_params` set; raise ReplyError to refuse.

        MAIL and RCPT are synchronous on purpose: they must be cheap lookups (anything slow,
        like SPF or content checks, belongs at end of data), and answering them inline saves
        a task per command on the hottest path."""

    def rcpt_to(
        self, session: SessionInfo, envelope: Envelope, recipient: Address,
        params: dict[str, str | None],
    ) -> None:
        """Raise ReplyError to refuse this recipient (the envelope is left unchanged)."""

    async def data(
        self, session: SessionInfo, envelope: Envelope, content: bytes, queue_id: str
    ) -> Reply:
        """Store or queue the message durably, then return the 250 reply to send."""

    def credentials(self) -> CredentialLookup | None:
        """Where SMTP AUTH checks passwords; None where AUTH is not offered."""
