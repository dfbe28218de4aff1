"""Inbound SMTP end to end: real clients on loopback, messages checked byte for byte on disk."""

from __future__ import annotations

import shutil
import smtplib
import socket
import ssl
import subprocess

import pytest
from conftest import body_of

MSG = (
    b"From: Carol <carol@remote.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <1@remote.test>\r\n"
    b"\r\n"
    b"First line\r\n"
    b".leading dot is kept\r\n"
    b"..two dots\r\n"
    b"\r\n"
    b"last line\r\n"
)


def test_smtplib_plain_message_is_stored_byte_exact_and_indexed(make_server):
    srv = make_server()
    with smtplib.SMTP(srv.host, srv.smtp, timeout=10) as c:
        c.ehlo("client.remote.test")
        refused = c.sendmail("carol@remote.test", ["alice@example.test"], MSG)
        assert refused == {}
    stored = srv.messages("alice@example.test")
    assert len(stored) == 1
    assert body_of(stored[0]) == MSG
    assert stored[0].startswith(b"Return-Path: <carol@remote.test>\r\nDelivered-To: alice@example.test\r\n")
    assert b"Received: from client.remote.test" in stored[0]
    rows = srv.index_rows("alice@example.test")
    assert [r[0] for r in rows] == [1]
    assert rows[0][2] == len(stored[0])


def test_one_message_for_two_local_recipients_is_stored_for_each(make_server):
    srv = make_server()
    with smtplib.SMTP(srv.host, srv.smtp, timeout=10) as c:
        c.sendmail("carol@remote.test", ["alice@example.test", "bob@example.test"], MSG)
    for user in ("alice@example.test", "bob@example.test"):
        [stored] = srv.messages(user)
        assert body_of(stored) == MSG
        assert f"Delivered-To: {user}\r\n".encode() in stored


def test_starttls_with_verified_certificate_records_tls_in_received(make_server):
    srv = make_server()
    ctx = ssl.create_default_context(cafile=str(srv.cert))
    ctx.check_hostname = False  # the self-signed certificate names mx.test, we dial 127.0.0.1
    with smtplib.SMTP(srv.host, srv.smtp, timeout=10) as c:
        c.ehlo("client.remote.test")
        assert c.has_extn("starttls")
        c.starttls(context=ctx)
        c.ehlo("client.remote.test")
        assert not c.has_extn("starttls")
        c.sendmail("carol@remote.test", ["alice@example.test"], MSG)
    [stored] = srv.messages("alice@example.test")
    assert body_of(stored) == MSG
    assert b"with ESMTPS" in stored
    assert b"TLSv1.3" in stored or b"TLSv1.2" in stored


