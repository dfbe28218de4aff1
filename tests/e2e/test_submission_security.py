"""Submission security against the running a.test instance (issue 3): no AUTH before TLS,
no sending as someone else, brute force throttled, no relaying without AUTH on any port.

The brute-force test guesses from its own loopback source addresses (127.0.0.9, .10), so
the per-address lockout it causes never blocks the other tests, which connect from
127.0.0.1.
"""

from __future__ import annotations

import base64
import smtplib
import ssl
import time

from conftest import (
    AUTH_LOCKOUT,
    PASSWORD,
    MailPair,
    NamedSMTP_SSL,
    trusting,
    wait_until,
)

ALICE = "alice@a.test"


def plain(user: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def submissions(pair: MailPair, source: str = "127.0.0.1") -> NamedSMTP_SSL:
    a = pair.a
    return NamedSMTP_SSL(a.host, a.ports["submissions"], a.hostname, context=trusting(a.cert),
                         timeout=30, source_address=(source, 0))


def test_auth_before_starttls_on_587_is_refused_and_not_offered(mail_pair: MailPair) -> None:
    a = mail_pair.a
    with smtplib.SMTP(a.host, a.ports["submission"], timeout=20) as c:
        c.ehlo("client.test")
        assert c.has_extn("starttls") and not c.has_extn("auth")
        code, text = c.docmd("AUTH", plain(ALICE, PASSWORD))
        assert code in (530, 538), text  # RFC 4954 §4 / RFC 3207: encryption first
        assert text.startswith(b"5.7.")
        code, _ = c.docmd("MAIL", f"FROM:<{ALICE}>")
        assert code == 530
        c.starttls(context=unverified())
        c.ehlo("client.test")
        assert c.has_extn("auth")
        mechanisms = c.esmtp_features["auth"].split()
        assert {"SCRAM-SHA-256", "PLAIN", "LOGIN"} <= set(mechanisms)
        c.login(ALICE, PASSWORD)  # now it works


def test_mail_from_someone_elses_address_is_refused(mail_pair: MailPair) -> None:
    with submissions(mail_pair) as c:
        c.login(ALICE, PASSWORD)
        for other in ("carol@a.test", "bob@b.test", "postmaster@a.test"):
            code, text = c.mail(other)
            assert (code, text[:5]) == (550, b"5.7.1"), (other, text)
        code, _ = c.mail(ALICE)
        assert code == 250


def test_from_header_of_someone_else_is_refused(mail_pair: MailPair) -> None:
    msg = (b"From: Carol <carol@a.test>\r\nTo: bob@b.test\r\nSubject: forged-from\r\n\r\n"
           b"not from alice\r\n")
    with submissions(mail_pair) as c:
        c.login(ALICE, PASSWORD)
        assert c.mail(ALICE)[0] == 250
        assert c.rcpt("bob@b.test")[0] == 250
        code, text = c.data(msg)
        assert (code, text[:5]) == (550, b"5.7.1"), text
    assert "Subject: forged-from" not in mail_pair.a.log()


def test_twenty_wrong_passwords_lock_out_address_and_account(mail_pair: MailPair) -> None:
    victim = "victim@a.test"
    codes = []
    with submissions(mail_pair, source="127.0.0.9") as c:
        c.ehlo("guesser.test")
        for i in range(20):
            if i == 2:  # the failure that locks: the lockout starts after this moment
                locked_at = time.monotonic()
            code, text = c.docmd("AUTH", plain(victim, f"wrong guess {i}"))
            codes.append(code)
            if code == 454:
                assert text.startswith(b"4.7.0"), text
        # The right password does not help now: the address is locked ...
        assert c.docmd("AUTH", plain(victim, PASSWORD))[0] == 454
    # Three failures (auth_max_failures) are answered 535 (each one later than the last);
    # from then on every attempt is refused unverified.
    assert codes[:3] == [535, 535, 535] and set(codes[3:]) == {454}, codes
    # ... and so is the account, from an address that never failed.
    with submissions(mail_pair, source="127.0.0.10") as c:
        c.ehlo("elsewhere.test")
        assert c.docmd("AUTH", plain(victim, PASSWORD))[0] == 454
        assert c.docmd("AUTH", plain(ALICE, PASSWORD))[0] == 235  # others are unaffected
    assert time.monotonic() - locked_at < AUTH_LOCKOUT, "too slow to observe the lockout"

    def right_password_works() -> bool:
        with submissions(mail_pair, source="127.0.0.9") as c:
            c.ehlo("guesser.test")
            return c.docmd("AUTH", plain(victim, PASSWORD))[0] == 235

    wait_until(right_password_works, AUTH_LOCKOUT + 10, "the lockout to end", interval=0.5)
    assert time.monotonic() - locked_at >= AUTH_LOCKOUT  # not before it ran out


def test_unauthenticated_client_cannot_relay(mail_pair: MailPair) -> None:
    a = mail_pair.a
    # 587 after STARTTLS, no AUTH: submission needs authentication (RFC 6409 §4.3).
    with smtplib.SMTP(a.host, a.ports["submission"], timeout=20) as c:
        c.starttls(context=unverified())
        c.ehlo("client.test")
        code, text = c.mail(ALICE)
        assert (code, text[:5]) == (530, b"5.7.0"), text
        code, _ = c.rcpt("bob@b.test")
        assert code == 503  # no transaction was opened
    # 465 likewise.
    with submissions(mail_pair) as c:
        c.ehlo("client.test")
        assert c.mail(ALICE)[0] == 530
    # 25: mail for a.test is welcome, mail for elsewhere is not ours to relay.
    with smtplib.SMTP(a.host, a.smtp, timeout=20) as c:
        c.ehlo("client.test")
        assert c.mail("someone@elsewhere.test")[0] == 250
        code, text = c.rcpt("bob@b.test")
        assert (code, text[:5]) == (550, b"5.7.1"), text
        assert c.rcpt(ALICE)[0] == 250
        c.rset()
