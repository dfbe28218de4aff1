"""The POP3 server protocol core (RFC 1939), sans-IO, with CAPA and response codes
(RFC 2449), STLS (RFC 2595 §4) and SASL AUTH (RFC 5034).

The session feeds bytes with ``receive_data`` and drains ``next_event``. Commands that only
need the maildrop snapshot are answered by the core itself and come out as
:class:`~kittiwake.pop3.events.Output`; every other event (except ``ConnectionClosed``)
awaits exactly one answer: ``send``, ``send_challenge``, ``accept_login`` or
``send_message``. Nothing after an unanswered event is parsed, so pipelined commands
(RFC 2449 §6.6) see the state that answer created.

The core owns the session state RFC 1939 §3 defines — AUTHORIZATION, TRANSACTION, UPDATE —
and the per-session view of the maildrop: message numbers fixed at login, deletion marks
that RSET clears and that only reach the store, as an :class:`Update`, at QUIT.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from kittiwake import sasl
from kittiwake.pop3 import content
from kittiwake.pop3 import events as ev
from kittiwake.pop3 import replies as r
from kittiwake.pop3.events import Event, MaildropEntry
from kittiwake.pop3.replies import Reply


@dataclass(frozen=True, slots=True)
class ServerSettings:
    hostname: str = "localhost"
    greeting_text: str = "Kittiwake POP3 server ready"
    # RFC 2449 §4 allows 255 octets per command; we are lenient with clients that exceed it.
    max_command_line: int = 512
    # RFC 5034 §4: SASL responses have no POP3 length limit; bound them anyway.
    max_auth_line: int = 12288
    max_errors: int = 10  # protocol errors before the connection is closed
    max_auth_failures: int = 3  # failed logins on one connection before it is closed
    stls: bool = False  # a certificate is configured: offer STLS before TLS is active
    # RFC 2595 §4 / RFC 8314: USER/PASS and PLAIN/LOGIN send the password in the clear,
    # so they are refused before TLS unless the administrator allows them.
    plaintext_auth: bool = False
    channel_binding: bool = False  # the TLS layer can supply tls-exporter (SCRAM-PLUS)


class State(enum.Enum):
    """RFC 1939 §3."""

    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"


class _Mode(enum.Enum):
    COMMAND = "command"
    AUTH = "auth"  # after a "+" challenge: the next line is a SASL response
    TLS_PENDING = "tls-pending"  # after +OK to STLS, until tls_started()


_TOO_LONG = object()
_AUTH_EVENTS = (ev.Login, ev.AuthStart, ev.AuthResponse)
_TRANSACTION_COMMANDS = frozenset({"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL"})
_AUTHORIZATION_COMMANDS = frozenset({"USER", "PASS", "APOP", "AUTH", "STLS"})
#: Message numbers and line counts beyond this many digits are certainly out of range.
_MAX_NUMBER_DIGITS = 10


def _number(text: str, *, minimum: int) -> int | None:
    """A non-negative decimal (RFC 1939 §3: arguments are numbers in ASCII) or None."""
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_NUMBER_DIGITS:
        return None
    value = int(text)
    return value if value >= minimum else None


def _multi(status: Reply, lines: Sequence[str]) -> bytes:
    body = "".join(f"{line}\r\n" for line in lines).encode("utf-8", "replace")
    return status.to_bytes() + body + b".\r\n"


class ServerConnection:
    """One POP3 server connection's protocol state. Never raises for any peer input."""

    def __init__(self, settings: ServerSettings, *, tls_active: bool = False) -> None:
        self._settings = settings
        self._tls_active = tls_active
        self._buf = bytearray()
        self._skip_line = False
        self._eof = False
        self._closed = False
        self._close_reported = False
        self._pending: Event | None = None
        self._mode = _Mode.COMMAND
        self._state = State.AUTHORIZATION
        self._errors = 0
        self._auth_failures = 0
        self._user: str | None = None  # from USER, awaiting PASS
        self._authenticated: str | None = None
        self._maildrop: tuple[MaildropEntry, ...] = ()
        self._deleted: set[int] = set()  # message numbers marked by DELE

    # --- properties ------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        """True once the connection must be closed (QUIT answered, too many errors, EOF)."""
        return self._closed

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def authenticated_as(self) -> str | None:
        return self._authenticated

    @property
    def awaiting_reply(self) -> bool:
        return self._pending is not None

    @property
    def error_count(self) -> int:
        return self._errors

    @property
    def maildrop(self) -> tuple[MaildropEntry, ...]:
        return self._maildrop

    @property
    def marked_deleted(self) -> frozenset[int]:
        """Message numbers (1-based) marked by DELE and not yet reset."""
        return frozenset(self._deleted)

    def mechanisms(self) -> tuple[str, ...]:
        """SASL mechanisms acceptable right now (RFC 5034 §4, RFC 2595 §4)."""
        secure = self._tls_active or self._settings.plaintext_auth
        return sasl.available(
            tls_active=secure,
            channel_binding_available=self._tls_active and self._settings.channel_binding,
        )

    def capabilities(self) -> tuple[str, ...]:
        """The CAPA list for the current state (RFC 2449 §5: it may change after login)."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self._state is State.AUTHORIZATION:
            if self._plaintext_ok():
                caps.append("USER")
            caps.append("SASL " + " ".join(self.mechanisms()))
            if self._settings.stls and not self._tls_active:
                caps.append("STLS")
        caps.append("IMPLEMENTATION Kittiwake")
        return tuple(caps)

    def _plaintext_ok(self) -> bool:
        return self._tls_active or self._settings.plaintext_auth

    # --- output ----------------------------------------------------------------------------

    def greeting(self) -> bytes:
        """RFC 1939 §4: the first thing on the wire is a positive greeting. No APOP
        timestamp: APOP needs the password stored in the clear, which we never do."""
        return r.OK.with_text(
            f"{self._settings.hostname} {self._settings.greeting_text}"
        ).to_bytes()

    def send(self, reply: Reply) -> bytes:
        """Answer the pending event with a status line and apply the state change it
        implies. Successful logins go through :meth:`accept_login`, never here."""
        event, self._pending = self._pending, None
        if event is None:
            raise ValueError("no event is awaiting a reply; use abort() to close")
        if isinstance(event, _AUTH_EVENTS):
            if reply.ok:
                raise ValueError("a successful login is answered with accept_login()")
            return reply.to_bytes() + self._login_failed()
        elif isinstance(event, ev.Update):
            self._closed = True  # RFC 1939 §6: the session ends after the UPDATE state
        elif isinstance(event, ev.StartTls) and reply.ok:
            # RFC 2595 §4 (and CVE-2011-0411): whatever the client pipelined after STLS was
            # sent in the clear and must not be read as if it came over TLS.
            self._buf.clear()
            self._skip_line = False
            self._user = None
            self._mode = _Mode.TLS_PENDING
        return reply.to_bytes()

    def abort(self, reply: Reply) -> bytes:
        """Say ``reply`` and close, whatever is pending (autologout, shutdown, a refused
        connection). RFC 1939 §3: this never enters the UPDATE state."""
        self._pending = None
        self._closed = True
        return reply.to_bytes()

    def send_challenge(self, data: bytes) -> bytes:
        """A SASL challenge (RFC 5034 §4: "+" SP base64, "+ " when empty); the next line
        the client sends comes out as :class:`AuthResponse`."""
        if not isinstance(self._pending, ev.AuthStart | ev.AuthResponse):
            raise ValueError("no SASL exchange is awaiting a challenge")
        self._pending = None
        self._mode = _Mode.AUTH
        return b"+ " + sasl.encode_challenge(data) + b"\r\n"

    def accept_login(self, user: str, maildrop: Sequence[MaildropEntry]) -> bytes:
        """The maildrop is locked and listed: enter TRANSACTION (RFC 1939 §4)."""
        if not isinstance(self._pending, _AUTH_EVENTS):
            raise ValueError("no login is awaiting an answer")
        self._pending = None
        self._mode = _Mode.COMMAND
        self._user = None
        self._authenticated = user
        self._maildrop = tuple(maildrop)
        self._deleted.clear()
        self._state = State.TRANSACTION
        return self._summary().to_bytes()

    def send_message(self, message: bytes) -> bytes:
        """Answer RETR or TOP with the message's stored bytes, byte-stuffed (RFC 1939 §3).
        RETR announces the listed size, which is the stored size (RFC 1939 §5)."""
        event = self._pending
        if not isinstance(event, ev.Retrieve):
            raise ValueError("no RETR or TOP is awaiting an answer")
        self._pending = None
        if event.lines is None:
            status = r.OK.with_text(f"{event.entry.size} octets")
            return status.to_bytes() + content.multiline(message)
        return r.TOP_FOLLOWS.to_bytes() + content.multiline(content.top(message, event.lines))

    def _summary(self) -> Reply:
        count, octets = self._totals()
        return r.OK.with_text(f"maildrop has {count} messages ({octets} octets)")

    def _totals(self) -> tuple[int, int]:
        live = [e for n, e in enumerate(self._maildrop, 1) if n not in self._deleted]
        return len(live), sum(e.size for e in live)

    # --- state changes the session drives --------------------------------------------------

    def tls_started(self) -> None:
        """The handshake finished: start afresh (RFC 2595 §4 — the client must discard
        what it learnt before TLS, and so do we)."""
        self._tls_active = True
        self._buf.clear()
        self._skip_line = False
        self._mode = _Mode.COMMAND
        self._user = None

    def _login_failed(self) -> bytes:
        """Count a failed or abandoned login; past the limit, the extra line that closes.
        RFC 1939 §7: after a failed PASS the client starts again with USER (or AUTH)."""
        self._auth_failures += 1
        self._user = None
        self._mode = _Mode.COMMAND
        if self._auth_failures < self._settings.max_auth_failures:
            return b""
        self._closed = True
        return r.TOO_MANY_AUTH_FAILURES.to_bytes()

    # --- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; b"" means the peer closed its side."""
        if data == b"":
            self._eof = True
            return
        if self._closed or self._mode is _Mode.TLS_PENDING:
            return
        self._buf += data

    def next_event(self) -> Event | None:
        """The next event, or None when more data is needed or an event awaits its answer."""
        if self._pending is not None or self._mode is _Mode.TLS_PENDING:
            return None
        if self._closed:
            return self._report_close() if self._eof else None
        line = self._read_line()
        if line is None:
            if self._eof:
                self._closed = True
                return self._report_close()
            return None
        if line is _TOO_LONG:
            if self._mode is _Mode.AUTH:
                return ev.Output(r.LINE_TOO_LONG.to_bytes() + self._login_failed())
            return ev.Output(self._error(r.LINE_TOO_LONG))
        assert isinstance(line, bytes)
        result = self._auth_line(line) if self._mode is _Mode.AUTH else self._command(line)
        if isinstance(result, bytes):
            return ev.Output(result)
        self._pending = result
        return result

    def _report_close(self) -> Event | None:
        if self._close_reported:
            return None
        self._close_reported = True
        return ev.ConnectionClosed()

    def _read_line(self) -> bytes | object | None:
        """One line without its CRLF (or bare LF); None if incomplete; _TOO_LONG when over
        the limit, in which case the rest of that line is discarded as it arrives, never
        buffered, so a flood cannot grow memory and no command is desynchronised."""
        buf = self._buf
        if self._skip_line:
            i = buf.find(b"\n")
            if i < 0:
                buf.clear()
                return None
            del buf[: i + 1]
            self._skip_line = False
        limit = self._settings.max_command_line
        if self._mode is _Mode.AUTH or buf[:5].upper() == b"AUTH ":
            limit = self._settings.max_auth_line
        i = buf.find(b"\n", 0, limit)
        if i < 0:
            if len(buf) < limit:
                return None
            end = buf.find(b"\n", limit)
            if end < 0:
                buf.clear()
                self._skip_line = True
            else:  # the next line has arrived too: keep it
                del buf[: end + 1]
            return _TOO_LONG
        line = bytes(buf[:i])
        del buf[: i + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def _error(self, reply: Reply) -> bytes:
        """A protocol error: answer it; close after too many (the peer is not a client)."""
        self._errors += 1
        if self._errors >= self._settings.max_errors:
            self._closed = True
            return r.TOO_MANY_ERRORS.to_bytes()
        return reply.to_bytes()

    # --- commands --------------------------------------------------------------------------

    def _auth_line(self, line: bytes) -> bytes | Event:
        # RFC 5034 §4: "*" cancels; anything else is one base64 response.
        if line.strip() == b"*":
            return r.AUTH_CANCELLED.to_bytes() + self._login_failed()
        data = sasl.decode_response(line)
        if data is None:
            return r.BAD_BASE64.to_bytes() + self._login_failed()
        self._mode = _Mode.COMMAND
        return ev.AuthResponse(data)

    def _command(self, line: bytes) -> bytes | Event:
        keyword_raw, _, rest_raw = line.partition(b" ")
        try:
            keyword = keyword_raw.decode("ascii").upper()
        except UnicodeDecodeError:
            return self._error(r.UNKNOWN_COMMAND)
        if keyword == "CAPA":
            return self._no_args(rest_raw) or _multi(r.CAPA_FOLLOWS, self.capabilities())
        if keyword == "QUIT":
            return self._no_args(rest_raw) or self._quit()
        if self._state is State.AUTHORIZATION:
            if keyword in _AUTHORIZATION_COMMANDS:
                return self._authorization(keyword, rest_raw)
            if keyword in _TRANSACTION_COMMANDS:
                return self._error(r.WRONG_STATE)
        elif self._state is State.TRANSACTION:
            if keyword in _TRANSACTION_COMMANDS:
                return self._transaction(keyword, rest_raw)
            if keyword in _AUTHORIZATION_COMMANDS:
                return self._error(r.WRONG_STATE)
        return self._error(r.UNKNOWN_COMMAND)

    def _no_args(self, rest: bytes) -> bytes | None:
        return self._error(r.SYNTAX_ERROR) if rest.strip() else None

    def _quit(self) -> bytes | Event:
        if self._state is State.TRANSACTION:
            # RFC 1939 §6: QUIT from TRANSACTION enters UPDATE; the session removes the
            # marked messages and answers.
            self._state = State.UPDATE
            return ev.Update(tuple(self._maildrop[n - 1].uid for n in sorted(self._deleted)))
        self._closed = True  # RFC 1939 §4: QUIT in AUTHORIZATION ends without UPDATE
        return r.BYE.to_bytes()

    def _authorization(self, keyword: str, rest_raw: bytes) -> bytes | Event:
        if keyword == "STLS":
            if rest_raw.strip():
                return self._error(r.SYNTAX_ERROR)
            if self._tls_active:
                return r.ALREADY_TLS.to_bytes()
            if not self._settings.stls:
                return r.TLS_NOT_AVAILABLE.to_bytes()
            return ev.StartTls()
        if keyword == "APOP":
            return r.APOP_UNSUPPORTED.to_bytes()
        if keyword == "AUTH":
            return self._auth(rest_raw)
        if not self._plaintext_ok():
            # RFC 2595 §4: the server may refuse USER/PASS before TLS; not listing USER in
            # CAPA tells capable clients beforehand.
            return r.PLAINTEXT_DISALLOWED.to_bytes()
        try:
            text = rest_raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(r.SYNTAX_ERROR)
        if keyword == "USER":
            name = text.strip()
            # Control characters have no place in an account name and would let a peer
            # forge lines in our logs.
            if not name or any(ch <= " " or ch == "\x7f" for ch in name):
                return self._error(r.SYNTAX_ERROR)
            self._user = name
            return r.USER_OK.to_bytes()
        # PASS. RFC 1939 §7: the argument is the rest of the line, spaces included.
        user, self._user = self._user, None
        if user is None:
            return self._error(r.NEED_USER)
        if not text or "\0" in text:
            return self._error(r.SYNTAX_ERROR)
        return ev.Login(user, text)

    def _auth(self, rest_raw: bytes) -> bytes | Event:
        args = rest_raw.split()
        if not args:
            # Not in RFC 5034, but many clients probe with a bare AUTH (as RFC 1734 servers
            # answered it); listing the mechanisms costs nothing.
            return _multi(r.MECHANISMS_FOLLOW, self.mechanisms())
        if len(args) > 2:
            return self._error(r.SYNTAX_ERROR)
        try:
            mechanism = args[0].decode("ascii").upper()
        except UnicodeDecodeError:
            return self._error(r.SYNTAX_ERROR)
        if mechanism not in self.mechanisms():
            if mechanism in (sasl.PLAIN, sasl.LOGIN) and not self._plaintext_ok():
                return r.PLAINTEXT_DISALLOWED.to_bytes()
            return r.UNKNOWN_MECHANISM.to_bytes()
        initial: bytes | None = None
        if len(args) == 2:
            # RFC 5034 §4: "=" is an empty initial response.
            initial = sasl.decode_response(args[1], initial=True)
            if initial is None:
                return r.BAD_BASE64.to_bytes()
        self._user = None
        return ev.AuthStart(mechanism, initial)

    def _transaction(self, keyword: str, rest_raw: bytes) -> bytes | Event:
        try:
            args = rest_raw.decode("ascii").split()
        except UnicodeDecodeError:
            return self._error(r.SYNTAX_ERROR)
        if keyword in ("STAT", "NOOP", "RSET"):
            if args:
                return self._error(r.SYNTAX_ERROR)
            if keyword == "STAT":
                # RFC 1939 §5: "+OK nn mm", deleted messages not counted.
                count, octets = self._totals()
                return r.OK.with_text(f"{count} {octets}").to_bytes()
            if keyword == "RSET":
                self._deleted.clear()  # RFC 1939 §5: unmark every deleted message
                return self._summary().to_bytes()
            return r.NOOP_OK.to_bytes()
        if keyword in ("LIST", "UIDL"):
            return self._listing(keyword, args)
        if keyword == "TOP":
            if len(args) != 2:
                return self._error(r.SYNTAX_ERROR)
            lines = _number(args[1], minimum=0)
            if lines is None:
                return self._error(r.SYNTAX_ERROR)
        elif len(args) != 1:
            return self._error(r.SYNTAX_ERROR)
        number = _number(args[0], minimum=1)
        if number is None:
            return self._error(r.SYNTAX_ERROR)
        found = self._live(number)
        if isinstance(found, Reply):
            return found.to_bytes()
        if keyword == "DELE":
            self._deleted.add(number)
            return r.DELETED.to_bytes()
        return ev.Retrieve(number, found, lines if keyword == "TOP" else None)

    def _live(self, number: int) -> MaildropEntry | Reply:
        if number > len(self._maildrop):
            return r.NO_SUCH_MESSAGE
        if number in self._deleted:
            return r.ALREADY_DELETED  # RFC 1939 §5: deleted messages may not be referred to
        return self._maildrop[number - 1]

    def _listing(self, keyword: str, args: list[str]) -> bytes:
        def item(number: int, entry: MaildropEntry) -> str:
            return f"{number} {entry.size if keyword == 'LIST' else entry.unique_id}"

        if len(args) > 1:
            return self._error(r.SYNTAX_ERROR)
        if args:
            number = _number(args[0], minimum=1)
            if number is None:
                return self._error(r.SYNTAX_ERROR)
            found = self._live(number)
            if isinstance(found, Reply):
                return found.to_bytes()
            return r.OK.with_text(item(number, found)).to_bytes()
        lines = [item(n, e) for n, e in enumerate(self._maildrop, 1) if n not in self._deleted]
        status = self._summary() if keyword == "LIST" else r.UIDL_FOLLOWS
        return _multi(status, lines)
