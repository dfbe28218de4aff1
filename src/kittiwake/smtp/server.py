"""The SMTP server protocol core (RFC 5321), sans-IO, driven like h11.

The session feeds bytes with `receive_data`, drains `next_event`, and answers each event
(except `DataChunk`, `BdatStart` and `ConnectionClosed`) with exactly one `send(reply)`.
The core never parses the next command while an event awaits its reply, so the reply decides
the state that the following pipelined commands (RFC 2920) see: a 250 to MAIL opens the
transaction, a 550 does not.

Supported extensions: PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8
(RFC 6531), ENHANCEDSTATUSCODES (RFC 2034, always on), CHUNKING (RFC 3030), DSN (RFC 3461),
STARTTLS (RFC 3207) and AUTH (RFC 4954).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kittiwake.address import Address, AddressError, parse_domain, parse_path
from kittiwake.smtp import events as ev
from kittiwake.smtp import parse
from kittiwake.smtp import replies as r
from kittiwake.smtp.events import Event
from kittiwake.smtp.parse import CommandError, DataReader
from kittiwake.smtp.replies import Reply


@dataclass(frozen=True, slots=True)
class ServerSettings:
    hostname: str = "localhost"
    max_message_size: int = 25 * 1024 * 1024  # advertised as SIZE; enforced while streaming
    max_command_line: int = 512  # octets incl. CRLF (RFC 5321 §4.5.3.1.4)
    max_text_line: int = 1000  # octets incl. CRLF (RFC 5321 §4.5.3.1.6), in DATA
    max_auth_line: int = 12288  # AUTH command and exchange lines (RFC 4954 §4)
    max_errors: int = 10  # protocol errors before 421 + close
    reject_bare_line_endings: bool = True  # bare CR / bare LF in DATA → BARE_LINE_ENDING
    starttls: bool = False  # advertise/allow STARTTLS (when not already TLS)
    auth_mechanisms: tuple[str, ...] = ()  # advertised in EHLO (AUTH ...)
    auth_requires_tls: bool = True  # AUTH not offered/accepted before TLS
    dsn: bool = True  # advertise DSN, accept RET/ENVID/NOTIFY/ORCPT (RFC 3461)
    chunking: bool = True  # BDAT (RFC 3030)
    smtputf8: bool = True  # RFC 6531
    greeting_text: str = "ESMTP Kittiwake"


class _Mode(enum.Enum):
    COMMAND = "command"
    DATA = "data"  # after 354: dot-stuffed content until <CRLF>.<CRLF>
    BDAT = "bdat"  # reading a BDAT chunk's octets
    BDAT_SKIP = "bdat-skip"  # consuming the octets of a refused BDAT chunk
    AUTH = "auth"  # after 334: each line is a SASL response
    TLS_PENDING = "tls-pending"  # after 220 to STARTTLS, until tls_started()


# Events that expect no reply from the session.
_NO_REPLY = (ev.DataChunk, ev.BdatStart, ev.ConnectionClosed)


class ServerConnection:
    """One SMTP server connection's protocol state. Never raises for any peer input."""

    def __init__(self, settings: ServerSettings, *, tls_active: bool = False) -> None:
        self._settings = settings
        self._buf = bytearray()
        self._tls_active = tls_active
        self._greeted = False
        self._early_talker = False
        self._eof = False
        self._closed = False
        self._pending: Event | None = None
        self._close_after_reply = False
        self._errors = 0
        self._skip_line = False  # discarding the rest of an over-long line
        self._mode = _Mode.COMMAND
        self._authenticated = False
        self._helo_name: str | None = None
        self._extended = False
        # The mail transaction (RFC 5321 §3.3).
        self._in_transaction = False
        self._recipients = 0
        self._smtputf8 = False
        self._bdat_used = False
        self._bdat_size = 0
        self._bdat_error: Reply | None = None
        # The current DATA stream / BDAT chunk.
        self._reader: DataReader | None = None
        self._chunk_left = 0
        self._chunk_size = 0
        self._chunk_last = False
        self._skip_reply: Reply = r.BAD_SEQUENCE

    # --- properties ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection must be closed (after QUIT, a 421, or the peer closing)."""
        return self._closed

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def helo_name(self) -> str | None:
        return self._helo_name

    @property
    def extended(self) -> bool:
        """True when the client greeted with EHLO (not HELO)."""
        return self._extended

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    @property
    def recipient_count(self) -> int:
        return self._recipients

    @property
    def smtputf8(self) -> bool:
        """True when the current transaction's MAIL carried SMTPUTF8."""
        return self._smtputf8

    @property
    def awaiting_reply(self) -> bool:
        return self._pending is not None

    @property
    def error_count(self) -> int:
        return self._errors

    # --- output ----------------------------------------------------------------------------

    def greeting(self) -> bytes:
        """The 220 greeting (RFC 5321 §4.3.1), which must be our first output. Enhanced codes
        are not used on it: the extension is not negotiated yet (RFC 2034 §3)."""
        self._greeted = True
        return Reply(220, "", f"{self._settings.hostname} {self._settings.greeting_text}"
                     ).to_bytes()

    def helo_reply(self) -> Reply:
        """A 250 for HELO: no extensions are listed (RFC 5321 §4.1.1.1)."""
        return Reply(250, "", self._settings.hostname)

    def ehlo_reply(self) -> Reply:
        """The 250 to EHLO listing the extensions usable right now (RFC 5321 §4.1.1.1)."""
        s = self._settings
        lines = [s.hostname, "PIPELINING", f"SIZE {s.max_message_size}", "8BITMIME"]
        if s.smtputf8:
            lines.append("SMTPUTF8")
        lines.append("ENHANCEDSTATUSCODES")
        if s.chunking:
            lines.append("CHUNKING")
        if s.dsn:
            lines.append("DSN")
        if s.starttls and not self._tls_active:
            lines.append("STARTTLS")
        if self._auth_allowed_now():
            lines.append("AUTH " + " ".join(m.upper() for m in s.auth_mechanisms))
        return Reply(250, "", tuple(lines))

    def send(self, reply: Reply) -> bytes:
        """Serialise `reply` and apply the state change it implies for the event it answers.

        A reply sent while no event awaits one (e.g. a 421 on timeout) is serialised as is;
        any 421 closes the core (RFC 5321 §3.8)."""
        reply = _sanitise(reply)
        event, self._pending = self._pending, None
        if event is not None:
            self._apply(event, reply)
        if reply.code == 421 or self._close_after_reply:
            self._close_after_reply = False
            self._closed = True
        return reply.to_bytes()

    def _apply(self, event: Event, reply: Reply) -> None:
        ok = 200 <= reply.code < 300
        if isinstance(event, ev.Helo):
            if ok:
                # RFC 5321 §4.1.4: EHLO/HELO in a session also resets any transaction.
                self._helo_name, self._extended = event.name, event.extended
                self.reset_transaction()
        elif isinstance(event, ev.MailFrom):
            if ok:
                self._in_transaction = True
                self._smtputf8 = "SMTPUTF8" in event.params
        elif isinstance(event, ev.RcptTo):
            if ok:
                self._recipients += 1
        elif isinstance(event, ev.DataStart):
            if reply.code == 354:
                s = self._settings
                self._reader = DataReader(s.max_message_size, s.max_text_line,
                                          s.reject_bare_line_endings)
                self._mode = _Mode.DATA
        elif isinstance(event, ev.BdatChunkEnd):
            if not ok:
                # RFC 3030 §2: a refused chunk fails the whole transaction.
                self.reset_transaction()
        elif isinstance(event, ev.DataEnd):
            self.reset_transaction()  # RFC 5321 §4.1.1.4: whatever the outcome
        elif isinstance(event, ev.Rset):
            if ok:
                self.reset_transaction()
        elif isinstance(event, ev.Quit):
            if ok:
                self._closed = True
        elif isinstance(event, ev.StartTls):
            if ok:
                # RFC 3207 §4.2 (CVE-2011-0411): anything the client pipelined after STARTTLS
                # was sent in clear text and must not be read as if it came over TLS.
                self._buf.clear()
                self._skip_line = False
                self._mode = _Mode.TLS_PENDING
        elif isinstance(event, ev.Auth | ev.AuthResponse):
            if reply.code == 334:
                self._mode = _Mode.AUTH
            else:
                self._mode = _Mode.COMMAND
                if ok:
                    self._authenticated = True

    # --- state changes the session drives --------------------------------------------------

    def tls_started(self) -> None:
        """The TLS handshake finished: start afresh (RFC 3207 §4.2 — the client must EHLO
        again, and everything learnt before TLS, including authentication, is forgotten)."""
        self._tls_active = True
        self._buf.clear()
        self._skip_line = False
        self._mode = _Mode.COMMAND
        self._reader = None
        self._helo_name = None
        self._extended = False
        self._authenticated = False
        self.reset_transaction()

    def auth_succeeded(self) -> None:
        """Mark the session authenticated (for sessions that finish SASL outside `send`)."""
        self._authenticated = True
        if self._mode is _Mode.AUTH:
            self._mode = _Mode.COMMAND

    def reset_transaction(self) -> None:
        """Forget the envelope (RFC 5321 §4.1.1.5); the HELO name and auth are kept."""
        self._in_transaction = False
        self._recipients = 0
        self._smtputf8 = False
        self._bdat_used = False
        self._bdat_size = 0
        self._bdat_error = None

    # --- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; b"" means the peer closed its side."""
        if data == b"":
            self._eof = True
            return
        if self._closed or self._mode is _Mode.TLS_PENDING:
            return
        if not self._greeted:
            self._early_talker = True
        self._buf += data

    def next_event(self) -> Event | None:
        """The next event, or None when more data is needed or an event awaits its reply."""
        if self._closed or self._pending is not None or not self._greeted:
            return None
        event: Event | None
        if self._early_talker:
            # RFC 5321 §4.3.1: the client waits for the greeting; one that talks first is
            # (usually) a spam bot that does not read replies.
            self._early_talker = False
            self._close_after_reply = True
            event = ev.ProtocolError(r.EARLY_TALKER)
        else:
            event = self._step()
        if event is None:
            if not self._eof:
                return None
            self._closed = True  # whatever is left can never complete
            return ev.ConnectionClosed()
        if not isinstance(event, _NO_REPLY):
            self._pending = event
        return event

    def _step(self) -> Event | None:
        mode = self._mode
        if mode is _Mode.COMMAND:
            line = self._read_line(self._settings.max_command_line, command=True)
            if line is None:
                return None
            if line is _TOO_LONG:
                return self._error(r.LINE_TOO_LONG)
            return self._command(line.decode("utf-8", "surrogateescape"))
        if mode is _Mode.AUTH:
            line = self._read_line(self._settings.max_auth_line)
            if line is None:
                return None
            if line is _TOO_LONG:
                self._mode = _Mode.COMMAND  # the exchange is over
                return self._error(r.AUTH_LINE_TOO_LONG)
            return ev.AuthResponse(line.decode("utf-8", "surrogateescape"))
        if mode is _Mode.DATA:
            return self._data_step()
        if mode is _Mode.BDAT or mode is _Mode.BDAT_SKIP:
            return self._bdat_step()
        return None  # TLS_PENDING: nothing to read until tls_started()

    def _read_line(self, limit: int, *, command: bool = False) -> bytes | None:
        """Take one line (without its CRLF or bare LF) from the buffer; None if incomplete;
        _TOO_LONG if it exceeds `limit` octets with its terminator, in which case the rest of
        that line is skipped as it arrives (never buffered) so no command gets desynchronised.
        """
        buf = self._buf
        if self._skip_line:
            i = buf.find(b"\n")
            if i < 0:
                buf.clear()
                return None
            del buf[: i + 1]
            self._skip_line = False
        if command and buf[:5].upper() == b"AUTH ":
            # RFC 4954 §4: AUTH with an initial response may be up to 12288 octets.
            limit = max(limit, self._settings.max_auth_line)
        i = buf.find(b"\n", 0, limit)
        if i < 0 and len(buf) < limit:
            return None
        if i < 0:
            # No terminator within `limit` octets: the line is too long whatever comes next.
            end = buf.find(b"\n", limit)
            if end < 0:
                buf.clear()
                self._skip_line = True
            else:
                del buf[: end + 1]
            return _TOO_LONG
        line = bytes(buf[:i])
        del buf[: i + 1]
        # RFC 5321 §2.3.8 lines end with CRLF; a bare LF is accepted for commands (like
        # Postfix) since it cannot smuggle anything here, but never inside DATA.
        return line[:-1] if line.endswith(b"\r") else line

    def _error(self, reply: Reply) -> ev.ProtocolError:
        self._errors += 1
        if self._errors > self._settings.max_errors:
            self._close_after_reply = True
            return ev.ProtocolError(r.TOO_MANY_ERRORS)
        return ev.ProtocolError(reply)

    # --- commands --------------------------------------------------------------------------

    def _command(self, line: str) -> Event | None:
        verb, arg = parse.split_command(line)
        try:
            if verb in ("EHLO", "HELO"):
                return self._helo(arg, verb == "EHLO")
            if verb == "MAIL":
                return self._mail(arg)
            if verb == "RCPT":
                return self._rcpt(arg)
            if verb == "DATA":
                return self._data(arg)
            if verb == "BDAT":
                return self._bdat(arg)
            if verb in ("RSET", "QUIT", "STARTTLS") and arg:
                raise CommandError(r.SYNTAX_ERROR)
            if verb == "RSET":
                return ev.Rset()
            if verb == "NOOP":
                return ev.Noop()  # RFC 5321 §4.1.1.9: an argument is allowed and ignored
            if verb == "QUIT":
                return ev.Quit()
            if verb == "VRFY":
                if not arg or not parse.is_printable(arg):
                    raise CommandError(r.SYNTAX_ERROR)
                return ev.Vrfy(arg)
            if verb == "HELP":
                return ev.Help(arg if parse.is_printable(arg) else "")
            if verb == "EXPN":
                raise CommandError(r.NOT_IMPLEMENTED)  # RFC 5321 §3.5.2: MAY be disabled
            if verb == "STARTTLS":
                return self._starttls()
            if verb == "AUTH":
                return self._auth(arg)
            raise CommandError(r.UNKNOWN_COMMAND)
        except CommandError as exc:
            return self._error(exc.reply)

    def _helo(self, arg: str, extended: bool) -> Event:
        # The name is not checked further: broken HELO names ("my_pc", bare IPs) are common in
        # legitimate clients, and judging them is policy (the session), not protocol.
        name = arg.strip(" ")
        if not name or not parse.is_printable(name):
            raise CommandError(r.BAD_EHLO)
        return ev.Helo(name, extended)

    def _mail(self, arg: str) -> Event:
        if self._helo_name is None:
            raise CommandError(r.NEED_EHLO)
        if self._in_transaction:
            raise CommandError(r.NESTED_MAIL)
        path, params = parse.split_path_args(arg, "FROM")
        s = self._settings
        parse.check_mail_params(params, max_size=s.max_message_size, dsn=s.dsn,
                                smtputf8=s.smtputf8, auth=bool(s.auth_mechanisms))
        sender = self._path(path, "SMTPUTF8" in params, r.BAD_SENDER_SYNTAX)
        return ev.MailFrom(sender, params)

    def _rcpt(self, arg: str) -> Event:
        if not self._in_transaction:
            raise CommandError(r.NEED_MAIL)
        path, params = parse.split_path_args(arg, "TO")
        recipient: Address | None
        if path[1:-1].lower() == "postmaster":
            # RFC 5321 §4.5.1: <Postmaster> without a domain MUST be accepted.
            recipient = Address("postmaster", self._own_domain())
        else:
            recipient = self._path(path, self._smtputf8, r.BAD_ADDRESS_SYNTAX)
        if recipient is None:
            raise CommandError(r.BAD_ADDRESS_SYNTAX)  # the null path is only a sender
        parse.check_rcpt_params(params, dsn=self._settings.dsn)
        return ev.RcptTo(recipient, params)

    def _path(self, text: str, smtputf8: bool, bad: Reply) -> Address | None:
        if not parse.is_printable(text):
            raise CommandError(bad)
        if not text.isascii() and not smtputf8:
            # RFC 6531 §3.4: a UTF-8 address needs the SMTPUTF8 parameter on MAIL.
            raise CommandError(r.SMTPUTF8_REQUIRED)
        try:
            return parse_path(text, smtputf8=smtputf8)
        except AddressError:
            raise CommandError(bad) from None

    def _own_domain(self) -> str:
        try:
            return parse_domain(self._settings.hostname, smtputf8=True, literal_ok=True)
        except AddressError:
            return self._settings.hostname.lower()

    def _data(self, arg: str) -> Event:
        if arg:
            raise CommandError(r.SYNTAX_ERROR)
        if not self._in_transaction:
            raise CommandError(r.NEED_MAIL)
        if self._bdat_used:
            raise CommandError(r.BDAT_DATA_MIXED)  # RFC 3030 §3
        if self._recipients == 0:
            raise CommandError(r.NEED_RCPT)
        return ev.DataStart()

    def _bdat(self, arg: str) -> Event | None:
        size, last = parse.parse_bdat(arg)  # unparseable: we cannot know what to skip
        refusal: Reply | None = None
        if not self._settings.chunking:
            refusal = r.NOT_IMPLEMENTED
        elif not self._in_transaction:
            refusal = r.NEED_MAIL
        elif self._recipients == 0:
            refusal = r.NEED_RCPT
        self._chunk_left, self._chunk_size, self._chunk_last = size, size, last
        if refusal is not None:
            # RFC 3030 §3: the chunk's octets follow regardless; they are consumed and thrown
            # away so that message content is never read as commands.
            self._mode = _Mode.BDAT_SKIP
            self._skip_reply = refusal
            return self._bdat_step()
        self._mode = _Mode.BDAT
        if not self._bdat_used:
            self._bdat_used = True
            return ev.BdatStart()
        return self._bdat_step()

    def _bdat_step(self) -> Event | None:
        while self._chunk_left > 0:
            if not self._buf:
                return None
            n = min(self._chunk_left, len(self._buf))
            chunk = bytes(self._buf[:n])
            del self._buf[:n]
            self._chunk_left -= n
            if self._mode is _Mode.BDAT_SKIP:
                continue
            self._bdat_size += n
            if self._bdat_size > self._settings.max_message_size:
                self._bdat_error = r.MESSAGE_TOO_BIG
            if self._bdat_error is None:
                return ev.DataChunk(chunk)
        skipping = self._mode is _Mode.BDAT_SKIP
        self._mode = _Mode.COMMAND
        if skipping:
            return self._error(self._skip_reply)
        if self._chunk_last or self._bdat_error is not None:
            # An oversized message fails at the end of the chunk that crossed the limit rather
            # than after LAST: the client stops sending (RFC 3030 §2), later chunks get 503.
            return ev.DataEnd(self._bdat_error)
        return ev.BdatChunkEnd(self._chunk_size)

    def _data_step(self) -> Event | None:
        reader = self._reader
        if reader is None:  # cannot happen: DATA mode is only entered with a reader
            return None
        if not reader.done:
            content = reader.feed(self._buf)
            if content:
                return ev.DataChunk(content)
            if not reader.done:
                return None
        self._mode = _Mode.COMMAND
        self._reader = None
        return ev.DataEnd(reader.error)

    def _starttls(self) -> Event:
        if self._tls_active:
            raise CommandError(r.ALREADY_TLS)
        if not self._settings.starttls:
            raise CommandError(r.NOT_IMPLEMENTED)
        return ev.StartTls()

    def _auth_allowed_now(self) -> bool:
        s = self._settings
        return (bool(s.auth_mechanisms) and not self._authenticated
                and (self._tls_active or not s.auth_requires_tls))

    def _auth(self, arg: str) -> Event:
        s = self._settings
        if not s.auth_mechanisms:
            raise CommandError(r.NOT_IMPLEMENTED)
        if self._helo_name is None:
            raise CommandError(r.NEED_EHLO)
        if self._authenticated:
            raise CommandError(r.ALREADY_AUTHENTICATED)  # RFC 4954 §4
        if self._in_transaction:
            raise CommandError(r.BAD_SEQUENCE)  # RFC 4954 §4: not during a transaction
        if s.auth_requires_tls and not self._tls_active:
            raise CommandError(r.MUST_STARTTLS)
        mechanism, initial = parse.parse_auth(arg)
        if mechanism not in (m.upper() for m in s.auth_mechanisms):
            raise CommandError(r.UNKNOWN_AUTH_MECHANISM)
        return ev.Auth(mechanism, initial)


_TOO_LONG = b"\x00too long"  # sentinel identity returned by _read_line


def _sanitise(reply: Reply) -> Reply:
    # A CR or LF inside reply text (e.g. an echoed argument) would inject protocol lines.
    if any("\r" in line or "\n" in line for line in reply.lines):
        return reply.with_text(tuple(line.replace("\r", " ").replace("\n", " ")
                                     for line in reply.lines))
    return reply
