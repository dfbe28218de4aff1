"""Property tests for the POP3 core: stuffing round trips with exact sizes, independence of
how the peer's bytes are split, and no input ever making the core raise."""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from test_pop3_server import LOGIN, MAILDROP, MESSAGES, PLAIN_OK, Result, run

from kittiwake.pop3 import content
from kittiwake.pop3 import events as ev
from kittiwake.pop3.events import MaildropEntry
from kittiwake.pop3.server import ServerConnection, ServerSettings

# Text lines: any octets but CR and LF, often dots, "." alone and the terminator's pieces.
_line = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"", b".", b"..", b"...", b".x", b"..x", b". ", b"\x00", b"\xff."]),
)
_lines = st.lists(_line, max_size=25)


def crlf(lines: list[bytes]) -> bytes:
    return b"".join(ln + b"\r\n" for ln in lines)


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    edges = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges) if b > a]


@given(_lines)
def test_stuffing_round_trips_and_only_the_end_terminates(lines: list[bytes]) -> None:
    message = crlf(lines)
    wire = content.multiline(message)
    assert content.unstuff(wire) == message
    # The terminator appears exactly once, at the very end (RFC 1939 §3).
    assert (b"\r\n" + wire).count(b"\r\n.\r\n") == 1
    assert not re.search(rb"(?<!\r)\n", wire)


@given(st.binary(max_size=300))
def test_any_bytes_come_out_as_crlf_lines(raw: bytes) -> None:
    wire = content.multiline(raw)
    assert not re.search(rb"(?<!\r)\n", wire)
    unstuffed = content.unstuff(wire)
    normal = content.normalise(raw)
    assert unstuffed == (normal if not normal or normal.endswith(b"\r\n") else normal + b"\r\n")


@given(_lines, st.integers(min_value=0, max_value=30))
def test_top_is_a_prefix_ending_at_a_line_boundary(lines: list[bytes], n: int) -> None:
    message = crlf(lines)
    excerpt = content.top(message, n)
    assert message.startswith(excerpt)
    assert excerpt == message or excerpt.endswith(b"\r\n")


@given(_lines)
def test_retr_announces_exactly_the_octets_the_client_ends_up_with(lines: list[bytes]) -> None:
    message = crlf(lines)
    entry = MaildropEntry(7, len(message), "1.7")
    conn = ServerConnection(PLAIN_OK)
    conn.receive_data(LOGIN + b"RETR 1\r\n")
    out = b""
    while (event := conn.next_event()) is not None:
        if isinstance(event, ev.Output):
            out += event.data
        elif isinstance(event, ev.Login):
            out += conn.accept_login("alice", [entry])
        else:
            assert isinstance(event, ev.Retrieve)
            out += conn.send_message(message)
    status, _, wire = out.partition(b"octets\r\n")
    announced = int(status.rsplit(b"+OK ", 1)[1])
    assert announced == len(message) == len(content.unstuff(wire))


_COMMANDS = (LOGIN + b"CAPA\r\nSTAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nTOP 2 1\r\nRETR 1\r\nDELE 1\r\n"
             b"RSET\r\nDELE 3\r\nNOOP\r\nRETR 3\r\nQUIT\r\n")


@given(st.lists(st.integers(min_value=0, max_value=len(_COMMANDS)), max_size=30))
def test_split_points_never_change_the_conversation(cuts: list[int]) -> None:
    whole = run(_COMMANDS)
    pieces = run(split(_COMMANDS, cuts))
    assert pieces.output == whole.output
    assert [e for e in pieces.events if not isinstance(e, ev.Output)] == [
        e for e in whole.events if not isinstance(e, ev.Output)]
    assert whole.of(ev.Update) == [ev.Update((15,))]


_tokens = st.sampled_from([
    b"USER alice", b"PASS pw", b"USER", b"PASS", b"STAT", b"LIST", b"LIST 1", b"LIST 0",
    b"RETR 1", b"RETR 9", b"TOP 1 0", b"TOP 2 99", b"DELE 1", b"DELE 2", b"RSET", b"NOOP",
    b"UIDL", b"UIDL 3", b"QUIT", b"CAPA", b"STLS", b"AUTH", b"AUTH PLAIN", b"AUTH PLAIN =",
    b"AUTH LOGIN", b"AUTH SCRAM-SHA-256", b"*", b"AGFsaWNlAHB3", b"=", b"APOP a b", b"",
    b".", b"\xff\xfe", b"\x00", b"RETR 1 1", b"LIST -1",
])
_garbage = st.lists(
    st.one_of(_tokens.map(lambda t: t + b"\r\n"), _tokens.map(lambda t: t + b"\n"),
              st.binary(max_size=40)),
    max_size=40,
)


@settings(max_examples=300)
@given(_garbage, st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
       st.booleans(), st.booleans(), st.booleans())
def test_no_input_makes_the_core_raise(chunks: list[bytes], cuts: list[int], tls: bool,
                                       plaintext: bool, eof: bool) -> None:
    stream = b"".join(chunks)
    pieces = split(stream, cuts) + ([b""] if eof else [])
    settings = ServerSettings(stls=True, plaintext_auth=plaintext, max_command_line=64,
                              max_auth_line=128)
    res = run(pieces, settings, tls_active=tls)
    check_invariants(res, eof)


def check_invariants(res: Result, eof: bool) -> None:
    assert res.output.endswith(b"\r\n")
    for line in res.lines:
        assert len(line) <= 510
    if eof:
        assert res.conn.closed
        assert res.events.count(ev.ConnectionClosed()) <= 1
    assert not res.conn.awaiting_reply
    updates = res.of(ev.Update)
    assert len(updates) <= 1
    for update in updates:
        assert isinstance(update, ev.Update)
        assert set(update.deleted) <= set(MESSAGES)
        assert list(update.deleted) == sorted(update.deleted)
    for event in res.of(ev.Retrieve):
        assert isinstance(event, ev.Retrieve) and event.entry in MAILDROP