def test_smtputf8_recipient_and_sender(make_server):
    srv = make_server(users=("alice@example.test", "用户@example.test"))
    msg = "From: Jörg <jörg@bücher.test>\r\nTo: 用户@example.test\r\nSubject: Grüße\r\n\r\nHallo ✓\r\n".encode()
    with smtplib.SMTP(srv.host, srv.smtp, timeout=10) as c:
        c.ehlo("client.remote.test")
        assert c.has_extn("smtputf8")
        c.sendmail("jörg@bücher.test", ["用户@example.test"], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    [stored] = srv.messages("用户@example.test")
    assert body_of(stored) == msg
    assert b"with UTF8SMTP" in stored


def test_non_ascii_address_without_smtputf8_is_refused(make_server):
    srv = make_server()
    out = _raw(srv, "EHLO c\r\nMAIL FROM:<jörg@bücher.test>\r\n".encode(), wait_for=2)
    assert out.splitlines()[-1].startswith(b"553 5.6.7")


def _raw(srv, lines: bytes, wait_for: int = 1, tls: bool = False) -> bytes:
    """Send raw bytes after the greeting; read until `wait_for` more final replies came."""
    with socket.create_connection((srv.host, srv.smtp), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 ")
        s.sendall(lines)
        out = b""
        finals = 0
        while finals < wait_for:
            line = f.readline()
            if not line:
                break
            out += line
            if len(line) >= 4 and line[3:4] == b" ":
                finals += 1
        return out


def test_bdat_chunks_are_stored_exactly(make_server):
    srv = make_server()
    part1 = b"From: x@remote.test\r\nSubject: bdat\r\n\r\nbody with\r\n.\r\n"
    part2 = b"a dot line inside and binary-ish \x01\x02 bytes\r\n"
    cmds = (b"EHLO c.remote.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
            + b"BDAT %d\r\n" % len(part1) + part1 + b"BDAT %d LAST\r\n" % len(part2) + part2 + b"QUIT\r\n")
    out = _raw(srv, cmds, wait_for=6)
    assert b"250 2.0.0 Ok: queued as" in out, out
    [stored] = srv.messages("alice@example.test")
    assert body_of(stored) == part1 + part2


def test_unknown_user_is_550_511_and_foreign_domain_is_relay_denied(make_server):
    srv = make_server()
    out = _raw(srv, b"EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<nobody@example.test>\r\n"
                    b"RCPT TO:<victim@elsewhere.test>\r\nQUIT\r\n", wait_for=5)
    assert b"550 5.1.1" in out
    assert b"550 5.7.1" in out


def test_alias_catchall_and_subaddress_deliver_to_the_account(make_server):
    srv = make_server(start=False)
    srv.cli("alias", "add", "sales@example.test", "alice@example.test", "bob@example.test")
    srv.cli("alias", "add", "@example.test", "bob@example.test")
    srv.start()
    with smtplib.SMTP(srv.host, srv.smtp, timeout=10) as c:
        c.sendmail("x@remote.test", ["sales@example.test"], b"Subject: a\r\n\r\n1\r\n")
        c.sendmail("x@remote.test", ["alice+news@example.test"], b"Subject: b\r\n\r\n2\r\n")
        c.sendmail("x@remote.test", ["whoever@example.test"], b"Subject: c\r\n\r\n3\r\n")
    alice = [body_of(m) for m in srv.messages("alice@example.test")]
    bob = [body_of(m) for m in srv.messages("bob@example.test")]
    assert sorted(alice) == sorted([b"Subject: a\r\n\r\n1\r\n", b"Subject: b\r\n\r\n2\r\n"])
    assert sorted(bob) == sorted([b"Subject: a\r\n\r\n1\r\n", b"Subject: c\r\n\r\n3\r\n"])


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks not installed")
def test_swaks_plain_and_starttls(make_server):
    srv = make_server()
    for extra in ([], ["--tls"]):
        r = subprocess.run(
            ["swaks", "--to", "alice@example.test", "--from", "x@remote.test", "--server",
             f"{srv.host}:{srv.smtp}", "--header", "Subject: swaks test", "--body", "hi from swaks",
             "--timeout", "10", *extra],
            capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    stored = srv.messages("alice@example.test")
    assert len(stored) == 2
    assert all(b"hi from swaks" in m and b"Subject: swaks test" in m for m in stored)
    assert sum(b"with ESMTPS" in m for m in stored) == 1


@pytest.mark.skipif(not shutil.which("smtp-source"), reason="postfix smtp-source not installed")
def test_smtp_source_many_sessions_every_message_arrives(make_server):
    srv = make_server()
    r = subprocess.run(
        ["smtp-source", "-s", "5", "-m", "100", "-l", "2048", "-f", "x@remote.test",
         "-t", "alice@example.test", f"{srv.host}:{srv.smtp}"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    stored = srv.messages("alice@example.test")
    assert len(stored) == 100
    rows = srv.index_rows("alice@example.test")
    assert [u for u, _, _ in rows] == list(range(1, 101))
    names = {p.split(":")[0] for p in (x.name for x in (srv.maildir("alice@example.test") / "new").iterdir())}
    assert {f.split(":")[0] for _, f, _ in rows} == names


def test_check_config_names_a_bad_key(make_server, tmp_path):
    srv = make_server(start=False)
    srv.config.write_text(srv.config.read_text() + "\n[limits2]\nx = 1\n")
    r = srv.cli("check-config", check=False)
    assert r.returncode == 2
    assert "limits2" in r.stderr
    srv.config.write_text(srv.config.read_text().replace("[limits2]\nx = 1\n", "")
                          .replace("[limits]", "[limits]\nmax_recipients = \"many\""))
    r = srv.cli("check-config", check=False)
    assert r.returncode == 2 and "max_recipients" in r.stderr
