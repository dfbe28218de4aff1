"""The SMTP client protocol core (RFC 5321), sans-IO, used for outbound delivery.

The connection layer feeds the server's bytes with `receive_data` (`b""` when the server
closed), drains `next_event()`, and writes the bytes that command methods return. Every
command we send is remembered in order, and each reply is matched to the oldest command
still waiting for one; that is all pipelining needs (RFC 2920 §3.2: replies come in command
order), so a MAIL+RCPT…+DATA batch is one write and its replies are attributed correctly.

A whole mail transaction is run by `start_transaction`: with PIPELINING (RFC 2920) it returns
MAIL, every RCPT and DATA at once; without it, MAIL alone, and the core itself produces the
next command after each reply (collect it with `data_to_send()`). After a 354 it emits
`ReadyForContent`; the content goes through `send_content`/`end_content` (dot-stuffed,
RFC 5321 §4.5.2), and `TransactionDone` carries the reply that decides each recipient.

Server input never raises: a malformed reply becomes a `ProtocolError` event, after which the
connection is unusable (the caller closes it). Extensions understood: PIPELINING, SIZE
(RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), STARTTLS (RFC 3207), DSN (RFC 3461),
CHUNKING (RFC 3030, tracked only), ENHANCEDSTATUSCODES (RFC 2034) and AUTH (RFC 4954).
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from kittiwake.smtp.replies import Reply

# RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers exceed that a little.
# Far beyond it, or with absurdly many lines, the peer is broken or hostile.
MAX_REPLY_LINE = 8192
MAX_REPLY_LINES = 200


class CommandKind(enum.Enum):
    GREETING = "greeting"  # the server speaks first (RFC 5321 §3.1)
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    AUTH_RESPONSE = "auth-response"  # a line answering a 334 challenge
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END_OF_DATA = "."  # the final "." after the content
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"


@dataclass(frozen=True, slots=True)
class Command:
    """One command as sent; `line` is kept out of repr so AUTH secrets never reach a log."""

    kind: CommandKind
    line: bytes = field(default=b"", repr=False)
    index: int = -1  # RCPT: the recipient's position in its transaction


# --- events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServerReply:
    command: Command
    reply: Reply


@dataclass(frozen=True, slots=True)
class ReadyForContent:  # DATA got 354 and a recipient was accepted: send the content now
    pass


@dataclass(frozen=True, slots=True)
class TransactionOutcome:
    """The replies of one transaction and, per recipient, the one that decides it.

    `replies[i]` is the final reply for recipient i when it was accepted, otherwise the
    failure that stopped it: a failed MAIL or DATA applies to every recipient, a failed RCPT
    to its own (RFC 5321 §3.3). Unexpected positive codes (a 3xx to MAIL, a 250 to DATA) are
    turned into transient failures: nothing was delivered.
    """

    mail: Reply | None
    rcpts: tuple[Reply | None, ...]
    data: Reply | None
    final: Reply | None
    replies: tuple[Reply, ...]


@dataclass(frozen=True, slots=True)
class TransactionDone:
    outcome: TransactionOutcome


@dataclass(frozen=True, slots=True)
class ProtocolError:  # the server broke the protocol: close the connection
    reason: str
    command: Command | None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    command: Command | None  # what we were still waiting for, if anything


Event = ServerReply | ReadyForContent | TransactionDone | ProtocolError | ConnectionClosed


# --- capabilities ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the server's EHLO reply advertised (RFC 5321 §4.1.1.1). HELO means none."""

    esmtp: bool = False
    pipelining: bool = False
    size: int | None = None  # None: no SIZE; 0: SIZE without a fixed limit (RFC 1870 §4)
    eight_bit_mime: bool = False
    smtputf8: bool = False
    starttls: bool = False
    dsn: bool = False
    chunking: bool = False
    enhanced_status_codes: bool = False
    auth: frozenset[str] = frozenset()
    keywords: frozenset[str] = frozenset()

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Capabilities:
        keywords: set[str] = set()
        size: int | None = None
        auth: set[str] = set()
        for line in reply.lines[1:]:  # the first line is the server's name and greeting
            words = line.split()
            if not words:
                continue
            # "AUTH=LOGIN PLAIN" is the pre-RFC 2554 spelling some servers still send.
            keyword, _, first = words[0].upper().partition("=")
            args = ([first] if first else []) + words[1:]
            keywords.add(keyword)
            if keyword == "SIZE":
                size = int(args[0]) if args and args[0].isdigit() and len(args[0]) < 20 else 0
            elif keyword == "AUTH":
                auth.update(a.upper() for a in args)
        return cls(
            esmtp=True, pipelining="PIPELINING" in keywords, size=size,
            eight_bit_mime="8BITMIME" in keywords, smtputf8="SMTPUTF8" in keywords,
            starttls="STARTTLS" in keywords, dsn="DSN" in keywords,
            chunking="CHUNKING" in keywords,
            enhanced_status_codes="ENHANCEDSTATUSCODES" in keywords,
            auth=frozenset(auth), keywords=frozenset(keywords),
        )


