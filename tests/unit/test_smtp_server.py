"""The sans-IO SMTP server core: commands, sequencing, extensions (RFC 5321 and ESMTP).

DATA/BDAT streaming lives in test_smtp_server_data.py, property tests in
test_smtp_server_props.py; both reuse the `run` driver defined here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from kittiwake.address import Address
from kittiwake.smtp import events as ev
from kittiwake.smtp import replies as R
from kittiwake.smtp.replies import Reply
from kittiwake.smtp.server import ServerConnection, ServerSettings

Policy = Callable[[ServerConnection, ev.Event], Reply | None]


def accept_all(conn: ServerConnection, event: ev.Event) -> Reply | None:
    """The session's answers when policy accepts everything."""
    match event:
        case ev.Helo(extended=True):
            return conn.ehlo_reply()
        case ev.Helo():
            return conn.helo_reply()
        case ev.MailFrom():
            return R.SENDER_OK
        case ev.RcptTo():
            return R.RECIPIENT_OK
        case ev.DataStart():
            return R.START_DATA
        case ev.BdatChunkEnd():
            return R.OK
        case ev.DataEnd(error=error):
            return error or R.MESSAGE_ACCEPTED
        case ev.Rset():
            return R.RESET_OK
        case ev.Noop():
            return R.NOOP_OK
        case ev.Quit():
            return R.BYE
        case ev.Vrfy():
            return R.CANNOT_VRFY
        case ev.Help():
            return R.HELP
        case ev.StartTls():
            return R.READY_FOR_TLS
        case ev.Auth(initial=None):
            return Reply(334, "", "")
        case ev.Auth():
            return R.AUTH_OK
        case ev.AuthResponse(line="*"):
            return R.AUTH_CANCELLED
        case ev.AuthResponse():
            return R.AUTH_OK
        case ev.ProtocolError(reply=reply):
            return reply
    return None  # DataChunk, BdatStart, ConnectionClosed


@dataclass
class Result:
    conn: ServerConnection
    output: bytes = b""
    messages: list[bytes] = field(default_factory=list)
    events: list[ev.Event] = field(default_factory=list)

    @property
    def replies(self) -> list[str]:
        """Each reply's last line (the one with a space after the code)."""
        lines = self.output.decode("utf-8", "replace").split("\r\n")
        return [line for line in lines if len(line) >= 4 and line[3] == " "]

    @property
    def codes(self) -> list[int]:
        return [int(line[:3]) for line in self.replies]

    def of(self, kind: type) -> list[ev.Event]:
        return [e for e in self.events if isinstance(e, kind)]


def drive(res: Result, policy: Policy, chunks: Iterable[bytes], *,
          finish_tls: bool = True) -> Result:
    conn = res.conn
    out = bytearray(res.output)
    current = bytearray()
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not None:
            res.events.append(event)
            if isinstance(event, ev.DataChunk):
                current += event.data
                continue
            if isinstance(event, ev.BdatStart | ev.DataStart):
                current = bytearray()
            if isinstance(event, ev.BdatStart | ev.ConnectionClosed):
                continue
            reply = policy(conn, event)
            assert reply is not None, event
            out += conn.send(reply)
            if isinstance(event, ev.DataEnd) and 200 <= reply.code < 300:
                res.messages.append(bytes(current))
            if isinstance(event, ev.StartTls) and reply.code == 220 and finish_tls:
                conn.tls_started()
    res.output = bytes(out)
    return res


def run(chunks: Iterable[bytes] | bytes, settings: ServerSettings | None = None,
        policy: Policy = accept_all, *, tls_active: bool = False,
        finish_tls: bool = True) -> Result:
    """Greet, feed `chunks` one receive_data() each, answer every event with `policy`."""
    conn = ServerConnection(settings or ServerSettings(), tls_active=tls_active)
    res = Result(conn, conn.greeting())
    if isinstance(chunks, bytes):
        chunks = [chunks]
    return drive(res, policy, chunks, finish_tls=finish_tls)


