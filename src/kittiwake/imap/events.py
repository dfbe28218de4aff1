"""What :meth:`ServerConnection.next_event` reports besides commands: what the peer did
(DESIGN.md, sans-IO cores).

A command (:mod:`kittiwake.imap.commands`) is answered by the session with untagged
data and, finally, one tagged completion passed through ``send``.  The other events:

* :class:`ParseError` — the peer broke the protocol; send ``event.response`` (a tagged
  BAD when the tag is known, RFC 9051 §7.1.3). Count these; after too many, close.
* :class:`SendContinuation` — write ``event.data`` (``+ ...``) now: the client waits for
  it before sending a synchronising literal (RFC 9051 §4.3, §7.6).
* :class:`IdleDone` — the client ended IDLE; send the IDLE command's tagged OK.
* :class:`AuthenticateResponse` — one decoded SASL response line; answer with another
  ``Continuation(data=...)`` or the tagged completion.
* :class:`ConnectionClosed` — the peer closed; nothing more will come.
"""

from __future__ import annotations

from dataclasses import dataclass

from kittiwake.imap.commands import Command
from kittiwake.imap.response import ResponseCode, Status, Tagged, Untagged

__all__ = [
    "AuthenticateResponse",
    "ConnectionClosed",
    "Event",
    "IdleDone",
    "ParseError",
    "SendContinuation",
]


@dataclass(frozen=True, slots=True)
class ParseError:
    """A command (or line) that could not be accepted.

    ``tag`` is the client's tag when one could be read; ``text`` and ``code`` go into
    the BAD. ``fatal`` means the connection cannot continue in step with the client (a
    non-synchronising literal too large even to skip): send the BYE and close.
    """

    tag: str | None
    text: str
    code: ResponseCode | None = None
    fatal: bool = False

    @property
    def response(self) -> Tagged | Untagged:
        if self.fatal:
            return Untagged(Status.BYE, self.text, self.code)
        if self.tag is None:
            return Untagged(Status.BAD, self.text, self.code)
        return Tagged(self.tag, Status.BAD, self.text, self.code)


@dataclass(frozen=True, slots=True)
class SendContinuation:
    """Bytes the session must write now: the ``+`` that lets the client send the
    synchronising literal it announced."""

    data: bytes = b"+ Ready for literal data\r\n"


@dataclass(frozen=True, slots=True)
class IdleDone:
    """``DONE`` ended the IDLE command ``tag`` (RFC 2177 §3; RFC 9051 §6.3.13)."""

    tag: str


@dataclass(frozen=True, slots=True)
class AuthenticateResponse:
    """One client response in an AUTHENTICATE exchange, base64-decoded (RFC 9051 §6.2.2).
    A ``*`` (cancel) or malformed base64 is a ParseError instead: the command ends BAD."""

    tag: str
    data: bytes

    def __repr__(self) -> str:  # SASL payloads carry credentials: never log them
        return f"AuthenticateResponse(tag={self.tag!r}, data=<{len(self.data)} octets>)"


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side (``receive_data(b"")``)."""


Event = Command | ParseError | SendContinuation | IdleDone | AuthenticateResponse | ConnectionClosed
