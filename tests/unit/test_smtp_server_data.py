"""DATA and BDAT streaming in the SMTP server core (RFC 5321 §4.5.2, §4.1.1.4; RFC 3030).

Includes the SMTP smuggling variants (CVE-2023-51764 and friends): only <CRLF>.<CRLF> may
end a message, whatever the bare-line-ending setting.
"""

from __future__ import annotations

import pytest
from test_smtp_server import EHLO, ENVELOPE, accept_all, run

from kittiwake.smtp import events as ev
from kittiwake.smtp import replies as R
from kittiwake.smtp.replies import Reply
from kittiwake.smtp.server import ServerConnection, ServerSettings

DATA = ENVELOPE + b"DATA\r\n"
LENIENT = ServerSettings(reject_bare_line_endings=False)


def chunked(stream: bytes, size: int) -> list[bytes]:
    return [stream[i:i + size] for i in range(0, len(stream), size)]


# --- DATA -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sent", "content"),
    [
        (b"a\r\n", b"a\r\n"),
        (b"", b""),  # "." as the very first line: empty message
        (b"..\r\n", b".\r\n"),  # a line that is just "."
        (b"...\r\n", b"..\r\n"),
        (b"..hello\r\n", b".hello\r\n"),
        (b".hello\r\n", b"hello\r\n"),  # an unstuffed leading dot is still removed
        (b"a\r\n..\r\nb\r\n", b"a\r\n.\r\nb\r\n"),
        (b"a.\r\n.b.\r\nc\r\n", b"a.\r\nb.\r\nc\r\n"),
        (b"\r\n\r\n", b"\r\n\r\n"),
        (b"x" * 998 + b"\r\n", b"x" * 998 + b"\r\n"),
        (b"\x00\x80\xff\r\n", b"\x00\x80\xff\r\n"),
    ],
)
def test_data_dot_unstuffing_is_exact(sent: bytes, content: bytes) -> None:
    stream = DATA + sent + b".\r\nNOOP\r\n"
    for chunks in ([stream], chunked(stream, 1), chunked(stream, 3)):
        res = run(chunks)
        assert res.messages == [content]
        assert res.codes == [220, 250, 250, 250, 354, 250, 250]


def test_data_is_streamed_not_buffered() -> None:
    conn = ServerConnection(ServerSettings())
    conn.greeting()
    conn.receive_data(DATA)
    while (event := conn.next_event()) is not None:
        conn.send(accept_all(conn, event) or R.OK)
    conn.receive_data(b"line one\r\nline two\r")
    assert conn.next_event() == ev.DataChunk(b"line one\r\nline two")
    assert conn.next_event() is None
    conn.receive_data(b"\n.")
    assert conn.next_event() == ev.DataChunk(b"\r\n")
    assert conn.next_event() is None
    conn.receive_data(b"\r\n")
    assert conn.next_event() == ev.DataEnd(None)


def test_data_refused_by_session_keeps_command_mode() -> None:
    def no_data(conn: ServerConnection, event: ev.Event) -> Reply | None:
        return R.TRANSACTION_FAILED if isinstance(event, ev.DataStart) else accept_all(conn, event)

    res = run(DATA + b"NOOP\r\n", policy=no_data)
    assert res.codes == [220, 250, 250, 250, 554, 250]
    assert res.conn.in_transaction


def test_transaction_is_reset_after_data_end() -> None:
    res = run(DATA + b"x\r\n.\r\nRCPT TO:<b@example.org>\r\n")
    assert res.replies[-1] == "503 5.5.1 Need MAIL command first"
    assert res.conn.helo_name == "client.example"


def test_failed_message_resets_transaction_too() -> None:
    def fail(conn: ServerConnection, event: ev.Event) -> Reply | None:
        return R.LOCAL_ERROR if isinstance(event, ev.DataEnd) else accept_all(conn, event)

    res = run(DATA + b"x\r\n.\r\nDATA\r\n", policy=fail)
    assert res.codes[-2:] == [451, 503]


def test_peer_closing_mid_data_abandons_the_message() -> None:
    res = run([DATA + b"partial\r\n", b""])
    assert res.messages == []
    assert res.events[-1] == ev.ConnectionClosed()
    assert not any(isinstance(e, ev.DataEnd) for e in res.events)


def test_commands_pipelined_after_the_message_are_processed() -> None:
    res = run([DATA + b"x\r\n.\r\nQUIT\r\n", b""])
    assert res.codes[-2:] == [250, 221]
    assert res.messages == [b"x\r\n"]


# --- smuggling ------------------------------------------------------------------------------

SMUGGLED = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nevil\r\n"

# (fake terminator, what the message contains for it when bare line endings are let through)
VARIANTS = [
    (b"\n.\n", b"\n.\n"),
    (b"\r.\r", b"\r.\r"),
    (b"\n.\r\n", b"\n.\r\n"),
    (b"\r\n.\n", b"\r\n\n"),  # a dot at a line start is stuffing, removed
    (b"\r.\r\n", b"\r.\r\n"),
    (b"\n..\n", b"\n..\n"),
    (b"\r\n.\r", b"\r\n\r"),
    (b"\r\n.\rX\r\n", b"\r\n\rX\r\n"),
    (b"\r\r\n.\r\n", b""),  # (real end after a bare CR: see test below)
]


