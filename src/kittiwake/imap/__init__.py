"""The IMAP protocol core (RFC 9051 IMAP4rev2 with RFC 3501 IMAP4rev1 compatibility),
sans-IO: octets in, typed commands out; response values in, octets out.

Modules, by concern:

* :mod:`.connection` — :class:`ServerConnection`, the state machine the session drives.
* :mod:`.framing` — splitting the stream into commands and literals, with the limits.
* :mod:`.parser` (with :mod:`.lexer`, :mod:`.search`, :mod:`.fetch`) — the grammar.
* :mod:`.commands`, :mod:`.events`, :mod:`.types` — the values it produces.
* :mod:`.response`, :mod:`.builders` — responses and their string encodings.
* :mod:`.mutf7` — modified UTF-7 mailbox names.
"""

from kittiwake.imap.commands import Command, State
from kittiwake.imap.connection import ConnectionSettings, ServerConnection
from kittiwake.imap.events import (
    AuthenticateResponse,
    ConnectionClosed,
    Event,
    IdleDone,
    ParseError,
    SendContinuation,
)
from kittiwake.imap.parser import ParseContext, parse_command
from kittiwake.imap.response import Continuation, Data, Response, Status, Tagged, Untagged

__all__ = [
    "AuthenticateResponse",
    "Command",
    "ConnectionClosed",
    "ConnectionSettings",
    "Continuation",
    "Data",
    "Event",
    "IdleDone",
    "ParseContext",
    "ParseError",
    "Response",
    "SendContinuation",
    "ServerConnection",
    "State",
    "Status",
    "Tagged",
    "Untagged",
    "parse_command",
]
