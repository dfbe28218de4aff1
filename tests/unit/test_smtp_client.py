"""The SMTP client core fed with bytes: replies (RFC 5321 §4.2, RFC 2034), capabilities,
STARTTLS (RFC 3207), AUTH (RFC 4954) and the reply matching of pipelined commands."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kittiwake.smtp.client import (
    Capabilities,
    ClientConnection,
    Command,
    CommandKind,
    ConnectionClosed,
    Event,
    ProtocolError,
    ServerReply,
)
from kittiwake.smtp.replies import Reply

EHLO_REPLY = (b"250-mx.example greets you\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
              b"250-8BITMIME\r\n250-SMTPUTF8\r\n250-STARTTLS\r\n250-DSN\r\n250-CHUNKING\r\n"
              b"250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN\r\n")


def drain(conn: ClientConnection) -> list[Event]:
    events = []
    for _ in range(1000):
        event = conn.next_event()
        if event is None:
            return events
        events.append(event)
    raise AssertionError("endless events")


def replies(conn: ClientConnection) -> list[Reply]:
    return [e.reply for e in drain(conn) if isinstance(e, ServerReply)]


def greeted(ehlo: bytes | None = EHLO_REPLY) -> ClientConnection:
    conn = ClientConnection()
    conn.receive_data(b"220 mx.example ESMTP\r\n")
    conn.ehlo("client.example")
    if ehlo is not None:
        conn.receive_data(ehlo)
    drain(conn)
    return conn


# --- reply parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        (b"250 2.1.0 Sender ok\r\n", Reply(250, "2.1.0", "Sender ok")),
        (b"250 Ok\r\n", Reply(250, "", "Ok")),
        (b"250\r\n", Reply(250, "", "")),  # RFC 5321 §4.2: the text is optional
        (b"250 \r\n", Reply(250, "", "")),
        (b"550-5.1.1 No such\r\n550-5.1.1 user\r\n550 5.1.1 here\r\n",
         Reply(550, "5.1.1", ("No such", "user", "here"))),
        (b"550-5.1.1 first\r\n550 second\r\n", Reply(550, "5.1.1", ("first", "second"))),
        (b"451 4.3.0\r\n", Reply(451, "4.3.0", "")),
        (b"550 4.1.1 class differs\r\n", Reply(550, "", "4.1.1 class differs")),
        (b"250 2.0.0.1 not a code\r\n", Reply(250, "", "2.0.0.1 not a code")),
        (b"250 Ok\n", Reply(250, "", "Ok")),  # bare LF: tolerated
        (b"250 caf\xc3\xa9 \xff\r\n", Reply(250, "", "café \ufffd")),
        (b"250 a\x00b\x1bc\td\r\n", Reply(250, "", "a?b?c\td")),
    ],
)
def test_reply_is_parsed_into_a_value(wire: bytes, reply: Reply) -> None:
    for chunks in ([wire], [wire[i:i + 1] for i in range(len(wire))]):
        conn = greeted()
        conn.noop()
        for chunk in chunks:
            conn.receive_data(chunk)
        assert drain(conn) == [ServerReply(Command(CommandKind.NOOP, b"NOOP\r\n"), reply)]


@pytest.mark.parametrize(
    "wire",
    [
        b"hello\r\n",
        b"25 short\r\n",
        b"2500 four digits\r\n",
        b"250x bad separator\r\n",
        b"199 too small\r\n",
        b"600 too big\r\n",
        b"250-first\r\n251 other code\r\n",
        b"\r\n",
        b"HTTP/1.1 400 Bad Request\r\n",
    ],
)
def test_garbage_reply_is_a_protocol_error_value(wire: bytes) -> None:
    conn = greeted()
    conn.noop()
    conn.receive_data(wire)
    events = drain(conn)
    assert len(events) == 1 and isinstance(events[0], ProtocolError)
    assert events[0].command is not None and events[0].command.kind is CommandKind.NOOP
    assert conn.broken
    conn.receive_data(b"250 ok\r\n")  # nothing more happens on a broken connection
    assert drain(conn) == []


def test_overlong_reply_line_is_a_protocol_error() -> None:
    conn = greeted()
    conn.noop()
    conn.receive_data(b"250 " + b"x" * 9000)
    assert isinstance(drain(conn)[0], ProtocolError)


def test_endless_multiline_reply_is_a_protocol_error() -> None:
    conn = greeted()
    conn.noop()
    conn.receive_data(b"250-x\r\n" * 500)
    [event] = drain(conn)
    assert isinstance(event, ProtocolError) and "lines" in event.reason


def test_unsolicited_reply_is_a_protocol_error() -> None:
    conn = greeted()
    conn.receive_data(b"421 4.4.2 idle timeout\r\n")
    [event] = drain(conn)
    assert isinstance(event, ProtocolError) and event.command is None


def test_close_reports_what_was_awaited_and_takes_a_last_unterminated_line() -> None:
    conn = greeted()
    conn.noop()
    conn.rset()
    conn.receive_data(b"250 ok")
    conn.receive_data(b"")
    events = drain(conn)
    assert [type(e) for e in events] == [ServerReply, ConnectionClosed]
    assert isinstance(events[1], ConnectionClosed) and events[1].command is not None
    assert events[1].command.kind is CommandKind.RSET


@given(st.binary(max_size=300), st.integers(1, 7))
def test_no_input_makes_the_core_raise(data: bytes, step: int) -> None:
    conn = ClientConnection()
    conn.receive_data(b"220 hi\r\n")
    conn.ehlo("c.example")
    for i in range(0, len(data), step):
        conn.receive_data(data[i:i + step])
    conn.receive_data(b"")
    drain(conn)


# --- capabilities ----------------------------------------------------------------------------

def test_ehlo_reply_sets_capabilities() -> None:
    caps = greeted().capabilities
    assert caps == Capabilities(
        esmtp=True, pipelining=True, size=10240000, eight_bit_mime=True, smtputf8=True,
        starttls=True, dsn=True, chunking=True, enhanced_status_codes=True,
        auth=frozenset({"PLAIN", "LOGIN"}), keywords=caps.keywords)
    assert "CHUNKING" in caps.keywords


def test_ehlo_keywords_are_case_insensitive_and_old_auth_syntax_is_understood() -> None:
    caps = greeted(b"250-x\r\n250-pipelining\r\n250-size\r\n250 AUTH=login cram-md5\r\n"
                   ).capabilities
    assert caps.pipelining and caps.size == 0  # SIZE without a number: no fixed limit
    assert caps.auth == {"LOGIN", "CRAM-MD5"}
    assert not caps.starttls and not caps.dsn


def test_smtp_sink_style_empty_last_line_is_fine() -> None:
    caps = greeted(b"250-smtp-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 \r\n").capabilities
    assert caps.pipelining and caps.eight_bit_mime and caps.size is None


def test_refused_ehlo_keeps_no_capabilities_and_helo_has_none() -> None:
    conn = greeted(b"502 5.5.1 no EHLO here\r\n")
    assert conn.capabilities == Capabilities()
    assert conn.helo("client.example") == b"HELO client.example\r\n"
    conn.receive_data(b"250 hi\r\n")
    assert replies(conn) == [Reply(250, "", "hi")]
    assert not conn.capabilities.esmtp


def test_bad_helo_name_is_refused_before_it_reaches_the_wire() -> None:
    conn = greeted()
    with pytest.raises(ValueError):
        conn.ehlo("a b")
    with pytest.raises(ValueError):
        conn.helo("x\r\nRCPT TO:<a@b>")


# --- STARTTLS ---------------------------------------------------------------------------------

def test_starttls_then_capabilities_are_forgotten() -> None:
    conn = greeted()
    assert conn.starttls() == b"STARTTLS\r\n"
    conn.receive_data(b"220 2.0.0 go ahead\r\n")
    assert replies(conn) == [Reply(220, "2.0.0", "go ahead")]
    conn.tls_started()
    assert conn.capabilities == Capabilities()  # RFC 3207 §4.2
    conn.ehlo("client.example")
    conn.receive_data(b"250-x\r\n250 DSN\r\n")
    drain(conn)
    assert conn.capabilities.dsn and not conn.capabilities.starttls


@pytest.mark.parametrize("split", [True, False])
def test_plaintext_after_starttls_reply_is_injection(split: bool) -> None:
    # CVE-2011-0411 style: a man in the middle appends replies to the 220; they must not be
    # taken as replies to commands sent inside TLS.
    conn = greeted()
    conn.starttls()
    if split:
        conn.receive_data(b"220 go ahead\r\n")
        conn.receive_data(b"250 injected\r\n")
    else:
        conn.receive_data(b"220 go ahead\r\n250 injected\r\n")
    events = drain(conn)
    assert isinstance(events[-1], ProtocolError) and "STARTTLS" in events[-1].reason
    assert conn.broken


# --- AUTH -------------------------------------------------------------------------------------

def test_auth_plain_sends_credentials_as_initial_response() -> None:
    conn = greeted()
    assert conn.auth_plain("user", "pässword") == b"AUTH PLAIN AHVzZXIAcMOkc3N3b3Jk\r\n"
    conn.receive_data(b"235 2.7.0 ok\r\n")
    drain(conn)
    assert conn.authenticated


def test_auth_login_answers_two_challenges_and_cancels_a_third() -> None:
    conn = greeted()
    assert conn.auth_login("user", "secret") == b"AUTH LOGIN\r\n"
    conn.receive_data(b"334 VXNlcm5hbWU6\r\n")
    drain(conn)
    assert conn.data_to_send() == b"dXNlcg==\r\n"
    conn.receive_data(b"334 UGFzc3dvcmQ6\r\n")
    drain(conn)
    assert conn.data_to_send() == b"c2VjcmV0\r\n"
    conn.receive_data(b"334 more?\r\n")
    drain(conn)
    assert conn.data_to_send() == b"*\r\n"  # RFC 4954 §4: cancel
    conn.receive_data(b"501 5.0.0 cancelled\r\n")
    drain(conn)
    assert not conn.authenticated


def test_commands_never_show_their_bytes_in_repr() -> None:
    conn = greeted()
    conn.auth_plain("user", "secret")
    assert conn.awaiting is not None
    assert "AHVzZXI" not in repr(conn.awaiting)
