"""SASL AUTH in the POP3 core (RFC 5034), driven with the shared mechanisms (kittiwake.sasl)."""

from __future__ import annotations

import base64

import pytest
from test_pop3_server import LOGIN, Result, capa, run
from test_sasl import FakeLookup, ScramClient

from kittiwake import sasl
from kittiwake.pop3 import events as ev
from kittiwake.pop3 import replies as R
from kittiwake.pop3.server import ServerConnection, ServerSettings, State

TLS = ServerSettings(stls=True)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_auth_plain_with_initial_response() -> None:
    res = run(b"AUTH PLAIN " + b64(b"\0alice\0pw") + b"\r\nSTAT\r\n", tls_active=True)
    assert res.of(ev.AuthStart) == [ev.AuthStart("PLAIN", b"\0alice\0pw")]
    assert res.conn.state is State.TRANSACTION
    assert res.conn.authenticated_as == "alice"


def test_auth_plain_without_initial_response_gets_an_empty_challenge() -> None:
    res = run([b"AUTH plain\r\n", b64(b"alice\0alice\0pw") + b"\r\n"], tls_active=True)
    # RFC 5034 §4: a challenge is "+" SP base64; empty data leaves "+ ".
    assert res.lines[1] == b"+ "
    assert res.of(ev.AuthResponse) == [ev.AuthResponse(b"alice\0alice\0pw")]
    assert res.conn.state is State.TRANSACTION


def test_equals_sign_is_an_empty_initial_response() -> None:
    res = run(b"AUTH PLAIN =\r\n", tls_active=True)
    assert res.of(ev.AuthStart) == [ev.AuthStart("PLAIN", b"")]
    assert res.statuses[-1] == R.AUTH_FAILED.to_bytes().strip()


def test_wrong_credentials_fail_with_auth_code() -> None:
    res = run(b"AUTH PLAIN " + b64(b"\0alice\0nope") + b"\r\n", tls_active=True)
    assert res.statuses[-1].startswith(b"-ERR [AUTH]")
    assert res.conn.state is State.AUTHORIZATION


def test_star_cancels_the_exchange() -> None:
    res = run(b"AUTH PLAIN\r\n*\r\nNOOP\r\n", tls_active=True)
    assert res.statuses[-2:] == [R.AUTH_CANCELLED.to_bytes().strip(),
                                 R.WRONG_STATE.to_bytes().strip()]
    assert not res.of(ev.AuthResponse)


def test_bad_base64_ends_the_exchange() -> None:
    res = run(b"AUTH PLAIN\r\nnot base64!\r\n", tls_active=True)
    assert res.statuses[-1] == R.BAD_BASE64.to_bytes().strip()
    res = run(b"AUTH PLAIN QQ=\r\n", tls_active=True)
    assert res.statuses[-1] == R.BAD_BASE64.to_bytes().strip()
    assert not res.of(ev.AuthStart)


def test_unknown_mechanism_is_refused_by_the_core() -> None:
    res = run(b"AUTH CRAM-MD5\r\nAUTH SCRAM-SHA-256-PLUS\r\n", tls_active=True)
    assert res.statuses[1:] == [R.UNKNOWN_MECHANISM.to_bytes().strip()] * 2
    assert not res.of(ev.AuthStart)


def test_bare_auth_lists_the_mechanisms() -> None:
    res = run(b"AUTH\r\n", TLS, tls_active=True)
    assert res.output.endswith(b"+OK SASL mechanisms follow\r\nSCRAM-SHA-256\r\nPLAIN\r\n"
                               b"LOGIN\r\n.\r\n")


def test_plain_before_tls_is_refused_but_scram_is_offered() -> None:
    res = run(b"AUTH PLAIN\r\nAUTH\r\n", TLS)
    assert res.statuses[1] == R.PLAINTEXT_DISALLOWED.to_bytes().strip()
    assert res.output.endswith(b"follow\r\nSCRAM-SHA-256\r\n.\r\n")


def test_plaintext_setting_allows_plain_before_tls() -> None:
    caps = capa(run(b"CAPA\r\n", ServerSettings(plaintext_auth=True, stls=True)))
    assert b"USER" in caps and b"SASL SCRAM-SHA-256 PLAIN LOGIN" in caps and b"STLS" in caps