EHLO = b"EHLO client.example\r\n"
ENVELOPE = EHLO + b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"


# --- greeting -------------------------------------------------------------------------------

def test_greeting_names_host() -> None:
    conn = ServerConnection(ServerSettings(hostname="mx.example.net"))
    assert conn.next_event() is None
    assert conn.greeting() == b"220 mx.example.net ESMTP Kittiwake\r\n"


def test_no_events_before_greeting_and_early_talker_is_refused_and_closed() -> None:
    conn = ServerConnection(ServerSettings())
    conn.receive_data(EHLO)
    assert conn.next_event() is None
    conn.greeting()
    assert conn.next_event() == ev.ProtocolError(R.EARLY_TALKER)
    assert conn.next_event() is None  # awaiting the reply
    assert conn.send(R.EARLY_TALKER).startswith(b"554 5.5.0 ")
    assert conn.closed
    assert conn.next_event() is None


def test_client_that_waits_is_served() -> None:
    res = run([EHLO])
    assert res.codes == [220, 250]
    assert res.of(ev.Helo) == [ev.Helo("client.example", True)]


# --- EHLO / HELO ----------------------------------------------------------------------------

def ehlo_keywords(settings: ServerSettings, *, tls_active: bool = False) -> list[str]:
    res = run([EHLO], settings, tls_active=tls_active)
    lines = res.output.decode().split("\r\n")[1:-1]
    assert lines[0] == f"250-{settings.hostname}"
    assert lines[-1].startswith("250 ")
    return [line[4:] for line in lines[1:]]


def test_ehlo_advertises_extensions_without_enhanced_codes() -> None:
    assert ehlo_keywords(ServerSettings()) == [
        "PIPELINING", "SIZE 26214400", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
        "CHUNKING", "DSN"]


def test_ehlo_omits_disabled_extensions() -> None:
    settings = ServerSettings(max_message_size=1000, smtputf8=False, chunking=False, dsn=False)
    assert ehlo_keywords(settings) == ["PIPELINING", "SIZE 1000", "8BITMIME",
                                       "ENHANCEDSTATUSCODES"]


def test_ehlo_offers_starttls_but_not_auth_before_tls() -> None:
    settings = ServerSettings(starttls=True, auth_mechanisms=("PLAIN", "LOGIN"))
    words = ehlo_keywords(settings)
    assert "STARTTLS" in words
    assert not any(w.startswith("AUTH") for w in words)


def test_ehlo_offers_auth_but_not_starttls_under_tls() -> None:
    settings = ServerSettings(starttls=True, auth_mechanisms=("PLAIN", "LOGIN"))
    words = ehlo_keywords(settings, tls_active=True)
    assert "STARTTLS" not in words
    assert words[-1] == "AUTH PLAIN LOGIN"


def test_ehlo_offers_auth_without_tls_when_allowed() -> None:
    settings = ServerSettings(auth_mechanisms=("PLAIN",), auth_requires_tls=False)
    assert ehlo_keywords(settings)[-1] == "AUTH PLAIN"


def test_helo_gets_plain_250_and_helo_without_name_is_501() -> None:
    res = run(b"HELO\r\nEHLO   \r\nHELO client.example\r\n")
    assert res.replies[1:] == [
        "501 5.5.4 EHLO/HELO requires a domain or address literal",
        "501 5.5.4 EHLO/HELO requires a domain or address literal",
        "250 localhost"]
    assert res.conn.helo_name == "client.example"
    assert not res.conn.extended


def test_ehlo_resets_the_transaction() -> None:
    res = run(ENVELOPE + EHLO + b"DATA\r\n")
    assert res.replies[-1] == "503 5.5.1 Need MAIL command first"
    assert not res.conn.in_transaction


