"""Events the SMTP server core reports: what the peer did (DESIGN.md, sans-IO cores).

The session answers each event with exactly one `ServerConnection.send(reply)` (except
`DataChunk`, which needs no reply, and `ConnectionClosed`). The core does not parse the next
command until the previous event has been answered, so state changes made by the reply (a
250 to MAIL opens a transaction; a 5xx does not) apply to what follows in a pipelined batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kittiwake.address import Address
from kittiwake.smtp.replies import Reply


@dataclass(frozen=True, slots=True)
class Helo:
    """HELO or EHLO. `name` is the domain or address literal as sent."""

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class MailFrom:
    """MAIL FROM. `sender` is None for the null reverse-path <>.

    `params` keys are upper-cased ESMTP keywords (SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH);
    values are as sent (None for keywords without '='). The core has already checked syntax,
    SIZE against the limit, and BODY/SMTPUTF8 values.
    """

    sender: Address | None
    params: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RcptTo:
    """RCPT TO. `params` keys upper-cased (NOTIFY, ORCPT)."""

    recipient: Address
    params: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DataStart:
    """DATA accepted by the state machine; answer START_DATA (354) or refuse."""


@dataclass(frozen=True, slots=True)
class BdatStart:
    """First BDAT chunk of a transaction arrived (RFC 3030). No reply expected: the chunk
    itself will produce DataChunk events and then BdatChunkEnd or DataEnd."""


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Message content, already dot-unstuffed (DATA) or exactly as sent (BDAT). No reply."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BdatChunkEnd:
    """A non-LAST BDAT chunk was fully received; answer with 250 (e.g. OK)."""

    size: int


@dataclass(frozen=True, slots=True)
class DataEnd:
    """End of message (<CRLF>.<CRLF> or BDAT LAST).

    `error` is set when the core found the message unacceptable while streaming (too big,
    bare CR/LF, over-long line): the session must send that reply (it discards the message).
    Otherwise the session stores the message and sends 250 or a policy refusal.
    """

    error: Reply | None = None


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    """Answer with BYE; after that the core is closed and the session closes the transport."""


@dataclass(frozen=True, slots=True)
class Vrfy:
    argument: str


@dataclass(frozen=True, slots=True)
class Help:
    argument: str


@dataclass(frozen=True, slots=True)
class StartTls:
    """Answer READY_FOR_TLS, then perform the handshake and call `tls_started()`.
    The core discards every byte it had buffered after the STARTTLS line (RFC 3207 §4.2)."""


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH mechanism [initial-response] (RFC 4954). `initial` is the base64 text as sent
    ("=" means an empty initial response), None when absent. The session runs the SASL
    exchange: answer 334 challenges with `send(Reply(334, "", b64))`, then the core delivers
    each client line as AuthResponse."""

    mechanism: str
    initial: str | None


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """A client line during an AUTH exchange (base64 text, or "*" to cancel)."""

    line: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol; send `reply`. If `reply.code == 421` the core is closed."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed (receive_data(b"")). No reply."""


Event = (
    Helo | MailFrom | RcptTo | DataStart | BdatStart | DataChunk | BdatChunkEnd | DataEnd | Rset
    | Noop | Quit | Vrfy | Help | StartTls | Auth | AuthResponse | ProtocolError | ConnectionClosed
)