# --- command formatting --------------------------------------------------------------------

_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def xtext_encode(text: str) -> str:
    """RFC 3461 §4: "+", "=" and octets outside "!".."~" become "+XX" (UTF-8 octets)."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b not in (0x2B, 0x3D) else f"+{b:02X}"
                   for b in text.encode("utf-8"))


def xtext_decode(text: str) -> str:
    """Undo `xtext_encode` (lenient: a "+" not followed by two hex digits stays as it is)."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text
                  ).encode("latin-1", "replace").decode("utf-8", "replace")


def _utf8_addr_xtext(addr: str) -> str:
    # RFC 6533 §3 utf-8-addr-xtext: QCHAR as itself, anything else as \x{HEX} (no leading
    # zeros, at least two digits). Pure ASCII, so it is valid with or without SMTPUTF8.
    return "".join(ch if 0x21 <= ord(ch) <= 0x7E and ch not in "+=\\" else f"\\x{{{ord(ch):02X}}}"
                   for ch in addr)


def _check_text(value: str, what: str) -> None:
    # A CR or LF would end the command early and inject another: refuse (our caller's bug).
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"control character in {what}")


def _line(text: str) -> bytes:
    return (text + "\r\n").encode("utf-8")


def mail_command(sender: str, *, size: int | None = None, body: str | None = None,
                 smtputf8: bool = False, ret: str | None = None,
                 envid: str | None = None) -> Command:
    """`MAIL FROM:<sender>` with parameters; "" is the null reverse-path (RFC 5321 §4.5.5).

    `body` is "7BIT" or "8BITMIME" (RFC 6152 §2), `size` the message size (RFC 1870 §3),
    `ret` FULL or HDRS and `envid` the unencoded envelope id (RFC 3461 §4.3-4.4).
    """
    _check_text(sender, "sender")
    if not smtputf8 and not sender.isascii():
        raise ValueError("non-ASCII sender needs SMTPUTF8")
    parts = [f"MAIL FROM:<{sender}>"]
    if size is not None:
        parts.append(f"SIZE={int(size)}")
    if body is not None:
        if body.upper() not in ("7BIT", "8BITMIME"):
            raise ValueError(f"bad BODY {body!r}")
        parts.append(f"BODY={body.upper()}")
    if smtputf8:
        parts.append("SMTPUTF8")  # RFC 6531 §3.4: a parameter without a value
    if ret is not None:
        if ret.upper() not in ("FULL", "HDRS"):
            raise ValueError(f"bad RET {ret!r}")
        parts.append(f"RET={ret.upper()}")
    if envid is not None:
        parts.append(f"ENVID={xtext_encode(envid)}")
    return Command(CommandKind.MAIL, _line(" ".join(parts)))