def test_commands_are_case_insensitive_and_bare_lf_ends_commands() -> None:
    res = run(b"ehlo client.example\nmail from:<a@example.com>\nrcpt to:<b@example.org>\n"
              b"noop\n")
    assert res.codes == [220, 250, 250, 250, 250]


# --- a whole transaction --------------------------------------------------------------------

def test_full_transaction() -> None:
    res = run(ENVELOPE + b"DATA\r\nSubject: hi\r\n\r\nHello\r\n.\r\nQUIT\r\n")
    assert res.codes == [220, 250, 250, 250, 354, 250, 221]
    assert res.messages == [b"Subject: hi\r\n\r\nHello\r\n"]
    assert res.of(ev.MailFrom) == [ev.MailFrom(Address("a", "example.com"), {})]
    assert res.of(ev.RcptTo) == [ev.RcptTo(Address("b", "example.org"), {})]
    assert res.conn.closed
    assert not res.conn.in_transaction


def test_rset_ends_transaction_and_keeps_helo() -> None:
    res = run(ENVELOPE + b"RSET\r\nRCPT TO:<b@example.org>\r\nMAIL FROM:<>\r\n")
    assert res.replies[-2:] == ["503 5.5.1 Need MAIL command first", "250 2.1.0 Sender OK"]
    assert res.of(ev.MailFrom)[-1] == ev.MailFrom(None, {})
    assert res.conn.helo_name == "client.example"


def test_several_messages_in_one_session() -> None:
    body = b"DATA\r\nx\r\n.\r\n"
    res = run(ENVELOPE + body + b"MAIL FROM:<c@example.com>\r\nRCPT TO:<d@example.org>\r\n" + body)
    assert res.messages == [b"x\r\n", b"x\r\n"]
    assert res.codes == [220, 250, 250, 250, 354, 250, 250, 250, 354, 250]


def test_mail_with_space_after_colon_is_tolerated() -> None:
    res = run(EHLO + b"MAIL FROM: <a@example.com>\r\nRCPT TO:  <b@example.org>\r\n")
    assert res.codes == [220, 250, 250, 250]


# --- pipelining (RFC 2920) ------------------------------------------------------------------

def test_pipelined_commands_are_answered_in_order() -> None:
    res = run(ENVELOPE + b"RCPT TO:<c@example.org>\r\nDATA\r\n")
    assert res.codes == [220, 250, 250, 250, 250, 354]
    assert res.conn.recipient_count == 2


def refuse_mail(conn: ServerConnection, event: ev.Event) -> Reply | None:
    if isinstance(event, ev.MailFrom):
        return R.RELAY_DENIED
    return accept_all(conn, event)


def test_rejected_mail_makes_pipelined_rcpt_and_data_fail() -> None:
    res = run(ENVELOPE + b"DATA\r\n", policy=refuse_mail)
    assert res.replies[2:] == ["550 5.7.1 Relaying denied", "503 5.5.1 Need MAIL command first",
                               "503 5.5.1 Need MAIL command first"]
    assert res.of(ev.RcptTo) == []
    assert res.of(ev.DataStart) == []


def test_rejected_rcpt_is_not_counted() -> None:
    def refuse_rcpt(conn: ServerConnection, event: ev.Event) -> Reply | None:
        return R.NO_SUCH_USER if isinstance(event, ev.RcptTo) else accept_all(conn, event)

    res = run(ENVELOPE + b"DATA\r\n", policy=refuse_rcpt)
    assert res.replies[-1] == "503 5.5.1 Need RCPT command first"
    assert res.conn.recipient_count == 0


def test_next_command_waits_for_the_reply() -> None:
    conn = ServerConnection(ServerSettings())
    conn.greeting()
    conn.receive_data(EHLO + b"NOOP\r\n")
    assert isinstance(conn.next_event(), ev.Helo)
    assert conn.awaiting_reply
    assert conn.next_event() is None
    conn.send(conn.ehlo_reply())
    assert conn.next_event() == ev.Noop()


# --- sequence and syntax errors -------------------------------------------------------------

