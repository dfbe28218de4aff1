"""Hostile input against a real server: smuggling, STARTTLS injection, floods, limits."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from conftest import body_of

SMUGGLE_VARIANTS = [
    b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r", b"\r\n.\r",
]


def _session(srv, payload: bytes, replies: int, timeout: float = 10) -> bytes:
    with socket.create_connection((srv.host, srv.smtp), timeout=timeout) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 ")
        s.sendall(payload)
        out = b""
        finals = 0
        while finals < replies:
            line = f.readline()
            if not line:
                break
            out += line
            if line[3:4] == b" ":
                finals += 1
        return out


def _smuggle_payload(variant: bytes) -> bytes:
    smuggled = (b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nevil\r\n")
    return (b"EHLO c.remote.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
            b"DATA\r\nSubject: legit\r\n\r\nhello" + variant + smuggled + b"\r\n.\r\nQUIT\r\n")


@pytest.mark.parametrize("variant", SMUGGLE_VARIANTS, ids=repr)
def test_smuggling_variant_is_rejected_by_default_and_nothing_is_smuggled(make_server, variant):
    srv = make_server()
    out = _session(srv, _smuggle_payload(variant), replies=6)
    assert b"554 5.6.0" in out, out
    assert srv.messages("alice@example.test") == []
    assert srv.messages("bob@example.test") == []


@pytest.mark.parametrize("variant", SMUGGLE_VARIANTS, ids=repr)
def test_smuggling_variant_when_bare_endings_allowed_stores_exactly_one(make_server, variant):
    srv = make_server(limits={"reject_bare_line_endings": False})
    out = _session(srv, _smuggle_payload(variant), replies=6)
    assert b"250 2.0.0 Ok" in out, out
    [stored] = srv.messages("alice@example.test")
    assert b"Subject: smuggled" in body_of(stored)  # part of the one message, not a second one
    assert srv.messages("bob@example.test") == []


def test_starttls_discards_pipelined_plaintext_command(make_server):
    srv = make_server()
    with socket.create_connection((srv.host, srv.smtp), timeout=10) as raw:
        f = raw.makefile("rb")
        assert f.readline().startswith(b"220")
        raw.sendall(b"EHLO c\r\n")
        while f.readline()[3:4] != b" ":
            pass
        # The injected MAIL FROM must not be executed after the handshake (CVE-2011-0411).
        raw.sendall(b"STARTTLS\r\nMAIL FROM:<injected@remote.test>\r\n")
        assert f.readline().startswith(b"220 ")
        ctx = ssl.create_default_context(cafile=str(srv.cert))
        ctx.check_hostname = False
        with ctx.wrap_socket(raw, server_hostname="mx.test") as tls:
            tf = tls.makefile("rb")
            tls.sendall(b"EHLO c\r\n")
            while tf.readline()[3:4] != b" ":
                pass
            tls.sendall(b"RCPT TO:<alice@example.test>\r\n")
            assert tf.readline().startswith(b"503 5.5.1"), "injected MAIL FROM was executed"


def test_overlong_command_line_gets_500_and_session_stays_in_sync(make_server):
    srv = make_server()
    out = _session(srv, b"EHLO c\r\nNOOP " + b"x" * 5000 + b"\r\nNOOP\r\nQUIT\r\n", replies=4)
    lines = [ln for ln in out.split(b"\r\n") if ln[3:4] == b" "]
    assert lines[1].startswith(b"500 5.5.2")
    assert lines[2].startswith(b"250")
    assert lines[3].startswith(b"221")


def test_overlong_text_line_rejects_message(make_server):
    srv = make_server()
    body = b"Subject: long\r\n\r\n" + b"y" * 2000 + b"\r\n"
    out = _session(srv, b"EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                   + body + b".\r\nQUIT\r\n", replies=6)
    assert b"500 5.5.6" in out
    assert srv.messages("alice@example.test") == []


def test_message_over_size_is_refused_at_mail_and_while_streaming(make_server):
    srv = make_server(limits={"max_message_size": 10000})
    out = _session(srv, b"EHLO c\r\nMAIL FROM:<x@remote.test> SIZE=20000\r\nQUIT\r\n", replies=3)
    assert b"SIZE 10000" in out
    assert b"552 5.3.4" in out
    body = b"Subject: big\r\n\r\n" + (b"z" * 98 + b"\r\n") * 200
    out = _session(srv, b"EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                   + body + b".\r\nQUIT\r\n", replies=6)
    assert b"552 5.3.4" in out
    assert srv.messages("alice@example.test") == []


def test_101st_recipient_gets_452(make_server):
    srv = make_server()
    rcpts = b"".join(b"RCPT TO:<alice+%d@example.test>\r\n" % i for i in range(101))
    out = _session(srv, b"EHLO c\r\nMAIL FROM:<x@remote.test>\r\n" + rcpts + b"QUIT\r\n", replies=104)
    finals = [ln for ln in out.split(b"\r\n") if ln[3:4] == b" "]
    assert sum(ln.startswith(b"250 2.1.5") for ln in finals) == 100
    assert finals[102].startswith(b"452 4.5.3")


def test_idle_client_is_dropped_at_timeout(make_server):
    srv = make_server(limits={"command_timeout": 1.0})
    with socket.create_connection((srv.host, srv.smtp), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220")
        t0 = time.monotonic()
        assert f.readline().startswith(b"421 4.4.2")
        assert f.readline() == b""  # closed
        assert time.monotonic() - t0 < 5


def test_connection_flood_beyond_per_ip_limit_gets_421(make_server):
    srv = make_server(limits={"max_connections_per_ip": 5})
    socks = []
    try:
        for _ in range(5):
            s = socket.create_connection((srv.host, srv.smtp), timeout=10)
            assert s.makefile("rb").readline().startswith(b"220")
            socks.append(s)
        extra = socket.create_connection((srv.host, srv.smtp), timeout=10)
        socks.append(extra)
        assert extra.makefile("rb").readline().startswith(b"421 4.7.0")
    finally:
        for s in socks:
            s.close()
    # once they are gone the client is welcome again
    time.sleep(0.3)
    with socket.create_connection((srv.host, srv.smtp), timeout=10) as s:
        assert s.makefile("rb").readline().startswith(b"220 ")


def test_client_talking_before_greeting_is_refused(make_server):
    srv = make_server(limits={"greeting_delay": 0.5})
    with socket.create_connection((srv.host, srv.smtp), timeout=10) as s:
        s.sendall(b"EHLO eager\r\n")
        f = s.makefile("rb")
        data = f.read()
    assert b"554 5.5.0" in data
    assert b"250" not in data


def test_too_many_errors_closes_with_421(make_server):
    srv = make_server()
    out = _session(srv, b"BOGUS\r\n" * 30, replies=30)
    assert b"421 4.7.0" in out
    assert out.count(b"500 5.5.1") == 10


def test_garbage_bytes_get_replies_not_a_crash(make_server):
    srv = make_server()
    out = _session(srv, b"\x00\xff\xfe\r\nMAIL FROM:<\x00@x>\r\nEHLO \xc3\x28\r\nQUIT\r\n", replies=4)
    assert out.count(b"\r\n") >= 4
    assert b"221" in out
    out = _session(srv, b"EHLO ok\r\nQUIT\r\n", replies=2)
    assert b"221" in out  # still serving


def test_connections_beyond_the_total_limit_get_421(make_server):
    srv = make_server(limits={"max_connections": 3})
    socks = []
    try:
        for _ in range(3):
            s = socket.create_connection((srv.host, srv.smtp), timeout=10)
            assert s.makefile("rb").readline().startswith(b"220")
            socks.append(s)
        extra = socket.create_connection((srv.host, srv.smtp), timeout=10)
        socks.append(extra)
        assert extra.makefile("rb").readline().startswith(b"421 4.7.0 Too many connections")
    finally:
        for s in socks:
            s.close()


def test_tls_below_1_2_is_refused(make_server):
    srv = make_server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection((srv.host, srv.smtp), timeout=10) as raw:
        f = raw.makefile("rb")
        f.readline()
        raw.sendall(b"EHLO c\r\nSTARTTLS\r\n")
        while f.readline()[3:4] != b" ":
            pass
        assert f.readline().startswith(b"220")
        with pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(raw, server_hostname="mx.test")
