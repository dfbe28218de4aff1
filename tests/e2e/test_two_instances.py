"""Sending mail between two Kittiwake servers (issue 3): a.test on 127.0.0.2:25 and b.test on
127.0.0.3:25, MX records served by a real NSD, real clients submitting to a.test.

alice@a.test submits with swaks (STARTTLS + AUTH PLAIN on the 587-kind listener), Python's
smtplib (implicit TLS, RFC 8314), curl and msmtp (SCRAM-SHA-256 through GNU SASL); a.test
queues, looks up b.test's MX and delivers; bob finds the message in his Maildir with the body
byte for byte. Failures come back to alice as RFC 3464 reports; the RFC 3461 DSN parameters
travel from a.test to b.test.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import subprocess
from email.message import EmailMessage, Message
from pathlib import Path

import pytest
from conftest import PASSWORD, MailPair, Server, submit, wait_mail, wait_until, with_marker

ALICE, BOB, CAROL = "alice@a.test", "bob@b.test", "carol@a.test"
# What a body must survive: leading dots (RFC 5321 §4.5.2 transparency), an empty line, a
# trailing space, 8-bit UTF-8 (RFC 6152), a long line, no final surprise.
BODY = (b"Line one\r\n.leading dot\r\n..two dots\r\n.\r\n\r\ntrailing space \r\n"
        + "Grüße aus a.test ✓\r\n".encode() + b"y" * 900 + b"\r\nlast line\r\n")


def message(marker: str, *, to: str = BOB, ids: bool = True) -> bytes:
    """From alice, Subject `marker` (what tests look for), body BODY."""
    head = (f"From: Alice <{ALICE}>\r\nTo: <{to}>\r\nSubject: {marker}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n")
    if ids:
        head += f"Message-ID: <{marker}@a.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    return head.encode() + b"\r\n" + BODY


def body(stored: bytes) -> bytes:
    return stored.split(b"\r\n\r\n", 1)[1]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install {tool})")
    return path


def run(cmd: list[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{cmd[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


# --- RFC 3464 reports ---------------------------------------------------------------------

def report(raw: bytes) -> tuple[EmailMessage, list[Message], Message]:
    """A DSN parsed with the stdlib: (the report, its delivery-status blocks, returned part).

    RFC 6522 §3: multipart/report; report-type=delivery-status; a human part, then a
    message/delivery-status part (RFC 3464 §2: per-message block, then per-recipient blocks),
    then the returned message or its header.
    """
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg.get_content_type() == "multipart/report", msg["Content-Type"]
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert len(parts) == 3, [p.get_content_type() for p in parts]
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list) and len(blocks) >= 2
    return msg, blocks, parts[2]


def bounces(srv: Server, address: str, marker: bytes) -> list[bytes]:
    return [m for m in with_marker(srv.messages(address), marker) if b"multipart/report" in m]


def wait_report(srv: Server, address: str, marker: bytes, timeout: float = 20.0) -> bytes:
    def found() -> list[bytes]:
        return bounces(srv, address, marker)

    try:
        reports = wait_until(found, timeout, f"a report about {marker!r}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- log ---\n{srv.log()[-4000:]}") from None
    assert isinstance(reports, list) and len(reports) == 1, reports
    return bytes(reports[0])


# --- four clients, one path -----------------------------------------------------------------

def test_swaks_starttls_auth_plain_on_587_reaches_bob(mail_pair: MailPair, tmp_path: Path
                                                      ) -> None:
    need("swaks")
    a, b = mail_pair.a, mail_pair.b
    data = tmp_path / "msg.eml"
    # swaks ends DATA with CRLF "." CRLF after the file's last line, so the file's own
    # final CRLF is left out (else the message would grow an empty line).
    data.write_bytes(message("via-swaks").removesuffix(b"\r\n"))
    r = run(["swaks", "--server", a.host, "--port", str(a.ports["submission"]), "--tls",
             "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", PASSWORD,
             "--from", ALICE, "--to", BOB, "--data", f"@{data}", "--timeout", "20"])
    assert "<~  235 2.7.0" in r.stdout and "<~  250 2.0.0 Ok: queued as" in r.stdout
    [stored] = wait_mail(b, BOB, b"Subject: via-swaks")
    assert body(stored) == BODY
    assert b"Return-Path: <alice@a.test>" in stored
    assert re.search(rb"\sby mx\.a\.test with ESMTPSA ", stored), stored[:1500]


def test_smtplib_over_implicit_tls_465_reaches_bob(mail_pair: MailPair) -> None:
    a, b = mail_pair.a, mail_pair.b
    submit(a, message("via-smtplib"), [BOB])
    [stored] = wait_mail(b, BOB, b"Subject: via-smtplib")
    assert body(stored) == BODY
    # a.test → b.test went over opportunistic STARTTLS: b.test's Received says ESMTPS.
    assert re.search(rb"\sby mx\.b\.test with ESMTPS ", stored), stored[:1500]


def test_curl_smtp_reaches_bob_and_gets_message_id_and_date(mail_pair: MailPair,
                                                            tmp_path: Path) -> None:
    need("curl")
    a, b = mail_pair.a, mail_pair.b
    port = a.ports["submission"]
    upload = tmp_path / "msg.eml"
    upload.write_bytes(message("via-curl", ids=False))  # RFC 6409 §8: the MSA adds them
    run(["curl", "--silent", "--show-error", "--ssl-reqd", "--max-time", "30",
         "--url", f"smtp://{a.hostname}:{port}", "--resolve", f"{a.hostname}:{port}:{a.host}",
         "--cacert", str(a.cert), "--user", f"{ALICE}:{PASSWORD}",
         "--mail-from", ALICE, "--mail-rcpt", BOB, "-T", str(upload)])
    [stored] = wait_mail(b, BOB, b"Subject: via-curl")
    assert body(stored) == BODY
    assert re.search(rb"\r\nMessage-ID: <[^>]+@mx\.a\.test>\r\n", stored), stored[:1500]
    assert b"\r\nDate: " in stored


def test_msmtp_authenticates_with_scram_sha_256(mail_pair: MailPair, tmp_path: Path) -> None:
    need("msmtp")
    a, b = mail_pair.a, mail_pair.b
    rc = tmp_path / "msmtprc"
    rc.write_text("\n".join([
        "account kittiwake", f"host {a.host}", f"port {a.ports['submission']}",
        "tls on", "tls_starttls on", f"tls_trust_file {a.cert}",
        f"tls_host_override {a.hostname}",  # the certificate names mx.a.test, not the address
        "auth scram-sha-256", f"user {ALICE}", f"password {PASSWORD}", f"from {ALICE}",
        f"logfile {tmp_path / 'msmtp.log'}", "account default : kittiwake", ""]))
    os.chmod(rc, 0o600)  # msmtp refuses a world-readable file holding a password
    r = run(["msmtp", "--file", str(rc), "--debug", BOB], input=message("via-msmtp").decode())
    assert "AUTH SCRAM-SHA-256" in r.stdout + r.stderr
    [stored] = wait_mail(b, BOB, b"Subject: via-msmtp")
    assert body(stored) == BODY
    assert "user=alice@a.test" in a.log()


# --- failures come back as RFC 3464 reports ---------------------------------------------------

def test_unknown_user_at_b_comes_back_to_alice_as_a_report(mail_pair: MailPair) -> None:
    a = mail_pair.a
    queue_id = submit(a, message("to-nobody", to="nobody@b.test"), ["nobody@b.test"])
    raw = wait_report(a, ALICE, b"Subject: to-nobody")
    msg, blocks, returned = report(raw)
    assert msg["To"] == ALICE and msg["From"].addresses[0].username == "MAILER-DAEMON"
    assert blocks[0]["Reporting-MTA"] == "dns; mx.a.test"
    rcpt = blocks[1]
    assert rcpt["Final-Recipient"] == "rfc822; nobody@b.test"
    assert rcpt["Action"] == "failed" and rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; mx.b.test"
    assert rcpt["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    # Without RET the whole message goes back (RFC 3461 §4.3 leaves it to us; Postfix too).
    assert returned.get_content_type() == "message/rfc822"
    assert b"\r\n\r\n" + BODY in raw
    assert raw.startswith(b"Return-Path: <>")  # RFC 3461 §6.2: a DSN has the null sender
    assert f"queue_id={queue_id}" in a.log()


def test_null_mx_domain_bounces_at_once(mail_pair: MailPair) -> None:
    a = mail_pair.a
    queue_id = submit(a, message("to-null-mx", to="someone@null.test"), ["someone@null.test"])
    raw = wait_report(a, ALICE, b"Subject: to-null-mx")
    _, blocks, _ = report(raw)
    # RFC 7505 §4.2: 556 5.1.10, and no retry: the first attempt was the only one.
    assert blocks[1]["Status"] == "5.1.10" and blocks[1]["Action"] == "failed"
    assert "556 5.1.10" in blocks[1]["Diagnostic-Code"]
    attempts = re.findall(rf"event=attempt queue_id={queue_id} .*", a.log())
    assert len(attempts) == 1 and "result=permanent" in attempts[0], attempts


# --- kittiwake sendmail --------------------------------------------------------------------

def test_sendmail_queues_for_a_remote_and_a_local_recipient(mail_pair: MailPair) -> None:
    a, b = mail_pair.a, mail_pair.b
    text = ("To: Bob <bob@b.test>\nCc: carol@a.test\nBcc: bob@b.test\nSubject: via-sendmail\n\n"
            "from cron\n.\nthe line above is a lone dot (-i keeps it)\n")
    a.cli("sendmail", "-t", "-i", "-f", ALICE, input=text)
    for srv, who in ((b, BOB), (a, CAROL)):
        [stored] = wait_mail(srv, who, b"Subject: via-sendmail")
        assert body(stored) == b"from cron\r\n.\r\nthe line above is a lone dot (-i keeps it)\r\n"
        assert stored.startswith(b"Return-Path: <alice@a.test>")
        assert b"\r\nBcc:" not in stored  # RFC 5322 §3.6.3
        assert b"\r\nMessage-ID: <" in stored and b"\r\nFrom: " in stored


# --- RFC 3461 DSN parameters between the instances ----------------------------------------------

ENVID = "kw+dsn=1"  # xtext on the wire: kw+2Bdsn+3D1 (RFC 3461 §4)


def test_dsn_parameters_reach_b_which_reports_the_delivery(mail_pair: MailPair) -> None:
    """NOTIFY=SUCCESS (RFC 3461 §4.1): b.test delivers and sends the "delivered" report
    itself, carrying the ENVID and ORCPT it got from a.test (RFC 3464 §2.2.1, §2.3.1)."""
    a, b = mail_pair.a, mail_pair.b
    submit(a, message("dsn-success"), [BOB], mail_options=("RET=HDRS", "ENVID=kw+2Bdsn+3D1"),
           rcpt_options=("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob+2Borig@b.test"))
    wait_mail(b, BOB, b"Subject: dsn-success")
    raw = wait_report(a, ALICE, b"Subject: dsn-success")
    _, blocks, returned = report(raw)
    assert blocks[0]["Reporting-MTA"] == "dns; mx.b.test"  # b.test, not a.test, reports
    assert blocks[0]["Original-Envelope-Id"] == ENVID
    rcpt = blocks[1]
    assert rcpt["Original-Recipient"] == "rfc822; bob+orig@b.test"
    assert rcpt["Final-Recipient"] == "rfc822; bob@b.test"
    assert rcpt["Action"] == "delivered" and rcpt["Status"].startswith("2.")
    assert returned.get_content_type() == "text/rfc822-headers"


def test_dsn_parameters_reach_b_which_bounces_with_them(mail_pair: MailPair) -> None:
    """fwd@b.test forwards to a null-MX domain, so b.test itself bounces: its report has
    a.test's ENVID and ORCPT, and only the header back because of RET=HDRS."""
    a = mail_pair.a
    submit(a, message("dsn-failure", to="fwd@b.test"), ["fwd@b.test"],
           mail_options=("RET=HDRS", "ENVID=kw+2Bdsn+3D1"),
           rcpt_options=("NOTIFY=FAILURE", "ORCPT=rfc822;fwd+2Borig@b.test"))
    raw = wait_report(a, ALICE, b"Subject: dsn-failure")
    _, blocks, returned = report(raw)
    assert blocks[0]["Reporting-MTA"] == "dns; mx.b.test"
    assert blocks[0]["Original-Envelope-Id"] == ENVID
    rcpt = blocks[1]
    assert rcpt["Original-Recipient"] == "rfc822; fwd+orig@b.test"
    assert rcpt["Final-Recipient"] == "rfc822; nobody@null.test"
    assert rcpt["Action"] == "failed" and rcpt["Status"] == "5.1.10"
    assert returned.get_content_type() == "text/rfc822-headers"  # RET=HDRS
    assert BODY[:20] not in raw


def test_notify_never_suppresses_the_bounce(mail_pair: MailPair) -> None:
    a = mail_pair.a
    queue_id = submit(a, message("notify-never", to="nobody@b.test"), ["nobody@b.test"],
                      rcpt_options=("NOTIFY=NEVER",))
    # Once the message has left the queue nothing can be owed for it any more.
    wait_until(lambda: f"event=removed queue_id={queue_id}" in a.log(), 20,
               f"{queue_id} to leave the queue")
    assert re.search(rf"event=attempt queue_id={queue_id} to=<nobody@b\.test> "
                     r"result=permanent", a.log())
    assert f"event=dsn queue_id={queue_id}" not in a.log()
    assert not bounces(a, ALICE, b"Subject: notify-never")
