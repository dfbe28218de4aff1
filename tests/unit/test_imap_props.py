"""Property tests for the IMAP core: how the client's bytes are split into reads never
changes what happens; no input — random, or a valid command broken at random — makes the
core raise; every complete line is answered by a command or a BAD; encoders and the
parser agree with each other."""

from __future__ import annotations

import itertools
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_imap_connection import Result, run
from test_imap_parser import RFC_EXAMPLES
from test_imap_response import _read_back

from kittiwake.imap import commands as c
from kittiwake.imap import mutf7
from kittiwake.imap import response as r
from kittiwake.imap.commands import State
from kittiwake.imap.connection import ConnectionSettings, ServerConnection
from kittiwake.imap.events import (
    AuthenticateResponse,
    ConnectionClosed,
    IdleDone,
    ParseError,
    SendContinuation,
)
from kittiwake.imap.lexer import Cursor
from kittiwake.imap.parser import ParseContext, parse_command
from kittiwake.imap.types import SequenceSet

SMALL = ConnectionSettings(max_line_length=120, max_literal_size=40, max_append_size=90,
                           max_command_size=200, max_nesting=8, max_sequence_ranges=20,
                           max_discard=500, starttls=True)
EVENT_TYPES = (ParseError, SendContinuation, IdleDone, AuthenticateResponse, ConnectionClosed)


def answer(command: c.Command) -> r.Status:
    """OK to everything except STARTTLS and COMPRESS: after their OK the client must wait
    (what it sent before the OK is dropped or inflated), so their outcome does depend on
    timing — tested on its own in test_imap_connection."""
    return r.Status.NO if isinstance(command, c.StartTls | c.Compress) else r.Status.OK


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    edges = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges) if b > a]


def same(a: Result, b: Result) -> None:
    assert a.events == b.events
    assert a.output == b.output
    assert a.conn.state is b.conn.state
    assert a.conn.closed == b.conn.closed


# --------------------------------------------------------------------------- streams

_text = st.binary(max_size=60).map(lambda b: b.replace(b"\x00", b""))
_atom = st.from_regex(rb"\A[A-Za-z0-9.$_-]{1,12}\Z")


def _string(data: bytes, kind: int) -> bytes:
    """``data`` as a synchronising literal, a non-synchronising one, or quoted."""
    if kind == 0:
        return b"{%d}\r\n" % len(data) + data
    if kind == 1:
        return b"{%d+}\r\n" % len(data) + data
    clean = data.replace(b"\r", b"").replace(b"\n", b"").replace(b"\\", b"").replace(b'"', b"")
    return b'"' + clean + b'"'


@st.composite
def _command(draw: st.DrawFn) -> bytes:
    tag = draw(st.from_regex(rb"\A[A-Za-z0-9]{1,6}\Z"))
    kind = draw(st.integers(0, 14))
    s1, s2 = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    if kind == 0:
        return tag + b" NOOP\r\n"
    if kind == 1:
        return tag + b" LOGIN " + _string(draw(_text), s1) + b" " + _string(draw(_text), s2) + b"\r\n"
    if kind == 2:
        return tag + b" SELECT " + draw(_atom) + b"\r\n"
    if kind == 3:
        return tag + b" APPEND INBOX (\\Seen) " + _string(draw(st.binary(max_size=120)).replace(
            b"\x00", b"."), min(s1, 1)) + b"\r\n"
    if kind == 4:
        return tag + b" UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])\r\n"
    if kind == 5:
        return tag + b" SEARCH OR TEXT " + _string(draw(_text), s1) + b" NOT SEEN 1:5\r\n"
    if kind == 6:
        return tag + b" IDLE\r\nDONE\r\n"
    if kind == 7:
        return tag + b" AUTHENTICATE PLAIN\r\n" + draw(st.sampled_from(
            [b"dGVzdAB0ZXN0AHRlc3Q=", b"*", b"%%%", b""])) + b"\r\n"
    if kind == 8:  # an over-long line, perhaps announcing a literal
        return tag + b" NOOP " + b"x" * draw(st.integers(100, 300)) + draw(st.sampled_from(
            [b"", b" {5+}\r\n12345", b" {5}"])) + b"\r\n"
    if kind == 9:  # a literal over the limit
        size = draw(st.integers(41, 600))
        return tag + b" RENAME " + (b"{%d+}\r\n" % size + b"y" * size if s1 else b"{%d}\r\n" % size) \
            + b" x\r\n"
    if kind == 10:
        return draw(st.binary(max_size=40)) + b"\r\n"
    if kind == 11:
        return tag + b" LOGOUT\r\n"
    if kind == 12:
        return tag + b" STARTTLS\r\n"
    if kind == 13:
        return tag + b" STORE 1,2:4 +FLAGS.SILENT (\\Deleted $Junk)\r\n"
    return tag + b" LIST (SUBSCRIBED) \"\" (" + _string(draw(_text), s1) + b" %) RETURN (STATUS (MESSAGES))\r\n"


