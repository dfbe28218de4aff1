"""What the POP3 peer did, as values the session acts on, and the maildrop the core serves.

The core answers most commands itself (STAT, LIST, UIDL, DELE, RSET, NOOP, CAPA and every
protocol error) because they depend only on the maildrop snapshot it holds; those come out
as :class:`Output`. The remaining events need I/O the core must not do — checking a
password, reading a message file, removing messages — and each awaits exactly one answer
from the session.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class MaildropEntry:
    """One message of the maildrop as listed at login (RFC 1939 §5: the message numbers
    are positions in this list and stay fixed for the session).

    ``size`` is the octet count announced by STAT/LIST/RETR; ``unique_id`` is the UIDL
    string (RFC 1939 §7: 1 to 70 characters in 0x21..0x7E, stable across sessions)."""

    uid: int
    size: int
    unique_id: str


@dataclass(frozen=True, slots=True)
class Output:
    """The core answered a command itself: write these bytes. No reply is expected."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Login:
    """USER + PASS (RFC 1939 §7): verify, lock and open the maildrop, then call
    ``accept_login``; or ``send`` a negative reply."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthStart:
    """AUTH with a mechanism the core found acceptable now (RFC 5034 §4). ``initial`` is
    the decoded initial response, ``b""`` for ``=``, ``None`` when absent."""

    mechanism: str
    initial: bytes | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """The decoded client response to our last challenge ("*" is handled by the core)."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Retrieve:
    """RETR (``lines`` None) or TOP (RFC 1939 §5, §7) of a message that is not deleted:
    read it and call ``send_message``, or ``send`` a negative reply."""

    number: int
    entry: MaildropEntry
    lines: int | None = None


@dataclass(frozen=True, slots=True)
class Update:
    """QUIT in the TRANSACTION state (RFC 1939 §6): remove ``deleted`` (UIDs, in message
    order) from the maildrop, then ``send`` +OK, or -ERR if some were not removed."""

    deleted: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StartTls:
    """STLS (RFC 2595 §4): ``send`` +OK, start the handshake, then call ``tls_started``."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side. No reply; RFC 1939 §6: no UPDATE state is entered."""


Event = Output | Login | AuthStart | AuthResponse | Retrieve | Update | StartTls | ConnectionClosed
