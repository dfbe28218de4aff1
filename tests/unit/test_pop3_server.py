"""The POP3 server core (RFC 1939, RFC 2449): states, commands, exact sizes and stuffing."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from kittiwake import sasl
from kittiwake.pop3 import events as ev
from kittiwake.pop3 import replies as R
from kittiwake.pop3.content import unstuff
from kittiwake.pop3.events import MaildropEntry
from kittiwake.pop3.server import ServerConnection, ServerSettings, State

MSG1 = b"From: a@example.net\r\nSubject: one\r\n\r\nHello\r\n.dot line\r\n..two dots\r\n.\r\nend\r\n"
MSG2 = b".starts with a dot: x\r\n\r\nbody 1\r\nbody 2\r\nbody 3\r\n"
MSG3 = b"Subject: no body and no final newline"
MESSAGES = {11: MSG1, 12: MSG2, 15: MSG3}
MAILDROP = tuple(MaildropEntry(uid, len(m), f"1700000000.{uid}") for uid, m in MESSAGES.items())

PLAIN_OK = ServerSettings(plaintext_auth=True)
LOGIN = b"USER alice\r\nPASS pw\r\n"


class Lookup:
    def verify_password(self, username: str, password: str) -> bool:
        return (username, password) == ("alice", "pw")

    def scram_credentials(self, username: str) -> sasl.ScramCredentials | None:
        return None


@dataclass
class Result:
    conn: ServerConnection
    output: bytes = b""
    events: list[ev.Event] = field(default_factory=list)
    mechanism: sasl.Mechanism | None = None

    @property
    def lines(self) -> list[bytes]:
        return self.output.split(b"\r\n")[:-1]

    @property
    def statuses(self) -> list[bytes]:
        """Status lines only (multi-line bodies dropped): b"+OK" / b"-ERR ..."."""
        return [ln for ln in self.lines if ln.startswith((b"+OK", b"-ERR", b"+ "))]

    def of(self, kind: type) -> list[ev.Event]:
        return [e for e in self.events if isinstance(e, kind)]


def accept_all(res: Result, event: ev.Event) -> bytes:
    """A session stand-in: alice/pw logs in, messages come from MESSAGES, QUIT succeeds."""
    conn = res.conn
    if isinstance(event, ev.Login):
        if Lookup().verify_password(event.user, event.password):
            return conn.accept_login(event.user, MAILDROP)
        return conn.send(R.AUTH_FAILED)
    if isinstance(event, ev.AuthStart | ev.AuthResponse):
        if isinstance(event, ev.AuthStart):
            res.mechanism = sasl.new_mechanism(event.mechanism, Lookup())
            data = event.initial
        else:
            data = event.data
        assert res.mechanism is not None
        step = res.mechanism.step(data)
        if isinstance(step, sasl.Challenge):
            return conn.send_challenge(step.data)
        if isinstance(step, sasl.Success):
            return conn.accept_login(step.authcid, MAILDROP)
        return conn.send(R.AUTH_FAILED)
    if isinstance(event, ev.Retrieve):
        return conn.send_message(MESSAGES[event.entry.uid])
    if isinstance(event, ev.Update):
        return conn.send(R.BYE)
    if isinstance(event, ev.StartTls):
        return conn.send(R.BEGIN_TLS)
    raise AssertionError(event)


def drive(res: Result, chunks: Iterable[bytes], finish_tls: bool = True) -> Result:
    for chunk in chunks:
        res.conn.receive_data(chunk)
        while (event := res.conn.next_event()) is not None:
            res.events.append(event)
            if isinstance(event, ev.Output):
                res.output += event.data
            elif not isinstance(event, ev.ConnectionClosed):
                res.output += accept_all(res, event)
                if isinstance(event, ev.StartTls) and finish_tls:
                    res.conn.tls_started()
    return res


def run(data: bytes | list[bytes], settings: ServerSettings = PLAIN_OK, *,
        tls_active: bool = False, finish_tls: bool = True) -> Result:
    conn = ServerConnection(settings, tls_active=tls_active)
    res = Result(conn, conn.greeting())
    return drive(res, [data] if isinstance(data, bytes) else data, finish_tls)


def body(res: Result, status_prefix: bytes) -> bytes:
    """The multi-line body (terminator included) following the status line with prefix."""
    start = res.output.index(status_prefix)
    start = res.output.index(b"\r\n", start) + 2
    end = res.output.index(b"\r\n.\r\n", start - 2) + 5
    return res.output[start:end] if end > start else b".\r\n"


# --- greeting and AUTHORIZATION -----------------------------------------------------------


def test_greeting_is_positive_and_names_the_host() -> None:
    res = run(b"", ServerSettings(hostname="pop.example.com"))
    assert res.output.startswith(b"+OK pop.example.com ")
    assert res.output.endswith(b"\r\n")


def test_user_pass_opens_the_maildrop_with_exact_totals() -> None:
    res = run(LOGIN + b"STAT\r\n")
    total = sum(len(m) for m in MESSAGES.values())
    assert res.statuses[1:] == [
        b"+OK Send PASS",
        f"+OK maildrop has 3 messages ({total} octets)".encode(),
        f"+OK 3 {total}".encode(),
    ]
    assert res.conn.state is State.TRANSACTION
    assert res.conn.authenticated_as == "alice"
    assert res.of(ev.Login) == [ev.Login("alice", "pw")]


def test_password_may_contain_spaces() -> None:
    res = run(b"USER bob\r\nPASS correct horse battery\r\n")
    assert res.of(ev.Login) == [ev.Login("bob", "correct horse battery")]


def test_login_event_repr_hides_the_password() -> None:
    assert "pw" not in repr(ev.Login("alice", "pw"))


def test_wrong_password_returns_to_authorization_and_needs_user_again() -> None:
    res = run(b"USER alice\r\nPASS nope\r\nPASS pw\r\n")
    assert res.statuses[2:] == [b"-ERR [AUTH] Authentication failed", b"-ERR Send USER first"]
    assert res.conn.state is State.AUTHORIZATION


def test_pass_without_user_is_refused() -> None:
    assert run(b"PASS pw\r\n").statuses[-1] == b"-ERR Send USER first"


@pytest.mark.parametrize("line", [b"USER\r\n", b"USER a b\r\n", b"USER a\x01b\r\n",
                                  b"USER \xff\r\n", b"PASS\r\n"])
def test_malformed_user_or_pass_is_a_syntax_error(line: bytes) -> None:
    data = (b"USER alice\r\n" + line) if line.startswith(b"PASS") else line
    assert run(data).statuses[-1] == R.SYNTAX_ERROR.to_bytes().strip()


def test_three_failed_logins_close_the_connection() -> None:
    res = run(b"USER a\r\nPASS x\r\n" * 3 + b"USER alice\r\nPASS pw\r\n")
    assert res.statuses[-1] == R.TOO_MANY_AUTH_FAILURES.to_bytes().strip()
    assert res.conn.closed
    assert len(res.of(ev.Login)) == 3


def test_quit_in_authorization_closes_without_update() -> None:
    res = run(b"QUIT\r\nNOOP\r\n")
    assert res.statuses[-1] == R.BYE.to_bytes().strip()
    assert res.conn.closed
    assert not res.of(ev.Update)


def test_apop_is_refused() -> None:
    res = run(b"APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n")
    assert res.statuses[-1].startswith(b"-ERR")


# --- plaintext policy (RFC 2595 §4) and CAPA (RFC 2449 §5) --------------------------------


def capa(res: Result) -> list[bytes]:
    block = body(res, b"+OK Capability list follows")
    return block.split(b"\r\n")[:-2]


def test_capa_before_tls_offers_stls_and_scram_only() -> None:
    res = run(b"CAPA\r\n", ServerSettings(stls=True))
    caps = capa(res)
    assert b"STLS" in caps
    assert b"USER" not in caps
    assert b"SASL SCRAM-SHA-256" in caps
    for needed in (b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING"):
        assert needed in caps


def test_capa_under_tls_offers_user_and_plain_but_not_stls() -> None:
    caps = capa(run(b"CAPA\r\n", ServerSettings(stls=True), tls_active=True))
    assert b"STLS" not in caps
    assert b"USER" in caps
    assert b"SASL SCRAM-SHA-256 PLAIN LOGIN" in caps


def test_capa_after_login_drops_authorization_capabilities() -> None:
    res = run(LOGIN + b"CAPA\r\n", ServerSettings(stls=True), tls_active=True)
    caps = capa(res)
    assert b"USER" not in caps and not any(c.startswith(b"SASL") for c in caps)
    assert b"UIDL" in caps


@pytest.mark.parametrize("data", [b"USER alice\r\n", b"PASS pw\r\n", b"AUTH PLAIN AGFsaWNlAHB3\r\n"])
def test_cleartext_passwords_are_refused_before_tls(data: bytes) -> None:
    res = run(data, ServerSettings(stls=True))
    assert res.statuses[-1] == R.PLAINTEXT_DISALLOWED.to_bytes().strip()
    assert res.statuses[-1].startswith(b"-ERR [AUTH]")
    assert not res.of(ev.Login) and not res.of(ev.AuthStart)


def test_stls_discards_pipelined_commands_and_allows_user_after() -> None:
    res = run([b"STLS\r\nUSER evil\r\n", LOGIN + b"STAT\r\n"], ServerSettings(stls=True))
    assert res.statuses[1] == b"+OK Begin TLS negotiation"
    assert res.of(ev.Login) == [ev.Login("alice", "pw")]
    assert res.conn.tls_active


def test_input_during_handshake_is_ignored() -> None:
    res = run([b"STLS\r\n", b"USER evil\r\nPASS x\r\n"], ServerSettings(stls=True),
              finish_tls=False)
    assert not res.of(ev.Login)
    res.conn.tls_started()
    drive(res, [b"CAPA\r\n"])
    assert b"STLS" not in capa(res)


@pytest.mark.parametrize(
    ("settings", "tls_active", "data", "expected"),
    [
        (ServerSettings(stls=True), True, b"STLS\r\n", R.ALREADY_TLS),
        (ServerSettings(), False, b"STLS\r\n", R.TLS_NOT_AVAILABLE),
        (ServerSettings(stls=True), False, b"STLS now\r\n", R.SYNTAX_ERROR),
        (ServerSettings(stls=True, plaintext_auth=True), False, LOGIN + b"STLS\r\n",
         R.WRONG_STATE),
    ],
)
def test_stls_refusals(settings: ServerSettings, tls_active: bool, data: bytes,
                       expected: R.Reply) -> None:
    res = run(data, settings, tls_active=tls_active)
    assert res.statuses[-1] == expected.to_bytes().strip()
    assert not res.of(ev.StartTls)


# --- TRANSACTION ---------------------------------------------------------------------------


def test_list_and_uidl_show_every_message() -> None:
    res = run(LOGIN + b"LIST\r\nUIDL\r\nLIST 2\r\nUIDL 3\r\n")
    sizes = [len(m) for m in MESSAGES.values()]
    text = res.output.decode()
    assert f"1 {sizes[0]}\r\n2 {sizes[1]}\r\n3 {sizes[2]}\r\n.\r\n" in text
    assert "1 1700000000.11\r\n2 1700000000.12\r\n3 1700000000.15\r\n.\r\n" in text
    assert res.statuses[-2:] == [f"+OK 2 {sizes[1]}".encode(), b"+OK 3 1700000000.15"]


@pytest.mark.parametrize("uid", sorted(MESSAGES))
def test_retr_round_trips_byte_for_byte_with_announced_size(uid: int) -> None:
    number = sorted(MESSAGES).index(uid) + 1
    res = run(LOGIN + f"RETR {number}\r\n".encode())
    status = f"+OK {len(MESSAGES[uid])} octets\r\n".encode()
    wire = res.output[res.output.index(status) + len(status):]
    expected = MESSAGES[uid] if MESSAGES[uid].endswith(b"\r\n") else MESSAGES[uid] + b"\r\n"
    assert unstuff(wire) == expected
    assert res.of(ev.Retrieve)[0] == ev.Retrieve(number, MAILDROP[number - 1])


def test_retr_stuffs_every_leading_dot() -> None:
    res = run(LOGIN + b"RETR 1\r\n")
    assert b"\r\n..dot line\r\n...two dots\r\n..\r\nend\r\n.\r\n" in res.output
    res = run(LOGIN + b"RETR 2\r\n")
    assert b"octets\r\n..starts with a dot" in res.output


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (0, b".starts with a dot: x\r\n\r\n"),
        (2, b".starts with a dot: x\r\n\r\nbody 1\r\nbody 2\r\n"),
        (99, MSG2),
    ],
)
def test_top_sends_header_blank_line_and_n_body_lines(lines: int, expected: bytes) -> None:
    res = run(LOGIN + f"TOP 2 {lines}\r\n".encode())
    wire = res.output[res.output.index(b"+OK Top of message follows\r\n") + 28:]
    assert unstuff(wire) == expected
    assert res.of(ev.Retrieve)[0] == ev.Retrieve(2, MAILDROP[1], lines)


def test_top_of_a_message_without_body_is_the_whole_message() -> None:
    res = run(LOGIN + b"TOP 3 5\r\n")
    assert res.output.endswith(b"+OK Top of message follows\r\n" + MSG3 + b"\r\n.\r\n")


def test_dele_marks_and_hides_the_message() -> None:
    res = run(LOGIN + b"DELE 1\r\nSTAT\r\nLIST 1\r\nRETR 1\r\nDELE 1\r\nUIDL 1\r\nLIST\r\n")
    rest = sum(len(m) for m in (MSG2, MSG3))
    assert res.statuses[3:] == [
        b"+OK Message deleted",
        f"+OK 2 {rest}".encode(),
        b"-ERR Message already deleted",
        b"-ERR Message already deleted",
        b"-ERR Message already deleted",
        b"-ERR Message already deleted",
        f"+OK maildrop has 2 messages ({rest} octets)".encode(),
    ]
    assert not res.of(ev.Retrieve)
    assert res.output.endswith(f"2 {len(MSG2)}\r\n3 {len(MSG3)}\r\n.\r\n".encode())


def test_rset_unmarks_and_quit_then_deletes_nothing() -> None:
    res = run(LOGIN + b"DELE 1\r\nDELE 3\r\nRSET\r\nQUIT\r\n")
    total = sum(len(m) for m in MESSAGES.values())
    assert f"+OK maildrop has 3 messages ({total} octets)".encode() in res.statuses[5]
    assert res.of(ev.Update) == [ev.Update(())]
    assert res.conn.closed


def test_quit_after_dele_enters_update_with_the_uids() -> None:
    res = run(LOGIN + b"DELE 3\r\nDELE 1\r\nQUIT\r\nNOOP\r\n")
    assert res.of(ev.Update) == [ev.Update((11, 15))]
    assert res.statuses[-1] == R.BYE.to_bytes().strip()
    assert res.conn.state is State.UPDATE
    assert res.conn.closed


def test_dropped_connection_in_transaction_never_updates() -> None:
    res = run([LOGIN + b"DELE 1\r\n", b""])
    assert res.of(ev.ConnectionClosed) == [ev.ConnectionClosed()]
    assert not res.of(ev.Update)
    assert res.conn.closed


def test_noop_and_empty_maildrop() -> None:
    conn = ServerConnection(PLAIN_OK)
    conn.receive_data(LOGIN + b"STAT\r\nLIST\r\nUIDL\r\nNOOP\r\n")
    out = b""
    while (event := conn.next_event()) is not None:
        out += event.data if isinstance(event, ev.Output) else conn.accept_login("alice", [])
    assert out == (b"+OK Send PASS\r\n+OK maildrop has 0 messages (0 octets)\r\n+OK 0 0\r\n"
                   b"+OK maildrop has 0 messages (0 octets)\r\n.\r\n"
                   b"+OK Unique-id listing follows\r\n.\r\n+OK\r\n")


@pytest.mark.parametrize(
    "command",
    [b"LIST x", b"LIST 1 2", b"RETR", b"RETR 0", b"RETR -1", b"RETR 1x", b"TOP 1",
     b"TOP 1 -1", b"TOP 1 x", b"DELE", b"STAT 1", b"NOOP x", b"RSET 1", b"UIDL 0",
     b"RETR 99999999999", b"RETR \xd9\xa1"],
)
def test_bad_arguments_are_syntax_errors(command: bytes) -> None:
    res = run(LOGIN + command + b"\r\n")
    assert res.statuses[-1] == R.SYNTAX_ERROR.to_bytes().strip()
    assert res.conn.error_count == 1


@pytest.mark.parametrize("command", [b"RETR 4", b"LIST 4", b"TOP 4 1", b"DELE 4", b"UIDL 9"])
def test_message_numbers_beyond_the_maildrop_do_not_exist(command: bytes) -> None:
    assert run(LOGIN + command + b"\r\n").statuses[-1] == b"-ERR No such message"


@pytest.mark.parametrize("command", [b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"NOOP", b"RSET",
                                     b"TOP 1 1", b"UIDL"])
def test_transaction_commands_in_authorization_are_wrong_state(command: bytes) -> None:
    res = run(command + b"\r\n")
    assert res.statuses[-1] == R.WRONG_STATE.to_bytes().strip()
    assert not res.of(ev.Retrieve)


@pytest.mark.parametrize("command", [b"USER bob", b"PASS pw", b"APOP a b", b"AUTH PLAIN",
                                     b"STLS"])
def test_authorization_commands_in_transaction_are_wrong_state(command: bytes) -> None:
    res = run(LOGIN + command + b"\r\n", ServerSettings(stls=True), tls_active=True)
    assert res.statuses[-1] == R.WRONG_STATE.to_bytes().strip()


def test_keywords_are_case_insensitive() -> None:
    res = run(b"user alice\r\npass pw\r\nstat\r\nuidl 1\r\nqUiT\r\n")
    assert len(res.of(ev.Login)) == 1 and res.of(ev.Update)


def test_bare_lf_line_endings_are_accepted() -> None:
    assert run(b"USER alice\nPASS pw\nNOOP\n").statuses[-1] == b"+OK"


# --- errors, limits, closing ---------------------------------------------------------------


def test_unknown_command() -> None:
    res = run(b"XYZZY\r\n\r\n\xff\xfe\r\n")
    assert res.statuses[1:] == [R.UNKNOWN_COMMAND.to_bytes().strip()] * 3


def test_too_many_errors_close_the_connection() -> None:
    res = run(b"BAD\r\n" * 20, ServerSettings(max_errors=5))
    assert res.statuses[-1] == R.TOO_MANY_ERRORS.to_bytes().strip()
    assert len(res.statuses) == 1 + 5
    assert res.conn.closed


def test_over_long_line_is_refused_and_skipped_without_desync() -> None:
    settings = ServerSettings(max_command_line=64, plaintext_auth=True)
    res = run([b"NOOP " + b"x" * 100, b"y" * 1000, b"z\r\n" + LOGIN], settings)
    assert res.statuses[1] == R.LINE_TOO_LONG.to_bytes().strip()
    assert res.of(ev.Login) == [ev.Login("alice", "pw")]


def test_auth_lines_may_be_longer_than_commands() -> None:
    settings = ServerSettings(max_command_line=64, plaintext_auth=True)
    response = sasl.encode_challenge(b"\0alice\0pw" + b"\0" * 0)
    res = run(b"AUTH PLAIN " + response + b" " * 80 + b"\r\n", settings)
    assert res.conn.state is State.TRANSACTION


def test_abort_closes_whatever_is_pending() -> None:
    conn = ServerConnection(PLAIN_OK)
    conn.receive_data(LOGIN)
    assert isinstance(conn.next_event(), ev.Output)
    assert isinstance(conn.next_event(), ev.Login)
    assert conn.abort(R.AUTOLOGOUT) == b"-ERR Autologout; idle for too long\r\n"
    assert conn.closed and not conn.awaiting_reply
    assert conn.next_event() is None


def test_answers_must_match_the_pending_event() -> None:
    conn = ServerConnection(PLAIN_OK)
    with pytest.raises(ValueError):
        conn.send(R.OK)
    with pytest.raises(ValueError):
        conn.send_message(b"x")
    with pytest.raises(ValueError):
        conn.accept_login("alice", [])
    with pytest.raises(ValueError):
        conn.send_challenge(b"")
    conn.receive_data(LOGIN)
    conn.next_event()
    conn.next_event()
    with pytest.raises(ValueError):
        conn.send(R.OK)  # success goes through accept_login


def test_replies_fit_rfc2449_line_limit_and_never_carry_line_breaks() -> None:
    wire = R.Reply(False, "x" * 1000 + "\r\n+OK forged", "SYS/TEMP").to_bytes()
    assert len(wire) <= 512
    assert wire.count(b"\r\n") == 1 and wire.endswith(b"\r\n")


def test_response_codes_are_bracketed() -> None:
    assert R.IN_USE.to_bytes().startswith(b"-ERR [IN-USE] ")
    assert R.TEMP_FAILURE.to_bytes().startswith(b"-ERR [SYS/TEMP] ")
    assert R.THROTTLED.to_bytes().startswith(b"-ERR [LOGIN-DELAY] ")
    assert re.match(rb"^-ERR \[AUTH\] ", R.AUTH_FAILED.to_bytes())
