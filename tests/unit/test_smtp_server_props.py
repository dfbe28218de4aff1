"""Property tests for the SMTP server core: how the peer's bytes are split into reads must
never change what happens, and no input may make the core raise."""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from test_smtp_server import Result, run

from kittiwake.smtp.server import ServerSettings

ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"

# Text lines: any octets but CR and LF, often starting with dots.
_line = st.one_of(
    st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"", b".", b"..", b"...", b".x", b"..x", b"From x", b"\x00", b"\xff."]),
)
_lines = st.lists(_line, max_size=20)


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    edges = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges) if b > a]


def stuff(lines: list[bytes]) -> bytes:
    # RFC 5321 §4.5.2: the client doubles a leading dot.
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)


def same(a: Result, b: Result) -> None:
    assert a.output == b.output
    assert a.messages == b.messages
    assert a.conn.closed == b.conn.closed


@given(_lines, _lines, st.lists(st.binary(max_size=30), max_size=5),
       st.lists(st.integers(min_value=0), max_size=30))
@settings(max_examples=300)
def test_messages_survive_any_split(lines1: list[bytes], lines2: list[bytes],
                                    bdat_chunks: list[bytes], cuts: list[int]) -> None:
    stream = ENVELOPE + b"DATA\r\n" + stuff(lines1) + b".\r\n"
    stream += ENVELOPE[16:] + b"DATA\r\n" + stuff(lines2) + b".\r\n"
    stream += ENVELOPE[16:]
    for chunk in bdat_chunks:
        stream += b"BDAT %d\r\n" % len(chunk) + chunk
    stream += b"BDAT 0 LAST\r\nQUIT\r\n"

    whole = run([stream, b""])
    assert whole.messages == [b"".join(ln + b"\r\n" for ln in lines1),
                              b"".join(ln + b"\r\n" for ln in lines2),
                              b"".join(bdat_chunks)]
    assert whole.codes[-1] == 221
    same(whole, run([*split(stream, cuts), b""]))


# Fragments that drive the core through every mode, including the error paths; STARTTLS is
# left out because what it discards depends, by design, on what has arrived so far.
_fragment = st.sampled_from([
    b"\r\n", b"\n", b"\r", b".", b"..", b" ", b"x", b"\x00", b"\xff", b"\r\n.\r\n", b"\n.\n",
    b"EHLO c.example\r\n", b"HELO h\r\n", b"MAIL FROM:<a@example.com>", b" SIZE=10",
    b" BODY=8BITMIME", b" SMTPUTF8", b"MAIL FROM:<>\r\n", b"RCPT TO:<b@example.org>\r\n",
    "RCPT TO:<ü@例子.广告>\r\n".encode(), b"RCPT TO:<postmaster>\r\n", b"DATA\r\n",
    b"BDAT 3\r\n", b"BDAT 5 LAST\r\n", b"BDAT 0 LAST\r\n", b"RSET\r\n", b"NOOP\r\n",
    b"AUTH PLAIN\r\n", b"AUTH PLAIN AGEAYg==\r\n", b"*\r\n", b"VRFY x\r\n", b"QUIT\r\n",
    b"y" * 50, b"z" * 200,
])
_streams = st.lists(_fragment, max_size=40).map(b"".join)
_small = ServerSettings(max_command_line=64, max_text_line=40, max_message_size=60,
                        max_auth_line=150, max_errors=1000, auth_mechanisms=("PLAIN",),
                        auth_requires_tls=False)
_small_lenient = ServerSettings(max_command_line=64, max_text_line=40, max_message_size=60,
                                max_errors=1000, reject_bare_line_endings=False)
_reply_line = re.compile(rb"\A[2-5][0-9][0-9][ -]")


@given(_streams, st.lists(st.integers(min_value=0), max_size=30),
       st.sampled_from([ServerSettings(), _small, _small_lenient,
                        ServerSettings(max_errors=3, chunking=False, dsn=False)]))
@settings(max_examples=500)
def test_any_command_stream_is_split_invariant(stream: bytes, cuts: list[int],
                                               cfg: ServerSettings) -> None:
    whole = run([stream, b""], cfg)
    same(whole, run([*split(stream, cuts), b""], cfg))
    same(whole, run([stream[i:i + 1] for i in range(len(stream))] + [b""], cfg))


@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=10),
       st.sampled_from([ServerSettings(), _small, _small_lenient]))
@settings(max_examples=300)
def test_garbage_never_raises(garbage: bytes, cuts: list[int], cfg: ServerSettings) -> None:
    for prefix in (b"", ENVELOPE, ENVELOPE + b"DATA\r\n", ENVELOPE + b"BDAT 100\r\n"):
        res = run([*split(prefix + garbage, cuts), b""], cfg)
        assert res.conn.closed
        for line in res.output.split(b"\r\n")[:-1]:
            assert _reply_line.match(line), line
