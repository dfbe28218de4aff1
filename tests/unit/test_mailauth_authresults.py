"""Authentication-Results (RFC 8601): the field we write, and removal of forged ones."""

from __future__ import annotations

import pytest

from kittiwake.mailauth.arc import ArcOutcome, ArcResult
from kittiwake.mailauth.authresults import (
    authentication_results,
    authserv_id,
    parse,
    remove_forged,
)
from kittiwake.mailauth.dkim import DkimResult, DkimStatus
from kittiwake.mailauth.dmarc import DmarcOutcome, DmarcResult, Policy, parse_record
from kittiwake.mailauth.spf import SpfOutcome, SpfResult

SPF = SpfOutcome(SpfResult.PASS, "mailfrom", "a.test", "alice@a.test", "192.0.2.1",
                 "mail.a.test")
DKIM = [DkimResult("a.test", "rsa1", "rsa-sha256", DkimStatus.PASS, header_b="AbC+/12x"),
        DkimResult("a.test", "ed1", "ed25519-sha256", DkimStatus.FAIL,
                   "body hash did not verify", header_b="ZZZZ9999")]
DMARC = DmarcOutcome(DmarcResult.PASS, "a.test", "a.test", Policy.REJECT, Policy.NONE,
                     parse_record("v=DMARC1; p=reject"), "a.test", True, True)
ARC = ArcOutcome(ArcResult.PASS, 2, sealers=("lists.test", "fwd.test"))


def field() -> str:
    return authentication_results("MX.B.Test", spf=SPF, dkim=DKIM, dmarc=DMARC,
                                  arc=ARC).decode()


def test_one_field_with_every_result() -> None:
    text = field()
    assert text.startswith("Authentication-Results: mx.b.test;\r\n\tspf=pass ")
    assert text.endswith("\r\n") and text.count("Authentication-Results") == 1
    assert "smtp.mailfrom=alice@a.test" in text
    assert "dkim=pass header.d=a.test header.s=rsa1 header.a=rsa-sha256" in text
    assert 'dkim=fail reason="body hash did not verify" header.d=a.test header.s=ed1' in text
    assert "dmarc=pass (p=reject dis=none) header.from=a.test" in text
    assert "arc=pass (i=2 d=lists.test)" in text


def test_field_parses_back_with_authres() -> None:
    header = parse(field())
    assert header.authserv_id == "mx.b.test"
    assert [(r.method, r.result) for r in header.results] == [
        ("spf", "pass"), ("dkim", "pass"), ("dkim", "fail"), ("dmarc", "pass"), ("arc", "pass")]
    dkim_pass = header.results[1]
    props = {(p.type, p.name): p.value for p in dkim_pass.properties}
    assert props[("header", "b")] == "AbC+/12x"  # RFC 6008 header.b, quoted as needed
    assert props[("header", "d")] == "a.test"


def test_unsigned_message_says_dkim_none() -> None:
    text = authentication_results("mx.b.test", spf=SPF, dmarc=DMARC).decode()
    assert "dkim=none" in text


def test_nothing_checked_is_none() -> None:
    assert authentication_results("mx.b.test") == b"Authentication-Results: mx.b.test; none\r\n"


def test_null_sender_uses_smtp_helo() -> None:
    helo = SpfOutcome(SpfResult.NONE, "helo", "mail.a.test", "postmaster@mail.a.test",
                      "192.0.2.1", "mail.a.test")
    assert "spf=none smtp.helo=mail.a.test" in authentication_results(
        "mx", spf=helo).decode()


def test_hostile_values_cannot_inject_lines_or_comments() -> None:
    evil = [DkimResult("a.test\r\nX-Injected: 1", "s)(", "rsa-sha256", DkimStatus.FAIL,
                       "bad)\r\nX-Also: 2", header_b="b")]
    spf = SpfOutcome(SpfResult.PERMERROR, "mailfrom", "x.test", "a b;c@x.test", "192.0.2.1",
                     "h", explanation="oops) (\r\nX-Three: 3")
    text = authentication_results("mx", spf=spf, dkim=evil).decode()
    assert "\r\nX-" not in text
    assert "smtp.mailfrom=x.test" in text  # an unsafe address falls back to its domain
    assert "oops\\) \\(" in text
    parse(text)  # still well-formed


# --- forged fields (RFC 8601 §5) -----------------------------------------------------------

@pytest.mark.parametrize(("value", "ident"), [
    (b" mx.b.test; spf=pass", "mx.b.test"),
    (b" MX.B.TEST.; dkim=pass", "mx.b.test"),
    (b' "mx.b.test" 1; none', "mx.b.test"),
    (b" (comment (nested)) mx.b.test (c); none", "mx.b.test"),
    (b"\r\n\tmx.b.test;\r\n\tspf=pass", "mx.b.test"),
    (b" other.test; spf=pass", "other.test"),
    (b" ; garbage", None),
])
def test_authserv_id(value: bytes, ident: str | None) -> None:
    assert authserv_id(value) == ident


def test_forged_fields_are_removed_and_others_kept() -> None:
    msg = (b"Received: from x\r\n"
           b"Authentication-Results: mx.b.test; spf=pass\r\n"
           b"authentication-results: (x) MX.B.test;\r\n\tdkim=pass header.d=bank.test\r\n"
           b"Authentication-Results: upstream.test; spf=fail\r\n"
           b"From: a@a.test\r\n\r\n"
           b"Authentication-Results: mx.b.test; in the body stays\r\n")
    cleaned = remove_forged(msg, "mx.b.test")
    assert cleaned == (b"Received: from x\r\n"
                       b"Authentication-Results: upstream.test; spf=fail\r\n"
                       b"From: a@a.test\r\n\r\n"
                       b"Authentication-Results: mx.b.test; in the body stays\r\n")


def test_message_without_forgeries_is_returned_unchanged() -> None:
    msg = b"From: a@a.test\r\n\r\nbody\r\n"
    assert remove_forged(msg, "mx.b.test") is msg