@pytest.mark.parametrize(("fake", "inside"), VARIANTS[:-1])
@pytest.mark.parametrize("split", [None, 1, 2, 5])
def test_smuggling_is_rejected_and_nothing_smuggled_runs(fake: bytes, inside: bytes,
                                                          split: int | None) -> None:
    stream = DATA + b"Subject: x\r\n\r\nhello" + fake + SMUGGLED + b"\r\n.\r\nQUIT\r\n"
    res = run([stream] if split is None else chunked(stream, split))
    assert res.of(ev.DataEnd) == [ev.DataEnd(R.BARE_LINE_ENDING)]
    assert res.messages == []
    assert len(res.of(ev.MailFrom)) == 1  # only the real one
    assert len(res.of(ev.RcptTo)) == 1
    assert res.replies[-2:] == [
        "554 5.6.0 Message contains a bare CR or LF; lines must end with CRLF", "221 2.0.0 Bye"]


@pytest.mark.parametrize(("fake", "inside"), VARIANTS[:-1])
@pytest.mark.parametrize("split", [None, 1, 2, 5])
def test_smuggling_text_stays_inside_one_message_when_lenient(fake: bytes, inside: bytes,
                                                               split: int | None) -> None:
    stream = DATA + b"Subject: x\r\n\r\nhello" + fake + SMUGGLED + b"\r\n.\r\nQUIT\r\n"
    res = run([stream] if split is None else chunked(stream, split), LENIENT)
    assert res.messages == [b"Subject: x\r\n\r\nhello" + inside + SMUGGLED + b"\r\n"]
    assert len(res.of(ev.MailFrom)) == 1
    assert res.codes == [220, 250, 250, 250, 354, 250, 221]


def test_bare_cr_before_real_end_is_still_an_error_but_ends_the_message() -> None:
    res = run(DATA + b"x\r\r\n.\r\nNOOP\r\n")
    assert res.of(ev.DataEnd) == [ev.DataEnd(R.BARE_LINE_ENDING)]
    assert res.codes[-1] == 250
    res = run(DATA + b"x\r\r\n.\r\nNOOP\r\n", LENIENT)
    assert res.messages == [b"x\r\r\n"]


@pytest.mark.parametrize("body", [b"a\nb\r\n", b"a\rb\r\n", b"\n", b"a\r\n\r", b"ab\r\r\n"])
def test_any_bare_line_ending_is_rejected(body: bytes) -> None:
    res = run(DATA + body + b"\r\n.\r\n")
    assert res.of(ev.DataEnd) == [ev.DataEnd(R.BARE_LINE_ENDING)]


# --- limits ---------------------------------------------------------------------------------

def test_text_line_of_1000_octets_is_accepted_and_1001_refused() -> None:
    ok = b"x" * 998 + b"\r\n"
    res = run(DATA + ok + b".\r\n")
    assert res.messages == [ok]
    res = run(DATA + b"x" + ok + b".\r\n")
    assert res.of(ev.DataEnd) == [ev.DataEnd(R.TEXT_LINE_TOO_LONG)]
    assert res.replies[-1] == "500 5.5.6 Message has a line that is too long"


def test_stuffed_dot_counts_toward_the_line_length() -> None:
    res = run(DATA + b".." + b"x" * 997 + b"\r\n.\r\n")
    assert res.of(ev.DataEnd) == [ev.DataEnd(R.TEXT_LINE_TOO_LONG)]


def test_long_line_split_across_chunks_is_detected() -> None:
    res = run([DATA, *chunked(b"y" * 5000 + b"\r\n.\r\nNOOP\r\n", 7)])
    assert res.of(ev.DataEnd) == [ev.DataEnd(R.TEXT_LINE_TOO_LONG)]
    assert res.codes[-1] == 250


def test_lenient_mode_counts_bare_lf_as_line_break_for_length() -> None:
    body = (b"z" * 900 + b"\n") * 5 + b"\r\n"
    assert run(DATA + body + b".\r\n", LENIENT).messages == [body]


def test_message_too_big_while_streaming() -> None:
    settings = ServerSettings(max_message_size=100)
    stream = DATA + b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n.\r\n" + ENVELOPE[len(EHLO):] + \
        b"DATA\r\nsmall\r\n.\r\n"
    for chunks in ([stream], chunked(stream, 10)):
        res = run(chunks, settings)
        assert res.of(ev.DataEnd) == [ev.DataEnd(R.MESSAGE_TOO_BIG), ev.DataEnd(None)]
        assert res.messages == [b"small\r\n"]
        assert b"552 5.3.4 Message size exceeds fixed maximum message size\r\n" in res.output
        # Chunk emission stopped once the limit was crossed.
        streamed = sum(len(e.data) for e in res.events[:res.events.index(
            ev.DataEnd(R.MESSAGE_TOO_BIG))] if isinstance(e, ev.DataChunk))
        assert streamed <= 100