def rcpt_command(recipient: str, *, notify: str | None = None, orcpt: str | None = None,
                 index: int = 0) -> Command:
    """`RCPT TO:<recipient>` with the RFC 3461 §4.1-4.2 NOTIFY and ORCPT parameters.

    `notify` is "NEVER" or a comma list of SUCCESS, FAILURE, DELAY; `orcpt` is
    "addr-type;address" with the address unencoded ("rfc822;" is assumed without a type).
    """
    _check_text(recipient, "recipient")
    parts = [f"RCPT TO:<{recipient}>"]
    if notify is not None:
        words = [w.strip().upper() for w in notify.split(",")]
        if words != ["NEVER"] and (not set(words) <= _NOTIFY or len(set(words)) != len(words)):
            raise ValueError(f"bad NOTIFY {notify!r}")
        parts.append("NOTIFY=" + ",".join(words))
    if orcpt is not None:
        _check_text(orcpt, "ORCPT")
        addr_type, semi, addr = orcpt.partition(";")
        if not semi:
            addr_type, addr = "rfc822", orcpt
        if addr.isascii() and addr_type.lower() != "utf-8":
            parts.append(f"ORCPT={addr_type};{xtext_encode(addr)}")
        else:  # RFC 6533 §3: a non-ASCII original address travels as utf-8-addr-xtext
            parts.append(f"ORCPT=utf-8;{_utf8_addr_xtext(addr)}")
    return Command(CommandKind.RCPT, _line(" ".join(parts)), index)


# --- content -------------------------------------------------------------------------------

_LINE_END = re.compile(rb"\r\n|\r|\n")


class DotStuffer:
    """Message content → DATA wire form, chunk by chunk (RFC 5321 §4.5.2).

    A line starting with "." gets a second one. Bare CR and bare LF become CRLF: RFC 5321
    §2.3.8 forbids them, and a receiver that reads "\\n.\\n" as the end of data would
    otherwise let content smuggle a second message (CVE-2023-51764). `end()` adds the CRLF a
    message without a final line ending lacks, then the ".\\r\\n" terminator.
    """

    __slots__ = ("_held_cr", "_line_start")

    def __init__(self) -> None:
        self._line_start = True  # the DATA command's CRLF precedes the first line
        self._held_cr = False  # a final CR may be the first half of a CRLF split by chunks

    def feed(self, chunk: bytes) -> bytes:
        data = (b"\r" + chunk) if self._held_cr else bytes(chunk)
        self._held_cr = data.endswith(b"\r")
        if self._held_cr:
            data = data[:-1]
        if not data:
            return b""
        data = _LINE_END.sub(b"\r\n", data)
        if self._line_start and data.startswith(b"."):
            data = b"." + data
        data = data.replace(b"\r\n.", b"\r\n..")
        self._line_start = data.endswith(b"\r\n")
        return data

    def end(self) -> bytes:
        out = b""
        if self._held_cr:
            out, self._held_cr, self._line_start = b"\r\n", False, True
        if not self._line_start:
            out += b"\r\n"
        self._line_start = True
        return out + b".\r\n"


def dot_stuff(content: bytes) -> bytes:
    """The whole content in DATA wire form, terminator included."""
    stuffer = DotStuffer()
    return stuffer.feed(content) + stuffer.end()


# --- reply parsing ---------------------------------------------------------------------------

_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:[ \t]+|\Z)")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _make_reply(code: int, texts: list[str], kind: CommandKind | None) -> Reply:
    enhanced = ""
    # RFC 2034 §4: the enhanced code leads the text of every line, except in the greeting
    # and EHLO/HELO replies; its class must agree with the reply code's first digit.
    if kind not in (CommandKind.GREETING, CommandKind.EHLO, CommandKind.HELO):
        match = _ENHANCED.match(texts[0])
        if match and int(match.group(1)) == code // 100:
            enhanced = ".".join(match.groups())
            texts = [t[len(m.group(0)):] if (m := _ENHANCED.match(t)) and
                     ".".join(m.groups()) == enhanced else t for t in texts]
    return Reply(code, enhanced, texts[0] if len(texts) == 1 else tuple(texts))