@given(st.lists(_command(), max_size=12), st.lists(st.integers(min_value=0), max_size=40))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_split_gives_the_same_session(commands: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(commands)
    whole = run([stream, b""], SMALL, answer)
    same(whole, run([*split(stream, cuts), b""], SMALL, answer))
    one_by_one = run([*(stream[i:i + 1] for i in range(len(stream))), b""], SMALL, answer)
    same(whole, one_by_one)


@given(st.lists(st.binary(max_size=200), max_size=10))
@settings(max_examples=300)
def test_random_bytes_never_raise(chunks: list[bytes]) -> None:
    for prefix in (b"", b"a LOGIN u p\r\nb SELECT INBOX\r\n"):
        result = run([prefix, *chunks, b""], SMALL, answer)
        for event in result.events:
            assert isinstance(event, EVENT_TYPES) or type(event).__module__.endswith("commands")
        assert result.conn.closed


_EXAMPLES = [wire + b"\r\n" for wire, _, _ in RFC_EXAMPLES]


@st.composite
def _broken(draw: st.DrawFn) -> bytes:
    """A valid RFC example command, then mutated: bytes cut out, inserted or replaced."""
    wire = bytearray(draw(st.sampled_from(_EXAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 2))
        at = draw(st.integers(0, len(wire)))
        if op == 0 and wire:
            del wire[at:at + draw(st.integers(1, 5))]
        elif op == 1:
            wire[at:at] = draw(st.sampled_from([b"(", b")", b"[", b"]", b" ", b'"', b"\\",
                                                b"{3}\r\n", b"{2+}\r\n", b"*", b"$", b"\x00",
                                                b"\xff", b"~{1}\r\n", b"NIL", b"<0.1>"]))
        else:
            wire[at:at + 1] = draw(st.binary(min_size=1, max_size=2))
    return bytes(wire)


@given(st.lists(_broken(), min_size=1, max_size=5), st.lists(st.integers(min_value=0),
                                                             max_size=10))
@settings(max_examples=500)
def test_broken_commands_never_raise(commands: list[bytes], cuts: list[int]) -> None:
    for state_prefix in (b"", b"a LOGIN u p\r\n", b"a LOGIN u p\r\nb SELECT INBOX\r\n"):
        stream = state_prefix + b"".join(commands)
        whole = run([stream, b""], answer=answer)
        same(whole, run([*split(stream, cuts), b""], answer=answer))
        for line in whole.lines:
            assert re.match(rb"(\+ |\* (OK|NO|BAD|BYE) |[^ ]+ (OK|NO|BAD) )", line), line


_line = st.binary(max_size=100).filter(
    lambda b: b"\r" not in b and b"\n" not in b and not re.search(rb"\}$", b))


@given(_line, st.sampled_from(list(State)[:3]))
@settings(max_examples=500)
def test_every_line_is_a_command_or_a_bad(line: bytes, state: State) -> None:
    conn = ServerConnection(SMALL, preauth=state is not State.NOT_AUTHENTICATED)
    if state is State.SELECTED:
        run([b"s SELECT INBOX\r\n"], conn=conn)
    conn.receive_data(line + b"\r\n")
    event = conn.next_event()
    if isinstance(event, ParseError):
        assert event.response.to_bytes().split(b" ")[1] in (b"BAD", b"BYE")
        assert conn.next_event() is None
    else:
        assert event is not None and type(event).__module__.endswith("commands")


_token = st.sampled_from([
    b"a", b"1", b"*", b"1:*", b"$", b"(", b")", b"[", b"]", b"<0.5>", b" ", b" ", b'"x"',
    b'"', b"\\", b"NIL", b"FETCH", b"UID", b"SEARCH", b"STORE", b"FLAGS", b"+FLAGS", b"BODY",
    b"BODY.PEEK", b"HEADER.FIELDS", b"OR", b"NOT", b"CHARSET", b"RETURN", b"LIST", b"APPEND",
    b"SELECT", b"QRESYNC", b"CONDSTORE", b"MODSEQ", b"\\Seen", b"INBOX", b"&AGE-", b"{3}",
    b"~{3}", b"1-Feb-1994", b'"07-Feb-1994 21:52:25 -0800"', b"\xff", b"\x00", b"ALL",
])


@given(st.lists(st.lists(_token, max_size=25).map(b"".join), min_size=1, max_size=3),
       st.lists(st.binary(max_size=5), max_size=3), st.sampled_from(list(State)[:3]),
       st.booleans())
@settings(max_examples=1000)
def test_parse_command_never_raises(lines: list[bytes], literals: list[bytes], state: State,
                                    utf8: bool) -> None:
    literals = (literals + [b"abc"] * len(lines))[:len(lines) - 1]
    ctx = ParseContext(state, utf8, frozenset({"QRESYNC", "CONDSTORE"}), max_nesting=6)
    result = parse_command([b"t " + lines[0], *lines[1:]], literals, ctx)
    assert isinstance(result, ParseError) or type(result).__module__.endswith("commands")


# --------------------------------------------------------------------------- encoders


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_mutf7_round_trip(name: str) -> None:
    encoded = mutf7.encode(name)
    assert all(0x20 <= ord(ch) <= 0x7E for ch in encoded)
    assert mutf7.decode(encoded) == name


@given(st.text(max_size=30))
def test_mutf7_decode_only_raises_value_error(text: str) -> None:
    try:
        name = mutf7.decode(text)
    except ValueError:
        return
    assert mutf7.encode(name) == text  # one canonical spelling per name


@given(st.one_of(st.binary(max_size=1500), st.text(max_size=300)), st.booleans())
@settings(max_examples=300)
def test_strings_read_back_as_written(value: bytes | str, utf8: bool) -> None:
    data = value.encode() if isinstance(value, str) else value
    expected = data.replace(b"\x00", b"")
    assert _read_back(r.string(value, utf8=utf8), utf8) == expected
    assert _read_back(r.astring(value, utf8=utf8), utf8) == expected


@given(st.text(alphabet=st.characters(exclude_categories=["Cs", "Cc"]), max_size=40)
       .filter(lambda s: "\u2028" not in s and "\u2029" not in s and not re.search(
           r"[\x80-\x9f]", s)), st.booleans())
def test_mailbox_names_read_back(name: str, utf8: bool) -> None:
    expected = "INBOX" if name.upper() == "INBOX" else name
    assert _read_back(r.mailbox_name(name, utf8=utf8), utf8, "mailbox") == expected


@given(st.sets(st.integers(1, 300), max_size=60))
def test_sequence_set_compression_round_trips(numbers: set[int]) -> None:
    text = str(SequenceSet.from_numbers(numbers))
    if not numbers:
        assert text == ""
        return
    cur = Cursor([text.encode()], [], max_ranges=10_000)
    parsed = cur.sequence_set()
    assert set(parsed.iter(300)) == numbers
    assert len(parsed.ranges) <= len(numbers)


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 50)), min_size=1, max_size=8),
       st.integers(0, 60))
def test_sequence_set_resolve_matches_brute_force(ranges: list[tuple[int, int]],
                                                  largest: int) -> None:
    seqset = SequenceSet(tuple(ranges))  # 0 is "*"
    expected = set()
    for a, b in ranges:
        a, b = a or largest, b or largest
        expected |= set(range(min(a, b), max(a, b) + 1))
    assert {n for lo, hi in seqset.resolve(largest) for n in range(lo, hi + 1)} == expected
    assert set(seqset.iter(largest)) == {n for n in expected if 1 <= n <= largest}
    assert all(seqset.contains(n, largest) for n in expected)


def test_commands_module_is_what_we_check_against() -> None:
    assert type(c.Noop("a")).__module__.endswith("commands")
