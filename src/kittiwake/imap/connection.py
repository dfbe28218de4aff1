"""The IMAP server protocol core (RFC 9051, with RFC 3501 compatibility), sans-IO, driven
like h11 and like :class:`kittiwake.smtp.server.ServerConnection`.

The session feeds octets with :meth:`~ServerConnection.receive_data` (``b""`` when the
peer closed), drains :meth:`~ServerConnection.next_event`, and turns every response into
octets with :meth:`~ServerConnection.send`.  The contract:

* A command event is answered by untagged data and then exactly one tagged completion.
  Until that completion is sent the core parses nothing more (pipelined commands wait
  in the buffer), so the completion decides the state the next command sees: a tagged
  OK to LOGIN authenticates, to SELECT selects, to LOGOUT ends the session (RFC 9051 §3).
  The session should stop reading while a command is in progress (see ``buffered``).
* :class:`~kittiwake.imap.events.SendContinuation`: write its bytes now.
* :class:`~kittiwake.imap.events.ParseError`: send ``event.response``; if ``fatal``,
  close after it.
* IDLE (RFC 2177; RFC 9051 §6.3.13): send ``Continuation("idling")``; the core then waits
  for DONE and reports :class:`IdleDone`; send the tagged OK.  Untagged updates may be
  sent meanwhile.
* AUTHENTICATE (RFC 9051 §6.2.2): send ``Continuation(data=challenge)``; each client line
  comes back as :class:`AuthenticateResponse`, until the session sends the tagged
  completion.  ``*`` or bad base64 ends the exchange with a ParseError (tagged BAD).
* STARTTLS (RFC 9051 §6.2.1): on the tagged OK the core drops anything the client sent
  after the command — plaintext injected before the handshake must never be read as if
  it came over TLS — and marks TLS active; the session then runs the handshake.
* COMPRESS=DEFLATE (RFC 4978): on the tagged OK the core marks compression active and
  sets aside what it had buffered (already compressed); the session takes it with
  :meth:`unprocessed_data`, inflates it and feeds it back, and wraps the stream itself.
* ENABLE (RFC 5161): the session calls :meth:`enable` with the requested names, which
  turns on what the core supports and returns what to list in ``* ENABLED``. IMAP4rev2
  and UTF8=ACCEPT switch mailbox names to UTF-8 (``utf8``), which the response builders
  must then be told.

Limits are enforced with a BAD without losing step with the client (see
:mod:`kittiwake.imap.framing`).  No input makes the core raise.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from kittiwake import sasl
from kittiwake.imap import commands as c
from kittiwake.imap.commands import Command, State
from kittiwake.imap.events import (
    AuthenticateResponse,
    ConnectionClosed,
    Event,
    IdleDone,
    ParseError,
)
from kittiwake.imap.framing import FramedCommand, Framer, FramingLimits
from kittiwake.imap.parser import ParseContext, parse_command
from kittiwake.imap.response import Continuation, Response, Status, Tagged, Untagged

__all__ = ["ENABLEABLE", "ConnectionSettings", "ServerConnection"]

#: What ENABLE can turn on, by upper-case name, with the spelling ``* ENABLED`` uses.
ENABLEABLE = {"IMAP4REV2": "IMAP4rev2", "UTF8=ACCEPT": "UTF8=ACCEPT",
              "CONDSTORE": "CONDSTORE", "QRESYNC": "QRESYNC"}


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    max_line_length: int = 64 * 1024  # octets per line, literals excluded
    max_literal_size: int = 64 * 1024  # any literal except APPEND's message
    max_append_size: int = 50 * 1024 * 1024  # APPEND message: the max message size
    max_command_size: int = 1024 * 1024  # all of one command (APPEND: plus the message)
    max_nesting: int = 64  # parentheses, NOT/OR operands, section part depth
    max_sequence_ranges: int = 10_000  # comma-separated elements of one sequence set
    literal_plus: bool = True  # advertise LITERAL+; False: LITERAL- (RFC 7888 §5)
    max_discard: int = 128 * 1024 * 1024  # larger refused non-sync literals: BYE
    sasl_ir: bool = True  # RFC 4959 initial responses
    binary: bool = True  # RFC 3516: literal8 APPEND data
    starttls: bool = False  # STARTTLS offered (on a plaintext listener)
    enableable: frozenset[str] = frozenset(ENABLEABLE)  # upper-case names ENABLE may turn on

    def framing(self) -> FramingLimits:
        return FramingLimits(self.max_line_length, self.max_literal_size,
                             self.max_append_size, self.max_command_size, self.literal_plus,
                             self.max_discard)


class _Mode(enum.Enum):
    COMMAND = "command"  # reading commands (unless one is pending)
    IDLE = "idle"  # after "+ idling": waiting for DONE
    AUTH = "auth"  # after an AUTHENTICATE challenge: waiting for the response line
    WAIT = "wait"  # IDLE/AUTHENTICATE reported a line; the session must answer first


class ServerConnection:
    """One IMAP server connection's protocol state."""

    def __init__(self, settings: ConnectionSettings | None = None, *,
                 tls_active: bool = False, preauth: bool = False) -> None:
        self._settings = settings = settings or ConnectionSettings()
        self._framer = Framer(settings.framing())
        self._state = State.AUTHENTICATED if preauth else State.NOT_AUTHENTICATED
        self._mode = _Mode.COMMAND
        self._pending: Command | None = None
        self._tls_active = tls_active
        self._compress_active = False
        self._compressed = b""
        self._enabled: set[str] = set()
        self._read_only = False
        self._eof = False
        self._closed = False
        self._errors = 0

    # --- properties -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def pending(self) -> Command | None:
        """The command awaiting its tagged completion, if any."""
        return self._pending

    @property
    def closed(self) -> bool:
        """True once nothing more will be read (LOGOUT, BYE, fatal error, peer closed)."""
        return self._closed

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def compress_active(self) -> bool:
        return self._compress_active

    @property
    def enabled(self) -> frozenset[str]:
        """Upper-case names of the extensions the client has ENABLEd."""
        return frozenset(self._enabled)

    @property
    def utf8(self) -> bool:
        """Mailbox names and quoted strings are UTF-8 (IMAP4rev2 or UTF8=ACCEPT enabled;
        RFC 9051 §5.1, RFC 6855 §3); else modified UTF-7 and 7-bit quoted strings."""
        return "IMAP4REV2" in self._enabled or "UTF8=ACCEPT" in self._enabled

    @property
    def rev2(self) -> bool:
        """The client enabled IMAP4rev2 (RFC 9051 §6.3.1): rev2 response semantics."""
        return "IMAP4REV2" in self._enabled

    @property
    def read_only(self) -> bool:
        """The selected mailbox was opened with EXAMINE."""
        return self._read_only

    @property
    def idling(self) -> bool:
        return self._mode is _Mode.IDLE

    @property
    def authenticating(self) -> bool:
        """An AUTHENTICATE exchange is under way."""
        return isinstance(self._pending, c.Authenticate)

    @property
    def error_count(self) -> int:
        """Protocol errors so far; the session closes the connection past its limit."""
        return self._errors

    @property
    def buffered(self) -> int:
        """Octets received but not yet consumed (for back-pressure)."""
        return len(self._framer.buf)

    # --- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed octets from the peer; ``b""`` means the peer closed its side."""
        if self._closed:
            return
        if not data:
            self._eof = True
        else:
            self._framer.buf += data

    def next_event(self) -> Event | None:
        """The next event, or None when more data is needed or the session must answer
        the pending command first."""
        if self._closed:
            return None
        event: Event | None
        if self._mode is _Mode.IDLE:
            event = self._idle_line()
        elif self._mode is _Mode.AUTH:
            event = self._auth_line()
        elif self._mode is _Mode.WAIT or self._pending is not None:
            return None
        else:
            event = self._command()
        if event is None and self._eof:
            self._closed = True
            return ConnectionClosed()
        if isinstance(event, ParseError):
            self._errors += 1
            if event.fatal:
                self._closed = True
        return event

    def _command(self) -> Event | None:
        framed = self._framer.next(self._state)
        if not isinstance(framed, FramedCommand):
            return framed
        s = self._settings
        ctx = ParseContext(self._state, self.utf8, frozenset(self._enabled), s.max_nesting,
                           s.max_sequence_ranges, s.sasl_ir, s.binary)
        result = parse_command(framed.lines, framed.literals, ctx)
        if isinstance(result, ParseError):
            return result
        if isinstance(result, c.StartTls) and (self._tls_active or not s.starttls):
            return ParseError(result.tag, "STARTTLS is not available")
        self._pending = result
        return result

    def _idle_line(self) -> Event | None:
        pending = self._pending
        assert pending is not None
        line = self._framer.read_line(self._settings.max_line_length)
        if line is None:
            return None
        if isinstance(line, bytes) and line.upper() == b"DONE":
            self._mode = _Mode.WAIT
            return IdleDone(pending.tag)
        # RFC 2177 §3: only DONE may follow; anything else ends the IDLE as an error.
        self._finish()
        return ParseError(pending.tag, "expected DONE")

    def _auth_line(self) -> Event | None:
        pending = self._pending
        assert pending is not None
        line = self._framer.read_line(self._settings.max_line_length)
        if line is None:
            return None
        if not isinstance(line, bytes):
            self._finish()
            return ParseError(pending.tag, "authentication response too long")
        if line.strip() == b"*":
            # RFC 9051 §6.2.2: the client cancelled; the server answers BAD.
            self._finish()
            return ParseError(pending.tag, "authentication cancelled")
        data = sasl.decode_response(line)
        if data is None:
            self._finish()
            return ParseError(pending.tag, "invalid base64 in authentication response")
        self._mode = _Mode.WAIT
        return AuthenticateResponse(pending.tag, data)

    def _finish(self) -> None:
        self._pending = None
        self._mode = _Mode.COMMAND

    # --- output --------------------------------------------------------------------------------

    def send(self, response: Response) -> bytes:
        """Serialise ``response`` and apply the state change it implies."""
        pending = self._pending
        if isinstance(response, Tagged):
            if pending is not None and response.tag == pending.tag:
                self._finish()
                self._complete(pending, response.status)
        elif isinstance(response, Continuation):
            if isinstance(pending, c.Idle):
                self._mode = _Mode.IDLE
            elif isinstance(pending, c.Authenticate):
                self._mode = _Mode.AUTH
        elif isinstance(response, Untagged) and response.status is Status.BYE:
            self._state = State.LOGOUT
            self._closed = True
        return response.to_bytes()

    def _complete(self, command: Command, status: Status) -> None:
        """RFC 9051 §3 state changes on completion."""
        ok = status is Status.OK
        if isinstance(command, c.Login | c.Authenticate):
            if ok:
                self._state = State.AUTHENTICATED
        elif isinstance(command, c.Select | c.Examine):
            if ok:
                self._state = State.SELECTED
                self._read_only = isinstance(command, c.Examine)
            elif status is Status.NO:
                # RFC 9051 §6.3.2: a failed SELECT leaves no mailbox selected.
                self._state = State.AUTHENTICATED
        elif isinstance(command, c.Close | c.Unselect):
            if ok:
                self._state = State.AUTHENTICATED
        elif isinstance(command, c.Logout):
            self._state = State.LOGOUT
            self._closed = True
        elif isinstance(command, c.StartTls):
            if ok:
                self._framer.take()  # RFC 9051 §6.2.1: nothing sent before TLS counts
                self._tls_active = True
        elif isinstance(command, c.Compress) and ok:
            self._compress_active = True
            self._compressed = self._framer.take()

    def enable(self, names: Iterable[str]) -> tuple[str, ...]:
        """ENABLE (RFC 5161 §3.1): turn on what we support among ``names``; returns the
        newly enabled ones, for ``* ENABLED``. QRESYNC implies CONDSTORE (RFC 7162
        §3.2.3), which is enabled with it but not listed."""
        newly: list[str] = []
        for name in names:
            key = name.upper()
            if key in self._settings.enableable and key in ENABLEABLE and (
                    key not in self._enabled):
                self._enabled.add(key)
                newly.append(ENABLEABLE[key])
        if "QRESYNC" in self._enabled:
            self._enabled.add("CONDSTORE")
        return tuple(newly)

    def unprocessed_data(self) -> bytes:
        """After COMPRESS: the (compressed) octets received past the command, removed."""
        data, self._compressed = self._compressed, b""
        return data