@dataclass(slots=True)
class _Transaction:
    mail: Command
    rcpts: list[Command]
    pipelined: bool
    mail_reply: Reply | None = None
    rcpt_replies: list[Reply | None] = field(default_factory=list)
    data_reply: Reply | None = None
    final_reply: Reply | None = None
    content: DotStuffer | None = None  # set while the content is being sent

    def accepted(self) -> bool:
        return (self.mail_reply is not None and 200 <= self.mail_reply.code < 300
                and any(r is not None and 200 <= r.code < 300 for r in self.rcpt_replies))

    def outcome(self, missing: Reply) -> TransactionOutcome:
        def failure(reply: Reply | None) -> Reply:
            if reply is None:
                return missing
            if reply.code < 400:
                return Reply(451, "4.5.0", f"unexpected reply {reply.code} {reply.lines[0]}")
            return reply

        replies = []
        for rcpt_reply in self.rcpt_replies:
            if self.mail_reply is None or not 200 <= self.mail_reply.code < 300:
                replies.append(failure(self.mail_reply))
            elif rcpt_reply is None or not 200 <= rcpt_reply.code < 300:
                replies.append(failure(rcpt_reply))
            elif self.data_reply is None or self.data_reply.code != 354:
                replies.append(failure(self.data_reply))
            elif self.final_reply is None or not 200 <= self.final_reply.code < 300:
                replies.append(failure(self.final_reply))
            else:
                replies.append(self.final_reply)
        return TransactionOutcome(self.mail_reply, tuple(self.rcpt_replies), self.data_reply,
                                  self.final_reply, tuple(replies))