@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (b"MAIL FROM:<a@example.com>\r\n", R.NEED_EHLO),
        (EHLO + b"RCPT TO:<b@example.org>\r\n", R.NEED_MAIL),
        (EHLO + b"DATA\r\n", R.NEED_MAIL),
        (EHLO + b"MAIL FROM:<a@example.com>\r\nDATA\r\n", R.NEED_RCPT),
        (EHLO + b"MAIL FROM:<a@example.com>\r\nMAIL FROM:<a@example.com>\r\n", R.NESTED_MAIL),
        (ENVELOPE + b"BDAT 1\r\nxDATA\r\n", R.BDAT_DATA_MIXED),
        (b"FOO\r\n", R.UNKNOWN_COMMAND),
        (b"\r\n", R.UNKNOWN_COMMAND),
        (b"EXPN staff\r\n", R.NOT_IMPLEMENTED),
        (b"MAIL FROM<a@example.com>\r\n", R.NEED_EHLO),
        (EHLO + b"MAIL FROM<a@example.com>\r\n", R.SYNTAX_ERROR),
        (EHLO + b"MAIL TO:<a@example.com>\r\n", R.SYNTAX_ERROR),
        (EHLO + b"MAIL FROM:a@example.com\r\n", R.BAD_SENDER_SYNTAX),
        (EHLO + b"MAIL FROM:<a@example.com\r\n", R.BAD_SENDER_SYNTAX),
        (EHLO + b"MAIL FROM:<a@@example.com>\r\n", R.BAD_SENDER_SYNTAX),
        (EHLO + b"MAIL FROM:<a@example.com>SIZE=1\r\n", R.SYNTAX_ERROR),
        (EHLO + b"MAIL FROM:<>\r\nRCPT TO:<>\r\n", R.BAD_ADDRESS_SYNTAX),
        (EHLO + b"MAIL FROM:<>\r\nRCPT TO:<b@example..org>\r\n", R.BAD_ADDRESS_SYNTAX),
        (EHLO + b"MAIL FROM:<>\r\nRCPT TO:b@example.org\r\n", R.BAD_ADDRESS_SYNTAX),
        (ENVELOPE + b"DATA now\r\n", R.SYNTAX_ERROR),
        (b"RSET x\r\n", R.SYNTAX_ERROR),
        (b"QUIT now\r\n", R.SYNTAX_ERROR),
        (b"VRFY\r\n", R.SYNTAX_ERROR),
        (b"BDAT\r\n", R.SYNTAX_ERROR),
        (b"BDAT x\r\n", R.SYNTAX_ERROR),
        (b"BDAT 1 FIRST\r\n", R.SYNTAX_ERROR),
        (b"STARTTLS\r\n", R.NOT_IMPLEMENTED),
        (b"AUTH PLAIN\r\n", R.NOT_IMPLEMENTED),
    ],
)
def test_protocol_errors(commands: bytes, expected: Reply) -> None:
    res = run(commands)
    assert res.events[-1] == ev.ProtocolError(expected)
    assert res.output.endswith(expected.to_bytes())
    assert res.conn.error_count == 1
    assert not res.conn.closed


def test_vrfy_help_noop() -> None:
    res = run(b"VRFY postmaster\r\nHELP MAIL\r\nNOOP whatever\r\n")
    assert res.events == [ev.Vrfy("postmaster"), ev.Help("MAIL"), ev.Noop()]
    assert res.codes == [220, 252, 214, 250]


def test_too_many_errors_closes_with_421() -> None:
    res = run(b"FOO\r\n" * 4 + b"NOOP\r\n", ServerSettings(max_errors=3))
    assert res.codes == [220, 500, 500, 500, 421]
    assert res.replies[-1] == "421 4.7.0 Too many errors, closing connection"
    assert res.conn.closed
    assert ev.Noop() not in res.events