def test_auth_login_mechanism() -> None:
    res = run([b"AUTH LOGIN\r\n", b64(b"alice") + b"\r\n", b64(b"pw") + b"\r\n"],
              tls_active=True)
    assert res.lines[1] == b"+ " + b64(b"Username:")
    assert res.lines[2] == b"+ " + b64(b"Password:")
    assert res.conn.state is State.TRANSACTION


def test_auth_failures_count_towards_the_connection_limit() -> None:
    bad = b"AUTH PLAIN " + b64(b"\0alice\0nope") + b"\r\n"
    res = run(bad + b"AUTH PLAIN\r\n*\r\n" + bad + LOGIN, tls_active=True)
    assert res.statuses[-1] == R.TOO_MANY_AUTH_FAILURES.to_bytes().strip()
    assert res.conn.closed and not res.of(ev.Login)


def test_over_long_sasl_response_fails_the_exchange() -> None:
    settings = ServerSettings(max_auth_line=100)
    res = run([b"AUTH PLAIN\r\n", b"A" * 200 + b"\r\nNOOP\r\n"], settings, tls_active=True)
    assert R.LINE_TOO_LONG.to_bytes().strip() in res.statuses
    assert res.statuses[-1] == R.WRONG_STATE.to_bytes().strip()


# --- SCRAM-SHA-256, whose success carries data (RFC 4422 §5) ------------------------------


def scram_session(password: str) -> tuple[Result, ScramClient]:
    """Drive a real SCRAM exchange: the server's final message goes out as a challenge and
    the client answers it with an empty line before the +OK."""
    lookup = FakeLookup()
    lookup.add("alice", "pw")
    conn = ServerConnection(ServerSettings())
    res = Result(conn, conn.greeting())
    client = ScramClient("alice", password)
    mech: sasl.Mechanism | None = None
    final_user: str | None = None
    replies: list[bytes] = []

    def feed(data: bytes) -> None:
        nonlocal mech, final_user
        conn.receive_data(data)
        while (event := conn.next_event()) is not None:
            res.events.append(event)
            if isinstance(event, ev.Output):
                out = event.data
            elif isinstance(event, ev.AuthStart):
                mech = sasl.new_mechanism(event.mechanism, lookup)
                assert mech is not None
                out = answer(mech.step(event.initial))
            elif isinstance(event, ev.AuthResponse):
                if final_user is not None:
                    assert event.data == b""
                    out = conn.accept_login(final_user, [])
                else:
                    assert mech is not None
                    out = answer(mech.step(event.data))
            else:
                raise AssertionError(event)
            res.output += out
            replies.append(out)

    def answer(step: sasl.Step) -> bytes:
        nonlocal final_user
        if isinstance(step, sasl.Challenge):
            return conn.send_challenge(step.data)
        if isinstance(step, sasl.Success):
            assert step.final_data is not None
            final_user = step.authcid
            return conn.send_challenge(step.final_data)
        return conn.send(R.AUTH_FAILED)

    feed(b"AUTH SCRAM-SHA-256 " + b64(client.first()) + b"\r\n")
    server_first = base64.b64decode(replies[-1][2:].strip())
    feed(b64(client.final(server_first)) + b"\r\n")
    if replies[-1].startswith(b"+ "):
        assert client.verify(base64.b64decode(replies[-1][2:].strip()))
        feed(b"\r\n")
    return res, client


def test_scram_sha_256_before_tls_with_server_final_as_challenge() -> None:
    res, _ = scram_session("pw")
    assert res.conn.state is State.TRANSACTION
    assert res.statuses[-1] == b"+OK maildrop has 0 messages (0 octets)"


def test_scram_with_wrong_password_fails() -> None:
    res, _ = scram_session("wrong")
    assert res.statuses[-1] == R.AUTH_FAILED.to_bytes().strip()
    assert res.conn.state is State.AUTHORIZATION


@pytest.mark.parametrize("initial", [b"AUTH PLAIN " + b64(b"\0alice\0pw"), b"AUTH SCRAM-SHA-256"])
def test_auth_event_repr_hides_the_response(initial: bytes) -> None:
    res = run(initial + b"\r\n", tls_active=True)
    assert b"pw" not in repr(res.of(ev.AuthStart)).encode()
