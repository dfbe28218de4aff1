"""Outbound features the two-instance suite does not reach: smart host with AUTH, delay
warnings, and hiding the submitter's address."""

from __future__ import annotations

import email
import email.policy
import smtplib
import ssl
import time

from conftest import wait_until

FAST = {"minimal_backoff": 1.0, "maximal_backoff": 1.0, "poll_interval": 0.3}


def _submit(srv, msg: bytes, rcpts: list[str], user: str = "alice@example.test") -> None:
    ctx = ssl.create_default_context(cafile=str(srv.cert))
    ctx.check_hostname = False
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30) as c:
        c.starttls(context=ctx)
        c.login(user, "correct horse battery")
        c.sendmail(user, rcpts, msg)


def test_smarthost_relays_everything_with_auth_over_tls(make_server):
    relay = make_server("relay", kinds=("smtp", "submission"), domains=("b.test",),
                        users=("bob@b.test", "relay@b.test"),
                        sections={"submission": {"sender_policy": "any"}})
    origin = make_server("origin", kinds=("smtp", "submission"), sections={
        "queue": FAST,
        "delivery": {"smarthost": f"127.0.0.1:{relay.ports['submission']}",
                     "smarthost_user": "relay@b.test",
                     "smarthost_password": "correct horse battery"}})
    marker = f"smarthost-{time.time_ns()}".encode()
    _submit(origin, b"From: alice@example.test\r\nTo: bob@b.test\r\nSubject: " + marker
            + b"\r\n\r\nvia the smart host\r\n", ["bob@b.test"])
    wait_until(lambda: [m for m in relay.messages("bob@b.test") if marker in m], 30,
               "message relayed through the smart host")
    [stored] = [m for m in relay.messages("bob@b.test") if marker in m]
    assert b"with ESMTPSA" in stored  # it came in over TLS, authenticated
    assert "relay@b.test" in relay.log()


def test_delay_warning_reaches_the_sender_once(make_server):
    srv = make_server(kinds=("smtp", "submission"), sections={
        "queue": {**FAST, "delay_warning_after": 1.0}})
    marker = f"delayed-{time.time_ns()}".encode()
    _submit(srv, b"From: alice@example.test\r\nTo: x@unreachable.test\r\nSubject: " + marker
            + b"\r\n\r\nwaiting\r\n", ["x@unreachable.test"])

    def warning() -> list[bytes]:
        return [m for m in srv.messages("alice@example.test") if b"delivery-status" in m]

    [report] = wait_until(warning, 30, "delay warning")
    msg = email.message_from_bytes(report, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    status = msg.get_payload()[1].as_string()
    assert "Action: delayed" in status and "x@unreachable.test" in status
    time.sleep(3)  # more retries happen; still a single warning
    assert len(warning()) == 1
    listing = srv.cli("queue", "list").stdout
    assert "x@unreachable.test" in listing  # still queued, not bounced


def test_hide_client_ip_leaves_the_submitter_address_out(make_server):
    srv = make_server(kinds=("smtp", "submission"),
                      sections={"submission": {"hide_client_ip": True}})
    _submit(srv, b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hidden\r\n\r\nx\r\n",
            ["bob@example.test"])
    [stored] = srv.messages("bob@example.test")
    received = stored.split(b"Received:", 1)[1].split(b";", 1)[0]
    assert b"127.0.0.1" not in received, received