def test_any_421_closes() -> None:
    conn = ServerConnection(ServerSettings())
    conn.greeting()
    assert conn.send(R.TIMEOUT) == b"421 4.4.2 Timeout exceeded, closing connection\r\n"
    assert conn.closed
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() is None


def test_quit_closes_and_later_input_is_ignored() -> None:
    res = run([b"QUIT\r\nNOOP\r\n", b"NOOP\r\n"])
    assert res.events == [ev.Quit()]
    assert res.conn.closed


def test_peer_close_is_an_event() -> None:
    res = run([b"NOOP\r\nNOO", b""])
    assert res.events == [ev.Noop(), ev.ConnectionClosed()]
    assert res.conn.closed


# --- line length (RFC 5321 §4.5.3.1.4) ------------------------------------------------------

def test_command_line_of_exactly_512_octets_is_accepted() -> None:
    line = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    assert len(line) == 512
    assert run(line).codes == [220, 250]


@pytest.mark.parametrize("split", [None, 1, 7, 100, 511, 512, 513, 600])
def test_overlong_line_is_refused_once_without_desynchronising(split: int | None) -> None:
    stream = b"NOOP " + b"x" * 2000 + b"MAIL FROM:<a@b>\r\nRSET\r\n"
    chunks = [stream] if split is None else [stream[i:i + split]
                                             for i in range(0, len(stream), split)]
    res = run(chunks)
    assert res.replies[1:] == ["500 5.5.2 Line too long", "250 2.0.0 Reset OK"]
    assert len(res.conn._buf) == 0  # nothing of the long line is kept


def test_overlong_line_is_not_buffered() -> None:
    conn = ServerConnection(ServerSettings())
    conn.greeting()
    conn.receive_data(b"x" * 600)
    assert conn.next_event() == ev.ProtocolError(R.LINE_TOO_LONG)
    conn.send(R.LINE_TOO_LONG)
    for _ in range(100):
        conn.receive_data(b"y" * 10000)
        assert conn.next_event() is None
        assert len(conn._buf) == 0
    conn.receive_data(b"tail\r\nNOOP\r\n")
    assert conn.next_event() == ev.Noop()


def test_auth_command_line_may_be_longer() -> None:
    settings = ServerSettings(auth_mechanisms=("PLAIN",), auth_requires_tls=False)
    res = run(EHLO + b"AUTH PLAIN " + b"A" * 4000 + b"\r\n", settings)
    assert res.of(ev.Auth) == [ev.Auth("PLAIN", "A" * 4000)]


# --- parameters -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (b" SIZE=1000", {"SIZE": "1000"}),
        (b" size=1000 body=8bitmime", {"SIZE": "1000", "BODY": "8bitmime"}),
        (b" BODY=7BIT  SMTPUTF8", {"BODY": "7BIT", "SMTPUTF8": None}),
        (b" RET=HDRS ENVID=QQ314159+2B", {"RET": "HDRS", "ENVID": "QQ314159+2B"}),
        (b" SIZE=26214400", {"SIZE": "26214400"}),
    ],
)
def test_mail_params_are_passed_on(params: bytes, expected: dict[str, str | None]) -> None:
    res = run(EHLO + b"MAIL FROM:<a@example.com>" + params + b"\r\n")
    assert res.codes == [220, 250, 250]
    assert res.of(ev.MailFrom) == [ev.MailFrom(Address("a", "example.com"), expected)]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (b" SIZE=26214401", R.MESSAGE_TOO_BIG),
        (b" SIZE=99999999999999999999", R.MESSAGE_TOO_BIG),
        (b" SIZE=", R.SYNTAX_ERROR),
        (b" SIZE", R.SYNTAX_ERROR),
        (b" SIZE=-1", R.SYNTAX_ERROR),
        (b" SIZE=1 SIZE=2", R.SYNTAX_ERROR),
        (b" SIZE=1 size=1", R.SYNTAX_ERROR),
        (b" BODY=BINARYMIME", R.SYNTAX_ERROR),
        (b" BODY", R.SYNTAX_ERROR),
        (b" SMTPUTF8=yes", R.SYNTAX_ERROR),
        (b" RET=ALL", R.SYNTAX_ERROR),
        (b" ENVID=a=b", R.SYNTAX_ERROR),
        (b" ENVID=a+zz", R.SYNTAX_ERROR),
        (b" ENVID=" + b"x" * 101, R.SYNTAX_ERROR),
        (b" XFOO=1", R.PARAM_NOT_RECOGNIZED),
        (b" NOTIFY=NEVER", R.PARAM_NOT_RECOGNIZED),
        (b" AUTH=<>", R.PARAM_NOT_RECOGNIZED),  # AUTH not offered
        (b" =x", R.SYNTAX_ERROR),
        (b" S_Z=1", R.SYNTAX_ERROR),
    ],
)
def test_bad_mail_params(params: bytes, expected: Reply) -> None:
    res = run(EHLO + b"MAIL FROM:<a@example.com>" + params + b"\r\n")
    assert res.events[-1] == ev.ProtocolError(expected)
    assert not res.conn.in_transaction


