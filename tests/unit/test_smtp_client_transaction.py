"""Mail transactions in the SMTP client core: command formatting (RFC 5321 §4.1.1.2-3 with
the SIZE, 8BITMIME, SMTPUTF8 and DSN parameters), pipelined batches (RFC 2920) and their
replies matched back to commands, and dot-stuffing (RFC 5321 §4.5.2)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_smtp_client import drain, greeted, replies

from kittiwake.smtp.client import (
    CommandKind,
    DotStuffer,
    ReadyForContent,
    ServerReply,
    TransactionDone,
    TransactionOutcome,
    dot_stuff,
    mail_command,
    rcpt_command,
    xtext_decode,
    xtext_encode,
)
from kittiwake.smtp.parse import DataReader
from kittiwake.smtp.replies import Reply

NO_PIPELINING = b"250-mx.example\r\n250-SIZE 1000\r\n250 DSN\r\n"
NO_USER = Reply(550, "5.1.1", "No such user")


def outcome_of(conn: object) -> TransactionOutcome:
    done = [e for e in drain(conn) if isinstance(e, TransactionDone)]  # type: ignore[arg-type]
    assert len(done) == 1
    return done[0].outcome


# --- formatting -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "line"),
    [
        ({"sender": "a@b.example"}, b"MAIL FROM:<a@b.example>\r\n"),
        ({"sender": ""}, b"MAIL FROM:<>\r\n"),  # RFC 5321 §4.5.5 null reverse-path
        ({"sender": "a@b.example", "size": 1234, "body": "8bitmime"},
         b"MAIL FROM:<a@b.example> SIZE=1234 BODY=8BITMIME\r\n"),
        ({"sender": "ü@b.example", "smtputf8": True, "body": "8BITMIME"},
         "MAIL FROM:<ü@b.example> BODY=8BITMIME SMTPUTF8\r\n".encode()),
        ({"sender": "a@b.example", "ret": "hdrs", "envid": "Q+1=2 é"},
         b"MAIL FROM:<a@b.example> RET=HDRS ENVID=Q+2B1+3D2+20+C3+A9\r\n"),
    ],
)
def test_mail_command_formatting(kwargs: dict[str, object], line: bytes) -> None:
    command = mail_command(**kwargs)  # type: ignore[arg-type]
    assert command.kind is CommandKind.MAIL and command.line == line


@pytest.mark.parametrize(
    ("kwargs", "line"),
    [
        ({"recipient": "u@x.example"}, b"RCPT TO:<u@x.example>\r\n"),
        ({"recipient": "u@x.example", "notify": "success, failure"},
         b"RCPT TO:<u@x.example> NOTIFY=SUCCESS,FAILURE\r\n"),
        ({"recipient": "u@x.example", "notify": "NEVER", "orcpt": "rfc822;u+1@x.example"},
         b"RCPT TO:<u@x.example> NOTIFY=NEVER ORCPT=rfc822;u+2B1@x.example\r\n"),
        ({"recipient": "u@x.example", "orcpt": "plain@x.example"},
         b"RCPT TO:<u@x.example> ORCPT=rfc822;plain@x.example\r\n"),
        # RFC 6533 §3: a non-ASCII original recipient as utf-8-addr-xtext
        ({"recipient": "u@x.example", "orcpt": "rfc822;jö+x@x.example"},
         b"RCPT TO:<u@x.example> ORCPT=utf-8;j\\x{F6}\\x{2B}x@x.example\r\n"),
    ],
)
def test_rcpt_command_formatting(kwargs: dict[str, object], line: bytes) -> None:
    assert rcpt_command(**kwargs).line == line  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        lambda: mail_command("a@b\r\nRCPT TO:<x@y>"),
        lambda: mail_command("ü@b.example"),  # non-ASCII without SMTPUTF8
        lambda: mail_command("a@b", body="BINARYMIME"),
        lambda: mail_command("a@b", ret="ALL"),
        lambda: rcpt_command("a@b\n"),
        lambda: rcpt_command("a@b", notify="NEVER,SUCCESS"),
        lambda: rcpt_command("a@b", notify="SUCCESS,SUCCESS"),
    ],
)
def test_bad_command_arguments_never_reach_the_wire(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


@given(st.text(max_size=40))
def test_xtext_round_trips(text: str) -> None:
    encoded = xtext_encode(text)
    assert encoded.isascii() and "=" not in encoded and " " not in encoded
    assert xtext_decode(encoded) == text


# --- dot-stuffing ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("content", "wire"),
    [
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"no final line end", b"no final line end\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b".leading\r\n..two\r\n", b"..leading\r\n...two\r\n.\r\n"),
        (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"mid.dot\r\n", b"mid.dot\r\n.\r\n"),
        # Bare line endings become CRLF, so "\n.\n" cannot end the data anywhere.
        (b"a\n.\nb\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"ends in CR\r", b"ends in CR\r\n.\r\n"),
        (b"\r\n\r\n", b"\r\n\r\n.\r\n"),
    ],
)
def test_dot_stuffing(content: bytes, wire: bytes) -> None:
    assert dot_stuff(content) == wire
    stuffer = DotStuffer()  # the same, one byte at a time
    assert b"".join(stuffer.feed(content[i:i + 1]) for i in range(len(content))) + \
        stuffer.end() == wire


@given(st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"x", b"..", b"\r\n."]),
                max_size=30),
       st.lists(st.integers(0, 60), max_size=5))
def test_dot_stuffed_content_is_read_back_by_the_server_core(parts: list[bytes],
                                                             cuts: list[int]) -> None:
    content = b"".join(parts)
    stuffer = DotStuffer()
    edges = sorted({0, len(content), *(c % (len(content) + 1) for c in cuts)})
    wire = b"".join(stuffer.feed(content[a:b]) for a, b in itertools.pairwise(edges))
    wire += stuffer.end()
    assert wire == dot_stuff(content)
    reader = DataReader(max_size=10**6, max_line=10**6, reject_bare_line_endings=True)
    buf = bytearray(wire)
    received = reader.feed(buf)
    assert reader.done and reader.error is None and buf == b""
    normalised = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert received == normalised


# --- transactions -------------------------------------------------------------------------------

def test_pipelined_batch_is_one_write_and_replies_match_in_order() -> None:
    conn = greeted()  # PIPELINING advertised
    out = conn.start_transaction(mail_command("a@b.example", size=10),
                                 [rcpt_command("x@mx.example"), rcpt_command("y@mx.example"),
                                  rcpt_command("z@mx.example")])
    assert out == (b"MAIL FROM:<a@b.example> SIZE=10\r\nRCPT TO:<x@mx.example>\r\n"
                   b"RCPT TO:<y@mx.example>\r\nRCPT TO:<z@mx.example>\r\nDATA\r\n")
    conn.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No such user\r\n"
                      b"451 4.2.0 greylisted\r\n354 go on\r\n")
    events = drain(conn)
    kinds = [(e.command.kind, e.command.index) for e in events if isinstance(e, ServerReply)]
    assert kinds == [(CommandKind.MAIL, -1), (CommandKind.RCPT, 0), (CommandKind.RCPT, 1),
                     (CommandKind.RCPT, 2), (CommandKind.DATA, -1)]
    assert isinstance(events[-1], ReadyForContent)
    assert conn.send_content(b"Subject: x\r\n\r\n.hi") == b"Subject: x\r\n\r\n..hi"
    assert conn.end_content() == b"\r\n.\r\n"
    conn.receive_data(b"250 2.0.0 queued as 1\r\n")
    outcome = outcome_of(conn)
    assert outcome.replies == (Reply(250, "2.0.0", "queued as 1"), NO_USER,
                               Reply(451, "4.2.0", "greylisted"))
    assert not conn.in_transaction and conn.data_to_send() == b""


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    conn = greeted(NO_PIPELINING)
    assert conn.start_transaction(mail_command("a@b.example"),
                                  [rcpt_command("x@mx.example"), rcpt_command("y@mx.example")]
                                  ) == b"MAIL FROM:<a@b.example>\r\n"
    conn.receive_data(b"250 ok\r\n")
    drain(conn)
    assert conn.data_to_send() == b"RCPT TO:<x@mx.example>\r\n"
    assert conn.data_to_send() == b""
    conn.receive_data(b"550 5.1.1 No such user\r\n")
    drain(conn)
    assert conn.data_to_send() == b"RCPT TO:<y@mx.example>\r\n"
    conn.receive_data(b"250 ok\r\n")
    drain(conn)
    assert conn.data_to_send() == b"DATA\r\n"
    conn.receive_data(b"354 go\r\n")
    assert isinstance(drain(conn)[-1], ReadyForContent)
    conn.send_content(b"x\r\n")
    conn.end_content()
    conn.receive_data(b"250 2.0.0 done\r\n")
    assert outcome_of(conn).replies == (NO_USER, Reply(250, "2.0.0", "done"))


def test_refused_mail_applies_to_every_recipient_and_stops_the_transaction() -> None:
    conn = greeted(NO_PIPELINING)
    conn.start_transaction(mail_command("a@b.example"), [rcpt_command("x@m"), rcpt_command("y@m")])
    conn.receive_data(b"452 4.3.1 out of space\r\n")
    outcome = outcome_of(conn)
    assert conn.data_to_send() == b""  # no RCPT after a refused MAIL
    assert outcome.replies == (Reply(452, "4.3.1", "out of space"),) * 2


def test_pipelined_refused_mail_wins_over_the_503s_that_follow() -> None:
    conn = greeted()
    conn.start_transaction(mail_command("a@b.example"), [rcpt_command("x@m"), rcpt_command("y@m")])
    conn.receive_data(b"550 5.7.1 go away\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n"
                      b"503 5.5.1 no valid recipients\r\n")
    assert outcome_of(conn).replies == (Reply(550, "5.7.1", "go away"),) * 2


def test_refused_data_applies_to_accepted_recipients_only() -> None:
    conn = greeted()
    conn.start_transaction(mail_command("a@b.example"), [rcpt_command("x@m"), rcpt_command("y@m")])
    conn.receive_data(b"250 ok\r\n250 ok\r\n550 5.1.1 No such user\r\n451 4.3.0 try later\r\n")
    assert outcome_of(conn).replies == (Reply(451, "4.3.0", "try later"), NO_USER)


def test_refused_final_dot_applies_to_accepted_recipients() -> None:
    conn = greeted()
    conn.start_transaction(mail_command("a@b.example"), [rcpt_command("x@m"), rcpt_command("y@m")])
    conn.receive_data(b"250 ok\r\n550 5.1.1 No such user\r\n250 ok\r\n354 go\r\n")
    drain(conn)
    conn.end_content()
    conn.receive_data(b"554 5.7.1 spam\r\n")
    assert outcome_of(conn).replies == (NO_USER, Reply(554, "5.7.1", "spam"))


def test_data_accepted_without_recipients_is_ended_with_a_lone_dot() -> None:
    # RFC 2920 §3.1: the server took DATA though every RCPT failed; send "." and nothing else.
    conn = greeted()
    conn.start_transaction(mail_command("a@b.example"), [rcpt_command("x@m")])
    conn.receive_data(b"250 ok\r\n550 5.1.1 No such user\r\n354 go\r\n")
    assert not any(isinstance(e, ReadyForContent) for e in drain(conn))
    assert conn.data_to_send() == b".\r\n"
    conn.receive_data(b"250 2.0.0 queued (nothing)\r\n")
    assert outcome_of(conn).replies == (NO_USER,)


def test_unexpected_positive_reply_to_data_is_not_a_delivery() -> None:
    conn = greeted()
    conn.start_transaction(mail_command("a@b.example"), [rcpt_command("x@m")])
    conn.receive_data(b"250 ok\r\n250 ok\r\n250 whatever\r\n")
    [reply] = outcome_of(conn).replies
    assert reply.code == 451 and reply.enhanced == "4.5.0"


def test_abort_keeps_refusals_and_gives_accepted_recipients_the_abort_reply() -> None:
    conn = greeted()
    conn.start_transaction(mail_command("a@b.example"), [rcpt_command("x@m"), rcpt_command("y@m")])
    conn.receive_data(b"250 ok\r\n550 5.1.1 No such user\r\n250 ok\r\n")
    conn.receive_data(b"")
    drain(conn)
    lost = Reply(451, "4.4.2", "connection lost")
    outcome = conn.abort_transaction(lost)
    assert outcome is not None and outcome.replies == (NO_USER, lost)
    assert outcome.mail == Reply(250, "", "ok") and outcome.final is None
    assert conn.broken and not conn.in_transaction


def test_transaction_rules_are_enforced_for_the_caller() -> None:
    conn = greeted()
    with pytest.raises(ValueError):
        conn.start_transaction(mail_command("a@b"), [])
    conn.start_transaction(mail_command("a@b"), [rcpt_command("x@m")])
    with pytest.raises(RuntimeError):
        conn.start_transaction(mail_command("a@b"), [rcpt_command("x@m")])
    with pytest.raises(RuntimeError):
        conn.send_content(b"too early")


def test_second_transaction_after_rset_on_the_same_connection() -> None:
    conn = greeted()
    for n in range(2):
        conn.start_transaction(mail_command("a@b.example"), [rcpt_command("x@m")])
        conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
        drain(conn)
        conn.send_content(b"message %d\r\n" % n)
        conn.end_content()
        conn.receive_data(b"250 2.0.0 queued\r\n")
        assert outcome_of(conn).replies == (Reply(250, "2.0.0", "queued"),)
        assert conn.rset() == b"RSET\r\n"
        conn.receive_data(b"250 2.0.0 reset\r\n")
        assert replies(conn) == [Reply(250, "2.0.0", "reset")]
    assert conn.quit() == b"QUIT\r\n"