def test_message_of_exactly_the_limit_is_accepted() -> None:
    settings = ServerSettings(max_message_size=10)
    assert run(DATA + b"12345678\r\n.\r\n", settings).messages == [b"12345678\r\n"]


# --- BDAT (RFC 3030) ------------------------------------------------------------------------

def test_bdat_chunks_and_last() -> None:
    res = run(ENVELOPE + b"BDAT 5\r\nHelloBDAT 8 LAST\r\n, world\nQUIT\r\n")
    assert res.messages == [b"Hello, world\n"]
    assert res.codes == [220, 250, 250, 250, 250, 250, 221]
    kinds = [type(e) for e in res.events if not isinstance(e, ev.DataChunk)]
    assert kinds[3:] == [ev.BdatStart, ev.BdatChunkEnd, ev.DataEnd, ev.Quit]
    assert res.of(ev.BdatChunkEnd) == [ev.BdatChunkEnd(5)]


def test_bdat_content_is_binary_and_unstuffed() -> None:
    content = b"a\r\n.\r\nMAIL FROM:<evil@x.y>\r\n..\n\r\x00\xff"
    stream = ENVELOPE + b"BDAT %d LAST\r\n" % len(content) + content + b"NOOP\r\n"
    for chunks in ([stream], chunked(stream, 1), chunked(stream, 4)):
        res = run(chunks)
        assert res.messages == [content]
        assert len(res.of(ev.MailFrom)) == 1
        assert res.codes[-1] == 250


def test_bdat_0_last() -> None:
    res = run(ENVELOPE + b"BDAT 3\r\nabcBDAT 0 LAST\r\n")
    assert res.messages == [b"abc"]
    res = run(ENVELOPE + b"BDAT 0 LAST\r\n")
    assert res.messages == [b""]
    assert res.events[-2:] == [ev.BdatStart(), ev.DataEnd(None)]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (EHLO, R.NEED_MAIL),
        (EHLO + b"MAIL FROM:<a@example.com>\r\n", R.NEED_RCPT),
    ],
)
def test_bdat_out_of_sequence_consumes_its_octets(prefix: bytes, expected: Reply) -> None:
    chunk = b"MAIL FROM:<evil@example.com>\r\n"
    stream = prefix + b"BDAT %d\r\n" % len(chunk) + chunk + b"NOOP\r\n"
    for chunks in ([stream], chunked(stream, 3)):
        res = run(chunks)
        assert res.events[-2:] == [ev.ProtocolError(expected), ev.Noop()]
        assert not any(isinstance(e, ev.DataChunk) for e in res.events)


def test_bdat_when_chunking_is_off_still_consumes_octets() -> None:
    res = run(ENVELOPE + b"BDAT 6\r\nNOOP\r\nRSET\r\n", ServerSettings(chunking=False))
    assert res.events[-2:] == [ev.ProtocolError(R.NOT_IMPLEMENTED), ev.Rset()]


def test_bdat_too_big_fails_at_the_chunk_that_crosses_the_limit() -> None:
    settings = ServerSettings(max_message_size=10)
    res = run(ENVELOPE + b"BDAT 6\r\n123456BDAT 6\r\n789012BDAT 1 LAST\r\nxNOOP\r\n", settings)
    assert res.of(ev.DataEnd) == [ev.DataEnd(R.MESSAGE_TOO_BIG)]
    assert res.codes[-4:] == [250, 552, 503, 250]
    assert res.messages == []
    assert res.events[-2:] == [ev.ProtocolError(R.NEED_MAIL), ev.Noop()]


def test_failed_bdat_chunk_fails_the_transaction() -> None:
    def fail(conn: ServerConnection, event: ev.Event) -> Reply | None:
        return R.INSUFFICIENT_STORAGE if isinstance(event, ev.BdatChunkEnd) \
            else accept_all(conn, event)

    res = run(ENVELOPE + b"BDAT 1\r\nxBDAT 1 LAST\r\ny", policy=fail)
    assert res.codes[-2:] == [452, 503]
    assert res.messages == []


def test_peer_closing_mid_bdat_abandons_the_message() -> None:
    res = run([ENVELOPE + b"BDAT 10 LAST\r\nabc", b""])
    assert res.events[-1] == ev.ConnectionClosed()
    assert res.messages == []


def test_huge_declared_bdat_chunk_is_streamed() -> None:
    conn = ServerConnection(ServerSettings())
    conn.greeting()
    conn.receive_data(ENVELOPE + b"BDAT 20000000 LAST\r\n")
    while (event := conn.next_event()) is not None:
        if not isinstance(event, ev.BdatStart):
            conn.send(accept_all(conn, event) or R.OK)
    total = 0
    for _ in range(20):
        conn.receive_data(b"x" * 1_000_000)
        while (event := conn.next_event()) is not None:
            if isinstance(event, ev.DataChunk):
                total += len(event.data)
            else:
                assert event == ev.DataEnd(None)
        assert len(conn._buf) == 0
    assert total == 20_000_000