def test_dsn_params_are_unknown_when_dsn_is_off() -> None:
    settings = ServerSettings(dsn=False)
    res = run(EHLO + b"MAIL FROM:<a@example.com> RET=FULL\r\nMAIL FROM:<a@example.com>\r\n"
              b"RCPT TO:<b@example.org> NOTIFY=NEVER\r\n", settings)
    assert res.codes == [220, 250, 555, 250, 555]


def test_auth_param_is_passed_through_when_auth_is_offered() -> None:
    settings = ServerSettings(auth_mechanisms=("PLAIN",))
    res = run(EHLO + b"MAIL FROM:<a@example.com> AUTH=e+3Dmc2@example.com\r\n", settings)
    assert res.of(ev.MailFrom)[0].params == {"AUTH": "e+3Dmc2@example.com"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (b" NOTIFY=NEVER", {"NOTIFY": "NEVER"}),
        (b" NOTIFY=success,FAILURE,Delay", {"NOTIFY": "success,FAILURE,Delay"}),
        (b" ORCPT=rfc822;b+40example.org", {"ORCPT": "rfc822;b+40example.org"}),
        (b" NOTIFY=FAILURE ORCPT=rfc822;b@example.org",
         {"NOTIFY": "FAILURE", "ORCPT": "rfc822;b@example.org"}),
    ],
)
def test_rcpt_dsn_params(params: bytes, expected: dict[str, str | None]) -> None:
    res = run(ENVELOPE.replace(b"example.org>", b"example.org>" + params))
    assert res.codes == [220, 250, 250, 250]
    assert res.of(ev.RcptTo)[0].params == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (b" NOTIFY=NEVER,SUCCESS", R.SYNTAX_ERROR),
        (b" NOTIFY=SOMETIMES", R.SYNTAX_ERROR),
        (b" NOTIFY=FAILURE,FAILURE", R.SYNTAX_ERROR),
        (b" NOTIFY", R.SYNTAX_ERROR),
        (b" ORCPT=b@example.org", R.SYNTAX_ERROR),
        (b" ORCPT=rfc822;", R.SYNTAX_ERROR),
        (b" ORCPT=rfc822;a+4", R.SYNTAX_ERROR),
        (b" SIZE=10", R.PARAM_NOT_RECOGNIZED),
        (b" NOTIFY=NEVER NOTIFY=NEVER", R.SYNTAX_ERROR),
    ],
)
def test_bad_rcpt_params(params: bytes, expected: Reply) -> None:
    res = run(ENVELOPE.replace(b"example.org>", b"example.org>" + params))
    assert res.events[-1] == ev.ProtocolError(expected)
    assert res.conn.recipient_count == 0


# --- addresses ------------------------------------------------------------------------------

