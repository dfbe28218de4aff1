"""The IMAP connection core: states, literals, limits, IDLE, AUTHENTICATE, STARTTLS,
COMPRESS and ENABLE — bytes in, events and bytes out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from kittiwake.imap import commands as c
from kittiwake.imap.commands import State
from kittiwake.imap.connection import ConnectionSettings, ServerConnection
from kittiwake.imap.events import (
    AuthenticateResponse,
    ConnectionClosed,
    Event,
    IdleDone,
    ParseError,
    SendContinuation,
)
from kittiwake.imap.response import Continuation, Status, Tagged, Untagged

Answer = Callable[[c.Command], Status]


def ok(_: c.Command) -> Status:
    return Status.OK


@dataclass
class Result:
    conn: ServerConnection
    events: list[Event] = field(default_factory=list)
    output: bytearray = field(default_factory=bytearray)

    @property
    def commands(self) -> list[c.Command]:
        return [e for e in self.events if not isinstance(
            e, ParseError | SendContinuation | IdleDone | AuthenticateResponse | ConnectionClosed)]

    @property
    def errors(self) -> list[ParseError]:
        return [e for e in self.events if isinstance(e, ParseError)]

    @property
    def lines(self) -> list[bytes]:
        return bytes(self.output).split(b"\r\n")[:-1]


def drain(result: Result, answer: Answer = ok) -> None:
    """Answer every event as a simple session would: OK (or ``answer``'s status) to each
    command, ``+`` to IDLE and to AUTHENTICATE without an initial response."""
    conn = result.conn
    while (ev := conn.next_event()) is not None:
        result.events.append(ev)
        if isinstance(ev, SendContinuation):
            result.output += ev.data
        elif isinstance(ev, ParseError):
            result.output += conn.send(ev.response)
        elif isinstance(ev, IdleDone | AuthenticateResponse):
            result.output += conn.send(Tagged(ev.tag, Status.OK))
        elif isinstance(ev, ConnectionClosed):
            pass
        elif isinstance(ev, c.Idle) and answer(ev) is Status.OK:
            result.output += conn.send(Continuation("idling"))
        elif isinstance(ev, c.Authenticate) and ev.initial_response is None:
            result.output += conn.send(Continuation(data=b""))
        else:
            if isinstance(ev, c.Logout):
                result.output += conn.send(Untagged(Status.BYE, "bye"))
            result.output += conn.send(Tagged(ev.tag, answer(ev)))


def run(chunks: Iterable[bytes], settings: ConnectionSettings | None = None,
        answer: Answer = ok, conn: ServerConnection | None = None, **kw: bool) -> Result:
    result = Result(conn or ServerConnection(settings, **kw))
    for chunk in chunks:
        result.conn.receive_data(chunk)
        drain(result, answer)
    return result


LOGIN = b"a0 LOGIN user pass\r\n"
SELECT = LOGIN + b"a1 SELECT INBOX\r\n"


# --------------------------------------------------------------------------- states


def test_login_authenticates_and_select_selects() -> None:
    r = run([LOGIN])
    assert r.conn.state is State.AUTHENTICATED
    r = run([b"a1 SELECT INBOX\r\n"], conn=r.conn)
    assert r.conn.state is State.SELECTED and not r.conn.read_only
    r = run([b"a2 EXAMINE INBOX\r\n"], conn=r.conn)
    assert r.conn.state is State.SELECTED and r.conn.read_only
    r = run([b"a3 CLOSE\r\n"], conn=r.conn)
    assert r.conn.state is State.AUTHENTICATED


def test_failed_login_stays_unauthenticated() -> None:
    r = run([LOGIN + b"a1 SELECT INBOX\r\n"], answer=lambda _: Status.NO)
    assert r.conn.state is State.NOT_AUTHENTICATED
    assert r.lines == [b"a0 NO completed", b"a1 BAD SELECT is not allowed in the not "
                                             b"authenticated state"]


def test_failed_select_deselects() -> None:
    r = run([SELECT])
    assert r.conn.state is State.SELECTED
    run([b"a2 SELECT nosuch\r\n"], conn=r.conn, answer=lambda _: Status.NO)
    assert r.conn.state is State.AUTHENTICATED


def test_unselect_and_logout() -> None:
    r = run([SELECT + b"a2 UNSELECT\r\n"])
    assert r.conn.state is State.AUTHENTICATED
    r = run([b"a3 LOGOUT\r\na4 NOOP\r\n"], conn=r.conn)
    assert r.conn.state is State.LOGOUT and r.conn.closed
    assert r.lines == [b"* BYE bye", b"a3 OK completed"]  # a4 is never read


def test_commands_in_the_wrong_state_are_bad() -> None:
    r = run([b"a1 FETCH 1 FLAGS\r\na2 NOOP\r\n"])
    assert r.lines == [b"a1 BAD FETCH is not allowed in the not authenticated state",
                       b"a2 OK completed"]
    r = run([LOGIN + b"a1 LOGIN x y\r\na2 EXPUNGE\r\n"])
    assert [line.split(b" ")[1] for line in r.lines] == [b"OK", b"BAD", b"BAD"]


def test_preauth_starts_authenticated() -> None:
    assert ServerConnection(preauth=True).state is State.AUTHENTICATED


def test_pipelined_commands_wait_for_completion() -> None:
    conn = ServerConnection()
    conn.receive_data(LOGIN + b"a1 SELECT INBOX\r\n")
    login = conn.next_event()
    assert isinstance(login, c.Login)
    assert conn.next_event() is None  # SELECT waits: LOGIN might still fail
    assert conn.pending is login and conn.buffered == 17
    conn.send(Untagged(Status.OK, "untagged data does not complete"))
    assert conn.next_event() is None
    conn.send(Tagged("other", Status.OK))  # not this command's tag
    assert conn.next_event() is None
    conn.send(Tagged("a0", Status.OK))
    assert isinstance(conn.next_event(), c.Select)


def test_lf_only_line_endings_are_accepted() -> None:
    r = run([b"a1 LOGIN {4}\nuser pass\na2 NOOP\n"])
    assert r.commands == [c.Login("a1", "user", "pass"), c.Noop("a2")]


def test_bye_closes() -> None:
    conn = ServerConnection()
    assert conn.send(Untagged(Status.BYE, "autologout")) == b"* BYE autologout\r\n"
    assert conn.closed and conn.state is State.LOGOUT
    conn.receive_data(b"a NOOP\r\n")
    assert conn.next_event() is None


def test_peer_close() -> None:
    r = run([b"a1 NOOP\r\na2 NOO", b""])
    assert r.events == [c.Noop("a1"), ConnectionClosed()]
    assert r.conn.closed and r.conn.next_event() is None


def test_error_count() -> None:
    r = run([b"x\r\ny\r\nz NOOP\r\n"])
    assert r.conn.error_count == 2
    assert r.lines == [b"x BAD missing command", b"y BAD missing command", b"z OK completed"]


# --------------------------------------------------------------------------- literals


def test_synchronising_literal_asks_for_data() -> None:
    r = run([b"a1 LOGIN {4}\r\n"])
    assert r.output == b"+ Ready for literal data\r\n"
    r = run([b"user {4}\r\n"], conn=r.conn)
    assert r.output == b"+ Ready for literal data\r\n"
    r = run([b"pass\r\n"], conn=r.conn)
    assert r.commands == [c.Login("a1", "user", "pass")]


def test_non_synchronising_literal_needs_no_continuation() -> None:
    r = run([b"a1 LOGIN {4+}\r\nuser {4+}\r\npass\r\n"])
    assert r.lines == [b"a1 OK completed"]


def test_literal_for_unknown_or_misplaced_command_is_refused_before_data() -> None:
    r = run([b"a1 FROB {5}\r\n", b"a2 NOOP\r\n"])
    assert r.lines == [b"a1 BAD unknown command", b"a2 OK completed"]
    r = run([b"a1 APPEND INBOX {5}\r\n", b"a2 NOOP\r\n"])
    assert r.lines == [b"a1 BAD APPEND is not allowed in the not authenticated state",
                       b"a2 OK completed"]


def test_too_large_sync_literal_is_refused_and_client_moves_on() -> None:
    settings = ConnectionSettings(max_literal_size=10)
    r = run([LOGIN + b"a1 SELECT {11}\r\n", b"a2 NOOP\r\n"], settings)
    assert r.lines == [b"a0 OK completed", b"a1 BAD [TOOBIG] literal too large",
                       b"a2 OK completed"]
    r = run([LOGIN + b"a1 SELECT {10}\r\n0123456789\r\n"], settings)
    assert r.commands[-1] == c.Select("a1", "0123456789")


def test_too_large_non_sync_literal_is_skipped_with_the_rest_of_its_command() -> None:
    settings = ConnectionSettings(max_literal_size=10)
    smuggled = b"b1 LOGOUT\r\n"  # inside the literal: must never run
    r = run([LOGIN + b"a1 RENAME {11+}\r\n" + smuggled + b" {3+}\r\nxyz\r\na2 NOOP\r\n"],
            settings)
    assert r.lines == [b"a0 OK completed", b"a1 BAD [TOOBIG] literal too large",
                       b"a2 OK completed"]


@pytest.mark.parametrize("split", [1, 5, 13, 30])
def test_skipping_works_across_reads(split: int) -> None:
    settings = ConnectionSettings(max_literal_size=10)
    stream = LOGIN + b"a1 RENAME {20+}\r\n" + b"b LOGOUT\r\n" * 2 + b" x\r\na2 NOOP\r\n"
    chunks = [stream[i:i + split] for i in range(0, len(stream), split)]
    assert run(chunks, settings).lines == run([stream], settings).lines


def test_literal_minus() -> None:
    settings = ConnectionSettings(literal_plus=False)
    big = b"x" * 4097
    r = run([LOGIN + b"a1 SELECT {4097+}\r\n" + big + b"\r\na2 SELECT {4096+}\r\n" + big[:-1]
             + b"\r\n"], settings)
    assert r.lines == [b"a0 OK completed",
                       b"a1 BAD [TOOBIG] non-synchronizing literal over 4096 octets",
                       b"a2 OK completed"]
    assert r.commands[-1] == c.Select("a2", "x" * 4096)
    # LITERAL- does not limit synchronising literals.
    r = run([LOGIN + b"a1 SELECT {4097}\r\n" + big + b"\r\n"], settings)
    assert r.commands[-1] == c.Select("a1", "x" * 4097)


def test_append_may_use_the_message_size_limit() -> None:
    settings = ConnectionSettings(max_literal_size=10, max_append_size=100)
    r = run([LOGIN + b"a1 APPEND INBOX {100}\r\n" + b"m" * 100 + b"\r\n"], settings)
    assert r.commands[-1] == c.Append("a1", "INBOX", b"m" * 100)
    r = run([LOGIN + b"a1 APPEND INBOX {101}\r\n", b"a2 NOOP\r\n"], settings)
    assert r.lines[1:] == [b"a1 BAD [TOOBIG] literal too large", b"a2 OK completed"]
    r = run([LOGIN + b"a1 APPEND {11}\r\n"], settings)  # the mailbox name is not the message
    assert r.lines[1:] == [b"a1 BAD [TOOBIG] literal too large"]


def test_command_size_budget() -> None:
    settings = ConnectionSettings(max_literal_size=100, max_command_size=150)
    r = run([LOGIN + b"a1 RENAME {100+}\r\n" + b"u" * 100 + b" {100+}\r\n" + b"p" * 100
             + b"\r\na2 NOOP\r\n"], settings)
    assert r.lines[1:] == [b"a1 BAD [TOOBIG] command too large", b"a2 OK completed"]


def test_line_too_long() -> None:
    settings = ConnectionSettings(max_line_length=20)
    r = run([b"a1 LOGIN " + b"x" * 30 + b" y\r\na2 NOOP\r\n"], settings)
    assert r.lines == [b"a1 BAD [TOOBIG] line too long", b"a2 OK completed"]
    # Exactly at the limit is fine, with CRLF or bare LF.
    r = run([b"a1 LOGIN " + b"x" * 9 + b" y\r\n", b"a2 LOGIN " + b"x" * 9 + b" y\n"], settings,
            answer=lambda _: Status.NO)
    assert [type(e) for e in r.events] == [c.Login, c.Login]


def test_line_too_long_that_ends_with_a_non_sync_literal() -> None:
    settings = ConnectionSettings(max_line_length=20)
    r = run([b"a1 LOGIN " + b"x" * 30 + b" {9+}\r\n" + b"b LOGOUT\n" + b"\r\na2 NOOP\r\n"],
            settings)
    assert r.lines == [b"a1 BAD [TOOBIG] line too long", b"a2 OK completed"]


def test_over_long_line_arriving_in_pieces_is_answered_once() -> None:
    settings = ConnectionSettings(max_line_length=20)
    r = run([b"a1 NOOP " + b"x" * 10] + [b"x" * 10] * 10 + [b"\r\na2 NOOP\r\n"], settings)
    assert r.lines == [b"a1 BAD [TOOBIG] line too long", b"a2 OK completed"]
    r = run([b"x" * 50, b"\r\na2 NOOP\r\n"], settings)  # no tag to be found
    assert r.lines == [b"* BAD [TOOBIG] line too long", b"a2 OK completed"]


def test_unreasonable_non_sync_literal_ends_the_connection() -> None:
    settings = ConnectionSettings(max_literal_size=10, max_discard=1000)
    r = run([LOGIN + b"a1 SELECT {1001+}\r\nxx"], settings)
    assert r.lines[1:] == [b"* BYE [TOOBIG] literal too large"]
    assert r.conn.closed
    r = run([LOGIN + b"a1 SELECT {99999999999999999999999+}\r\n"])
    assert r.conn.closed


def test_sync_literal_huge_number_is_just_refused() -> None:
    r = run([LOGIN + b"a1 SELECT {99999999999999999999999}\r\n", b"a2 NOOP\r\n"])
    assert r.lines[1:] == [b"a1 BAD [TOOBIG] literal too large", b"a2 OK completed"]


def test_zero_length_literals() -> None:
    r = run([b"a1 LOGIN {0}\r\n {0+}\r\n\r\n"])
    assert r.commands == [c.Login("a1", "", "")]


# --------------------------------------------------------------------------- IDLE


def test_idle_until_done() -> None:
    r = run([SELECT + b"a2 IDLE\r\n"])
    assert r.conn.idling and r.output.endswith(b"+ idling\r\n")
    r = run([b"do", b"ne\r\na3 NOOP\r\n"], conn=r.conn)
    assert r.events == [IdleDone("a2"), c.Noop("a3")]
    assert r.lines == [b"a2 OK completed", b"a3 OK completed"]
    assert not r.conn.idling


def test_idle_with_something_else_than_done_is_bad() -> None:
    r = run([SELECT + b"a2 IDLE\r\na3 NOOP\r\na4 NOOP\r\n"])
    assert r.lines[-3:] == [b"+ idling", b"a2 BAD expected DONE", b"a4 OK completed"]


def test_refused_idle_reads_done_as_a_command() -> None:
    def answer(cmd: c.Command) -> Status:
        return Status.NO if isinstance(cmd, c.Idle) else Status.OK
    r = run([SELECT + b"a2 IDLE\r\nDONE\r\n"], answer=answer)
    assert r.lines[-2:] == [b"a2 NO completed", b"DONE BAD missing command"]


def test_updates_may_be_sent_while_idling() -> None:
    r = run([SELECT + b"a2 IDLE\r\n"])
    assert r.conn.send(Untagged(Status.OK, "still here")) == b"* OK still here\r\n"
    assert r.conn.idling


# --------------------------------------------------------------------------- AUTHENTICATE


def test_authenticate_exchange() -> None:
    conn = ServerConnection()
    conn.receive_data(b"a1 AUTHENTICATE PLAIN\r\n")
    assert conn.next_event() == c.Authenticate("a1", "PLAIN")
    assert conn.authenticating
    assert conn.send(Continuation(data=b"")) == b"+ \r\n"
    conn.receive_data(b"dGVzdAB0ZXN0AHRlc3Q=\r\n")
    assert conn.next_event() == AuthenticateResponse("a1", b"test\x00test\x00test")
    assert conn.next_event() is None
    conn.send(Continuation(data=b"v=xyz"))
    conn.receive_data(b"\r\n")
    assert conn.next_event() == AuthenticateResponse("a1", b"")
    conn.send(Tagged("a1", Status.OK))
    assert conn.state is State.AUTHENTICATED and not conn.authenticating


@pytest.mark.parametrize(("line", "text"), [
    (b"*", b"a1 BAD authentication cancelled"),
    (b"not base64!", b"a1 BAD invalid base64 in authentication response"),
])
def test_authenticate_cancel_or_garbage_is_bad(line: bytes, text: bytes) -> None:
    r = run([b"a1 AUTHENTICATE PLAIN\r\n" + line + b"\r\na2 NOOP\r\n"])
    assert r.lines == [b"+ ", text, b"a2 OK completed"]
    assert r.conn.state is State.NOT_AUTHENTICATED


def test_authenticate_response_line_limit() -> None:
    settings = ConnectionSettings(max_line_length=100)
    r = run([b"a1 AUTHENTICATE PLAIN\r\n" + b"A" * 200 + b"\r\na2 NOOP\r\n"], settings)
    assert r.lines == [b"+ ", b"a1 BAD authentication response too long", b"a2 OK completed"]


def test_sasl_ir() -> None:
    r = run([b"a1 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n"])
    assert r.commands == [c.Authenticate("a1", "PLAIN", b"test\x00test\x00test")]
    assert r.conn.state is State.AUTHENTICATED
    assert "test" not in repr(AuthenticateResponse("a", b"test"))


# --------------------------------------------------------------------------- STARTTLS


def test_starttls_not_offered_is_bad() -> None:
    assert run([b"a1 STARTTLS\r\n"]).lines == [b"a1 BAD STARTTLS is not available"]


def test_starttls_discards_injected_plaintext() -> None:
    settings = ConnectionSettings(starttls=True)
    r = run([b"a1 STARTTLS\r\na2 LOGIN evil evil\r\n"], settings)
    assert r.lines == [b"a1 OK completed"]
    assert r.conn.tls_active and r.conn.buffered == 0
    r = run([b"a3 STARTTLS\r\n"], conn=r.conn)
    assert r.lines == [b"a3 BAD STARTTLS is not available"]


def test_starttls_refused_keeps_plaintext() -> None:
    settings = ConnectionSettings(starttls=True)
    r = run([b"a1 STARTTLS\r\na2 NOOP\r\n"], settings, answer=lambda _: Status.NO)
    assert r.lines == [b"a1 NO completed", b"a2 NO completed"]
    assert not r.conn.tls_active


# --------------------------------------------------------------------------- COMPRESS


def test_compress_hands_back_the_compressed_octets() -> None:
    r = run([LOGIN + b"a1 COMPRESS DEFLATE\r\n\x78\x9c compressed"])
    assert r.conn.compress_active
    assert r.conn.unprocessed_data() == b"\x78\x9c compressed"
    assert r.conn.unprocessed_data() == b""
    r = run([b"a2 NOOP\r\n"], conn=r.conn)  # the session now feeds inflated octets
    assert r.lines == [b"a2 OK completed"]


# --------------------------------------------------------------------------- ENABLE


def test_enable() -> None:
    conn = ServerConnection(preauth=True)
    assert conn.enable(["condstore", "X-GOOD-IDEA"]) == ("CONDSTORE",)
    assert conn.enable(["CONDSTORE", "QRESYNC"]) == ("QRESYNC",)
    assert conn.enabled == {"CONDSTORE", "QRESYNC"}
    assert not conn.utf8 and not conn.rev2
    assert conn.enable(["IMAP4rev2"]) == ("IMAP4rev2",)
    assert conn.utf8 and conn.rev2


def test_qresync_implies_condstore() -> None:
    conn = ServerConnection(preauth=True)
    assert conn.enable(["QRESYNC"]) == ("QRESYNC",)
    assert "CONDSTORE" in conn.enabled


def test_enableable_is_a_setting() -> None:
    conn = ServerConnection(ConnectionSettings(enableable=frozenset({"CONDSTORE"})),
                            preauth=True)
    assert conn.enable(["UTF8=ACCEPT", "CONDSTORE"]) == ("CONDSTORE",)


def test_utf8_mailbox_names_after_enable() -> None:
    conn = ServerConnection(preauth=True)
    r = run([b"a1 SELECT Entw&APw-rfe\r\n"], conn=conn)
    assert r.commands == [c.Select("a1", "Entwürfe")]
    run([b"a2 UNSELECT\r\n"], conn=conn)
    conn.enable(["UTF8=ACCEPT"])
    r = run([b'a3 SELECT "Entw\xc3\xbcrfe"\r\na4 SELECT A&-B\r\n'], conn=conn)
    assert r.commands == [c.Select("a3", "Entwürfe"), c.Select("a4", "A&-B")]


def test_qresync_select_needs_enable() -> None:
    conn = ServerConnection(preauth=True)
    wire = b"a1 SELECT INBOX (QRESYNC (1 2))\r\n"
    assert run([wire], conn=conn).lines == [b"a1 BAD QRESYNC is not enabled"]
    conn.enable(["QRESYNC"])
    assert isinstance(run([wire], conn=conn).commands[0], c.Select)