class ClientConnection:
    """One SMTP client connection's protocol state."""

    def __init__(self) -> None:
        self.capabilities = Capabilities()
        self.authenticated = False
        self._buf = bytearray()
        self._code: int | None = None  # code of the multi-line reply being read
        self._texts: list[str] = []
        self._pending: deque[Command] = deque([Command(CommandKind.GREETING)])
        self._events: deque[Event] = deque()
        self._outbox = bytearray()
        self._tx: _Transaction | None = None
        self._auth_steps: deque[bytes] = deque()
        self._tls_pending = False  # STARTTLS got 220; nothing may arrive before the handshake
        self._broken = False

    # --- state ----------------------------------------------------------------------------
    @property
    def awaiting(self) -> Command | None:
        """The command whose reply is expected next (for choosing a timeout)."""
        return self._pending[0] if self._pending else None

    @property
    def broken(self) -> bool:
        return self._broken

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    # --- input ----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self._broken:
            return
        if not data:
            if self._buf:  # a last line without CRLF: take it, then report the close
                self._take_line(bytes(self._buf))
                self._buf.clear()
            if not self._broken:
                self._broken = True
                self._events.append(ConnectionClosed(self.awaiting))
            return
        if self._tls_pending:
            self._fail("data after the 220 reply to STARTTLS (RFC 3207 §6 response injection)")
            return
        self._buf += data
        while not self._broken:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_REPLY_LINE:
                    self._fail("reply line too long")
                return
            line = bytes(self._buf[:end])
            del self._buf[:end + 1]
            self._take_line(line[:-1] if line.endswith(b"\r") else line)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        """Commands the core produced by itself (non-pipelined transaction steps, AUTH)."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    # --- simple commands ------------------------------------------------------------------
    def ehlo(self, name: str) -> bytes:
        return self._send(Command(CommandKind.EHLO, _line(f"EHLO {self._host(name)}")))

    def helo(self, name: str) -> bytes:
        return self._send(Command(CommandKind.HELO, _line(f"HELO {self._host(name)}")))

    def starttls(self) -> bytes:
        return self._send(Command(CommandKind.STARTTLS, b"STARTTLS\r\n"))

    def tls_started(self) -> None:
        """The TLS handshake is done: RFC 3207 §4.2 says forget all the server told us."""
        self._tls_pending = False
        self._buf.clear()
        self.capabilities = Capabilities()

    def auth_plain(self, user: str, password: str) -> bytes:
        """RFC 4954 AUTH with RFC 4616 PLAIN, the credentials as initial response."""
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
        return self._send(Command(CommandKind.AUTH, _line(f"AUTH PLAIN {token}")))

    def auth_login(self, user: str, password: str) -> bytes:
        """AUTH LOGIN (draft-murchison-sasl-login): user and password answer two 334s."""
        self._auth_steps = deque(base64.b64encode(s.encode()) + b"\r\n" for s in (user, password))
        return self._send(Command(CommandKind.AUTH, b"AUTH LOGIN\r\n"))

    def rset(self) -> bytes:
        return self._send(Command(CommandKind.RSET, b"RSET\r\n"))

    def noop(self) -> bytes:
        return self._send(Command(CommandKind.NOOP, b"NOOP\r\n"))

    def quit(self) -> bytes:
        return self._send(Command(CommandKind.QUIT, b"QUIT\r\n"))

    # --- the mail transaction -------------------------------------------------------------
    def start_transaction(self, mail: Command, rcpts: Sequence[Command],
                          *, pipelining: bool | None = None) -> bytes:
        """Begin MAIL/RCPT/DATA; pipelined (RFC 2920 §3.1: DATA last) when the server can."""
        if self._tx is not None:
            raise RuntimeError("a transaction is already in progress")
        if not rcpts:
            raise ValueError("a transaction needs at least one recipient")
        rcpts = [Command(CommandKind.RCPT, c.line, i) for i, c in enumerate(rcpts)]
        pipelined = self.capabilities.pipelining if pipelining is None else pipelining
        self._tx = _Transaction(mail, rcpts, pipelined, rcpt_replies=[None] * len(rcpts))
        if pipelined:
            return self._send(mail, *rcpts, Command(CommandKind.DATA, b"DATA\r\n"))
        return self._send(mail)

    def send_content(self, chunk: bytes) -> bytes:
        if self._tx is None or self._tx.content is None:
            raise RuntimeError("not sending content")
        return self._tx.content.feed(chunk)

    def end_content(self) -> bytes:
        if self._tx is None or self._tx.content is None:
            raise RuntimeError("not sending content")
        tail = self._tx.content.end()
        self._tx.content = None
        self._pending.append(Command(CommandKind.END_OF_DATA))
        return tail

    def abort_transaction(self, reply: Reply) -> TransactionOutcome | None:
        """The connection failed mid-transaction: decide what is known, `reply` for the rest.

        A recipient refused before the failure keeps its refusal; one that was accepted gets
        `reply` (normally transient: whether the server took the message is unknown). The
        connection is unusable afterwards.
        """
        self._broken = True
        tx, self._tx = self._tx, None
        return tx.outcome(reply) if tx is not None else None

    # --- internals ------------------------------------------------------------------------
    def _host(self, name: str) -> str:
        if not name or any(ch <= " " or ch == "\x7f" for ch in name):
            raise ValueError("bad EHLO/HELO name")
        return name

    def _send(self, *commands: Command) -> bytes:
        if self._broken:
            raise RuntimeError("connection is closed or broken")
        self._pending.extend(commands)
        return b"".join(c.line for c in commands)

    def _fail(self, reason: str) -> None:
        self._broken = True
        self._events.append(ProtocolError(reason, self.awaiting))
        self._pending.clear()

    def _take_line(self, line: bytes) -> None:
        # RFC 5321 §4.2: Reply-code [ SP textstring ] CRLF, "-" instead of SP on all but the
        # last line, the same code on every line.
        if len(line) < 3 or not line[:3].isdigit() or not 200 <= int(line[:3]) <= 599:
            self._fail("malformed reply line")
            return
        code, sep = int(line[:3]), line[3:4]
        if sep not in (b"", b" ", b"-"):
            self._fail("malformed reply line")
            return
        if self._code is not None and code != self._code:
            self._fail("reply code changed within a multi-line reply")
            return
        self._code = code
        self._texts.append(_CONTROL.sub("?", line[4:].decode("utf-8", "replace")))
        if sep == b"-":
            if len(self._texts) > MAX_REPLY_LINES:
                self._fail("reply has too many lines")
            return
        texts, self._code, self._texts = self._texts, None, []
        if not self._pending:
            self._fail(f"unexpected reply {code} {texts[0]}")
            return
        command = self._pending.popleft()
        reply = _make_reply(code, texts, command.kind)
        self._events.append(ServerReply(command, reply))
        self._after_reply(command, reply)

    def _after_reply(self, command: Command, reply: Reply) -> None:
        kind, ok = command.kind, 200 <= reply.code < 300
        if kind is CommandKind.EHLO and ok:
            self.capabilities = Capabilities.from_ehlo(reply)
        elif kind is CommandKind.HELO and ok:
            self.capabilities = Capabilities()
        elif kind is CommandKind.STARTTLS and ok:
            self._tls_pending = True
            if self._buf:
                self._fail("data after the 220 reply to STARTTLS (RFC 3207 §6 response injection)")
        elif kind in (CommandKind.AUTH, CommandKind.AUTH_RESPONSE):
            self._after_auth(reply)
        elif self._tx is not None and kind in (CommandKind.MAIL, CommandKind.RCPT,
                                               CommandKind.DATA, CommandKind.END_OF_DATA):
            self._after_transaction_reply(self._tx, command, reply)

    def _after_auth(self, reply: Reply) -> None:
        if reply.code == 334:
            # RFC 4954 §4: a challenge we have no answer for is cancelled with "*".
            step = self._auth_steps.popleft() if self._auth_steps else b"*\r\n"
            self._outbox += step
            self._pending.append(Command(CommandKind.AUTH_RESPONSE, step))
            return
        self._auth_steps.clear()
        self.authenticated = reply.code == 235

    def _after_transaction_reply(self, tx: _Transaction, command: Command, reply: Reply) -> None:
        ok = 200 <= reply.code < 300
        if command.kind is CommandKind.MAIL:
            tx.mail_reply = reply
            if not tx.pipelined:
                if ok:
                    self._queue(tx.rcpts[0])
                else:
                    self._finish(tx)
        elif command.kind is CommandKind.RCPT:
            tx.rcpt_replies[command.index] = reply
            if not tx.pipelined:
                if command.index + 1 < len(tx.rcpts):
                    self._queue(tx.rcpts[command.index + 1])
                elif tx.accepted():
                    self._queue(Command(CommandKind.DATA, b"DATA\r\n"))
                else:
                    self._finish(tx)
        elif command.kind is CommandKind.DATA:
            tx.data_reply = reply
            if reply.code != 354:
                self._finish(tx)
            elif tx.accepted():
                tx.content = DotStuffer()
                self._events.append(ReadyForContent())
            else:
                # RFC 2920 §3.1: DATA was accepted although no recipient was; end the
                # (empty) message with a lone dot, which delivers nothing.
                self._queue(Command(CommandKind.END_OF_DATA, b".\r\n"))
        else:  # END_OF_DATA
            tx.final_reply = reply if tx.accepted() else None
            self._finish(tx)

    def _queue(self, command: Command) -> None:
        self._outbox += command.line
        self._pending.append(command)

    def _finish(self, tx: _Transaction) -> None:
        self._tx = None
        self._events.append(TransactionDone(tx.outcome(
            Reply(451, "4.3.0", "transaction ended without a reply"))))