@pytest.mark.parametrize("rcpt", [b"<postmaster>", b"<Postmaster>", b"<POSTMASTER>"])
def test_postmaster_without_domain_is_accepted(rcpt: bytes) -> None:
    settings = ServerSettings(hostname="MX.Example.NET")
    res = run(EHLO + b"MAIL FROM:<>\r\nRCPT TO:" + rcpt + b"\r\n", settings)
    assert res.of(ev.RcptTo) == [ev.RcptTo(Address("postmaster", "mx.example.net"), {})]


def test_quoted_and_source_routed_paths() -> None:
    res = run(EHLO + b'MAIL FROM:<"john doe"@example.com>\r\n'
              b"RCPT TO:<@relay.example:b@example.org>\r\nRCPT TO:<\"a>b\"@example.org>\r\n")
    assert res.codes == [220, 250, 250, 250, 250]
    assert [e.recipient for e in res.of(ev.RcptTo)] == [Address("b", "example.org"),
                                                       Address("a>b", "example.org")]


def test_smtputf8_addresses() -> None:
    res = run(EHLO + "MAIL FROM:<用户@例子.广告> SMTPUTF8\r\nRCPT TO:<jöran@bücher.example>\r\n"
              .encode())
    assert res.codes == [220, 250, 250, 250]
    assert res.of(ev.MailFrom)[0] == ev.MailFrom(Address("用户", "例子.广告"), {"SMTPUTF8": None})
    assert res.conn.smtputf8


@pytest.mark.parametrize(
    "commands",
    [
        "MAIL FROM:<用户@例子.广告>\r\n",
        "MAIL FROM:<a@example.com>\r\nRCPT TO:<jöran@bücher.example>\r\n",
    ],
)
def test_utf8_address_without_smtputf8_is_553(commands: str) -> None:
    res = run(EHLO + commands.encode())
    assert res.events[-1] == ev.ProtocolError(R.SMTPUTF8_REQUIRED)
    assert res.replies[-1].startswith("553 5.6.7 ")


def test_smtputf8_param_is_unknown_when_disabled() -> None:
    res = run(EHLO + "MAIL FROM:<用户@例子.广告> SMTPUTF8\r\n".encode(),
              ServerSettings(smtputf8=False))
    assert res.events[-1] == ev.ProtocolError(R.PARAM_NOT_RECOGNIZED)


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (b"\x00\xff\xfe MAIL\r\n", R.UNKNOWN_COMMAND),
        (b"MA\x00IL FROM:<a@b>\r\n", R.UNKNOWN_COMMAND),
        (b"\xc5\xbfTARTTLS\r\n", R.UNKNOWN_COMMAND),  # "ſ".upper() == "S" must not match
        (EHLO + b"MAIL FROM:<a\x00@example.com>\r\n", R.BAD_SENDER_SYNTAX),
        (EHLO + b"MAIL FROM:<\xff@example.com> SMTPUTF8\r\n", R.BAD_SENDER_SYNTAX),
        (EHLO + b"MAIL FROM:<a@example.com\xed\xa0\x80> SMTPUTF8\r\n", R.BAD_SENDER_SYNTAX),
        (EHLO + b"MAIL FROM:<a@example.com> SIZE=1\x00\r\n", R.SYNTAX_ERROR),
        (EHLO + b"MAIL FROM:<a@example.com> BODY=\xff\r\n", R.SYNTAX_ERROR),
        (b"HELO \x01\r\n", R.BAD_EHLO),
        (b"VRFY \xff\r\n", R.SYNTAX_ERROR),
    ],
)
def test_garbage_gets_an_error_reply(commands: bytes, expected: Reply) -> None:
    res = run(commands)
    assert res.events[-1] == ev.ProtocolError(expected)


def test_reply_text_cannot_inject_lines() -> None:
    conn = ServerConnection(ServerSettings())
    conn.greeting()
    assert conn.send(R.OK.with_text("a\r\n250 b")) == b"250 2.0.0 a  250 b\r\n"
