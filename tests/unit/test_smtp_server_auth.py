"""STARTTLS (RFC 3207) and AUTH (RFC 4954) in the SMTP server core."""

from __future__ import annotations

import pytest
from test_smtp_server import EHLO, accept_all, drive, run

from kittiwake.address import Address
from kittiwake.smtp import events as ev
from kittiwake.smtp import replies as R
from kittiwake.smtp.replies import Reply
from kittiwake.smtp.server import ServerConnection, ServerSettings

# --- STARTTLS (RFC 3207) --------------------------------------------------------------------

TLS = ServerSettings(starttls=True, auth_mechanisms=("PLAIN",))


def test_starttls_discards_pipelined_commands_and_resets_state() -> None:
    res = run([EHLO + b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<x@y.z>\r\n",
               EHLO + b"MAIL FROM:<a@example.com>\r\n"], TLS)
    assert res.codes == [220, 250, 220, 250, 250]
    assert [e.sender for e in res.of(ev.MailFrom)] == [Address("a", "example.com")]
    assert res.conn.tls_active


def test_data_before_handshake_completes_is_ignored() -> None:
    res = run([EHLO + b"STARTTLS\r\n", b"MAIL FROM:<evil@example.com>\r\n"], TLS,
              finish_tls=False)
    assert res.codes == [220, 250, 220]
    res.conn.tls_started()
    assert res.conn.helo_name is None
    drive(res, accept_all, [b"MAIL FROM:<a@example.com>\r\n"])
    assert res.events[-1] == ev.ProtocolError(R.NEED_EHLO)  # must EHLO again


def test_refused_starttls_keeps_plain_text_session() -> None:
    def no_tls(conn: ServerConnection, event: ev.Event) -> Reply | None:
        return R.TLS_NOT_AVAILABLE if isinstance(event, ev.StartTls) else accept_all(conn, event)

    res = run(EHLO + b"STARTTLS\r\nNOOP\r\n", TLS, no_tls)
    assert res.codes == [220, 250, 454, 250]
    assert not res.conn.tls_active


@pytest.mark.parametrize(
    ("settings", "tls_active", "command", "expected"),
    [
        (TLS, True, b"STARTTLS\r\n", R.ALREADY_TLS),
        (ServerSettings(), False, b"STARTTLS\r\n", R.NOT_IMPLEMENTED),
        (TLS, False, b"STARTTLS now\r\n", R.SYNTAX_ERROR),
    ],
)
def test_starttls_refusals(settings: ServerSettings, tls_active: bool, command: bytes,
                           expected: Reply) -> None:
    res = run(EHLO + command, settings, tls_active=tls_active)
    assert res.events[-1] == ev.ProtocolError(expected)


def test_starttls_forgets_authentication() -> None:
    settings = ServerSettings(starttls=True, auth_mechanisms=("PLAIN",), auth_requires_tls=False)
    res = run(EHLO + b"AUTH PLAIN AGZvbwBiYXI=\r\nSTARTTLS\r\n", settings)
    assert res.codes == [220, 250, 235, 220]
    assert not res.conn.authenticated


# --- AUTH (RFC 4954) ------------------------------------------------------------------------

AUTH = ServerSettings(auth_mechanisms=("PLAIN", "LOGIN"))


def test_auth_exchange() -> None:
    res = run(EHLO + b"AUTH login\r\ndXNlcg==\r\ncGFzcw==\r\n", AUTH, tls_active=True,
              policy=login_policy)
    assert res.events[1:] == [ev.Auth("LOGIN", None), ev.AuthResponse("dXNlcg=="),
                              ev.AuthResponse("cGFzcw==")]
    assert res.output.endswith(b"334 VXNlcm5hbWU6\r\n334 \r\n235 2.7.0 Authentication successful\r\n")
    assert res.conn.authenticated


def login_policy(conn: ServerConnection, event: ev.Event) -> Reply | None:
    if isinstance(event, ev.Auth):
        return Reply(334, "", "VXNlcm5hbWU6")
    if isinstance(event, ev.AuthResponse) and event.line == "dXNlcg==":
        return Reply(334, "", "")
    return accept_all(conn, event)


def test_auth_with_initial_response() -> None:
    res = run(EHLO + b"AUTH PLAIN AGZvbwBiYXI=\r\nAUTH PLAIN =\r\n", AUTH, tls_active=True)
    assert res.of(ev.Auth) == [ev.Auth("PLAIN", "AGZvbwBiYXI=")]
    assert res.replies[-1] == "503 5.5.1 Already authenticated"
    assert "AUTH" not in res.conn.ehlo_reply().to_bytes().decode()


def test_auth_cancelled_then_commands_resume() -> None:
    res = run(EHLO + b"AUTH PLAIN\r\n*\r\nNOOP\r\n", AUTH, tls_active=True)
    assert res.events[-2:] == [ev.AuthResponse("*"), ev.Noop()]
    assert res.codes == [220, 250, 334, 501, 250]
    assert not res.conn.authenticated


def test_failed_auth_ends_exchange() -> None:
    def fail(conn: ServerConnection, event: ev.Event) -> Reply | None:
        return R.AUTH_FAILED if isinstance(event, ev.AuthResponse) else accept_all(conn, event)

    res = run(EHLO + b"AUTH PLAIN\r\nAGZvbwBiYXI=\r\nMAIL FROM:<a@b.c>\r\n", AUTH,
              tls_active=True, policy=fail)
    assert res.codes == [220, 250, 334, 535, 250]


def test_overlong_auth_line_ends_exchange() -> None:
    settings = ServerSettings(auth_mechanisms=("PLAIN",), max_auth_line=100)
    res = run([EHLO + b"AUTH PLAIN\r\n" + b"A" * 150, b"A" * 50 + b"\r\nNOOP\r\n"], settings,
              tls_active=True)
    assert res.replies[-2:] == ["500 5.5.6 Authentication exchange line is too long",
                                "250 2.0.0 OK"]
    assert not res.conn.authenticated


@pytest.mark.parametrize(
    ("settings", "tls_active", "commands", "expected"),
    [
        (AUTH, False, EHLO + b"AUTH PLAIN\r\n", R.MUST_STARTTLS),
        (AUTH, True, EHLO + b"AUTH CRAM-MD5\r\n", R.UNKNOWN_AUTH_MECHANISM),
        (AUTH, True, b"AUTH PLAIN\r\n", R.NEED_EHLO),
        (AUTH, True, EHLO + b"MAIL FROM:<a@b.c>\r\nAUTH PLAIN\r\n", R.BAD_SEQUENCE),
        (AUTH, True, EHLO + b"AUTH\r\n", R.SYNTAX_ERROR),
        (AUTH, True, EHLO + b"AUTH PLAIN a b\r\n", R.SYNTAX_ERROR),
        (AUTH, True, EHLO + b"AUTH PLAIN a%b\r\n", R.SYNTAX_ERROR),
    ],
)
def test_auth_refusals(settings: ServerSettings, tls_active: bool, commands: bytes,
                       expected: Reply) -> None:
    res = run(commands, settings, tls_active=tls_active)
    assert res.events[-1] == ev.ProtocolError(expected)


def test_auth_succeeded_marks_session() -> None:
    conn = ServerConnection(AUTH, tls_active=True)
    conn.auth_succeeded()
    assert conn.authenticated
