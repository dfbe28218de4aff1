"""The mailauth entry points: authenticate_inbound → verdict (action, reply, headers) and
sign_outbound / seal_forwarded, with fake DNS (real DNS: tests/e2e/test_mailauth_dmarc_e2e.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kittiwake.mailauth import (
    Action,
    ArcResult,
    AuthSettings,
    AuthVerdict,
    DkimKeyStore,
    DkimStatus,
    DmarcResult,
    InboundAuthenticator,
    KeyAlgorithm,
    SpfResult,
    seal_forwarded,
    sign_outbound,
    sign_outbound_async,
    signing_domain,
)
from kittiwake.mailauth.authresults import parse
from kittiwake.message.headers import split_header
from support.mailauthfakes import FakeResolver, SpfTable, message

HOST = "mx.b.test"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DkimKeyStore:
    ks = DkimKeyStore(tmp_path_factory.mktemp("check") / "dkim")
    for domain in ("a.test", "q.test", "n.test"):
        ks.generate(domain, KeyAlgorithm.RSA, "r1")
        ks.generate(domain, KeyAlgorithm.ED25519, "e1")
    ks.generate("b.test", KeyAlgorithm.RSA, "r1")
    return ks


@pytest.fixture(scope="module")
def dns(store: DkimKeyStore) -> FakeResolver:
    fake = FakeResolver({
        "_dmarc.a.test": ["v=DMARC1; p=reject"],
        "_dmarc.q.test": ["v=DMARC1; p=quarantine"],
        "_dmarc.n.test": ["v=DMARC1; p=none"],
    })
    for domain in store.domains():
        for name, text in store.dns_records(domain):
            fake.add(name, text)
    return fake


SPF = SpfTable({(d, "TXT"): ["v=spf1 ip4:192.0.2.1 -all"] for d in ("a.test", "q.test",
                                                                     "n.test")})


def authenticate(dns: FakeResolver, msg: bytes, ip: str = "192.0.2.1",
                 mail_from: str = "alice@a.test", **settings: object) -> AuthVerdict:
    auth = InboundAuthenticator(AuthSettings(hostname=HOST, **settings),  # type: ignore[arg-type]
                                dns, spf_lookup=SPF, rng=lambda: 0.0)
    return asyncio.run(auth.authenticate(msg, ip, "mail.example", mail_from))


def test_genuine_signed_mail_passes_everything(store: DkimKeyStore, dns: FakeResolver) -> None:
    signed = sign_outbound(message(), None, store)
    verdict = authenticate(dns, signed)
    assert verdict.spf.result is SpfResult.PASS
    assert [r.result for r in verdict.dkim] == [DkimStatus.PASS, DkimStatus.PASS]
    assert verdict.dmarc.result is DmarcResult.PASS
    assert verdict.arc.result is ArcResult.NONE
    assert (verdict.action, verdict.reply) == (Action.ACCEPT, None)
    assert verdict.summary() == ("spf=pass dkim=pass:a.test,pass:a.test dmarc=pass "
                                 "from_domain=a.test arc=none action=accept")


def test_headers_are_one_authentication_results_and_received_spf(
        store: DkimKeyStore, dns: FakeResolver) -> None:
    verdict = authenticate(dns, sign_outbound(message(), None, store))
    text = verdict.headers.decode()
    assert text.startswith("Authentication-Results: mx.b.test;\r\n")
    assert text.count("Authentication-Results:") == 1
    assert "\r\nReceived-SPF: pass (mx.b.test: " in text
    ar = parse(text.split("\r\nReceived-SPF")[0])
    assert [r.method for r in ar.results] == ["spf", "dkim", "dkim", "dmarc", "arc"]
    assert verdict.content == verdict.headers + verdict.message


def test_forged_from_under_reject_is_refused_with_550_571(dns: FakeResolver) -> None:
    verdict = authenticate(dns, message(), ip="203.0.113.9", mail_from="x@evil.test")
    assert verdict.dmarc.result is DmarcResult.FAIL
    assert verdict.action is Action.REJECT
    assert verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (550, "5.7.1")
    assert "a.test" in verdict.reply.lines[0]


def test_forged_from_under_quarantine_goes_to_junk(dns: FakeResolver) -> None:
    verdict = authenticate(dns, message(from_="q@q.test"), ip="203.0.113.9",
                           mail_from="x@evil.test")
    assert (verdict.action, verdict.reply) == (Action.QUARANTINE, None)


def test_forged_from_under_none_is_delivered(dns: FakeResolver) -> None:
    verdict = authenticate(dns, message(from_="n@n.test"), ip="203.0.113.9",
                           mail_from="x@evil.test")
    assert verdict.dmarc.result is DmarcResult.FAIL
    assert verdict.action is Action.ACCEPT


def test_monitor_mode_never_acts_on_dmarc(dns: FakeResolver) -> None:
    verdict = authenticate(dns, message(), ip="203.0.113.9", mail_from="x@evil.test",
                           enforce_dmarc=False)
    assert (verdict.dmarc.result, verdict.action) == (DmarcResult.FAIL, Action.ACCEPT)


def test_local_lists(dns: FakeResolver, store: DkimKeyStore) -> None:
    v = authenticate(dns, message(), ip="203.0.113.9", mail_from="x@evil.test",
                     always_accept_from=("a.test",))
    assert v.action is Action.ACCEPT
    v = authenticate(dns, sign_outbound(message(), None, store), never_accept_from=("a.test",))
    assert v.action is Action.REJECT
    assert v.reply is not None and "refused here" in v.reply.lines[0]


def test_spf_fail_rejects_only_when_configured(dns: FakeResolver) -> None:
    msg = message(from_="n@n.test")
    assert authenticate(dns, msg, ip="203.0.113.9", mail_from="n@n.test").action \
        is Action.ACCEPT
    verdict = authenticate(dns, msg, ip="203.0.113.9", mail_from="n@n.test",
                           reject_spf_fail=True)
    assert verdict.action is Action.REJECT
    assert verdict.reply is not None and verdict.reply.enhanced == "5.7.23"


def test_forged_authentication_results_are_stripped(dns: FakeResolver) -> None:
    msg = b"Authentication-Results: mx.b.test; dmarc=pass header.from=a.test\r\n" + message()
    verdict = authenticate(dns, msg)
    assert b"dmarc=pass header.from=a.test\r\n" not in verdict.message
    assert verdict.message == message()


def test_signing_domain_and_no_key(store: DkimKeyStore) -> None:
    assert signing_domain(message(), store) == "a.test"
    bounce = message(from_="MAILER-DAEMON@mx.a.test")  # relaxed alignment: a.test signs
    assert signing_domain(bounce, store) == "a.test"
    stranger = message(from_="x@stranger.test")
    assert signing_domain(stranger, store) is None
    assert sign_outbound(stranger, None, store) == stranger


def test_sign_outbound_async(store: DkimKeyStore) -> None:
    signed = asyncio.run(sign_outbound_async(message(), "a.test", store))
    assert signed.count(b"DKIM-Signature:") == 2 and signed.endswith(message())


def test_forwarded_mail_keeps_passing_through_a_trusted_arc_sealer(
        store: DkimKeyStore, dns: FakeResolver) -> None:
    # a.test → b.test (our alias, which adds a footer and forwards) → c.test
    original = sign_outbound(message(), None, store)
    at_b = authenticate(dns, original)
    footer = at_b.content.replace(b"see you.", b"see you.\r\n-- forwarded by b.test")
    forwarded = seal_forwarded(footer, "b.test", store, HOST)
    assert forwarded.startswith(b"ARC-Seal: i=1; cv=none;")
    auth_c = InboundAuthenticator(AuthSettings(hostname="mx.c.test",
                                               trusted_arc_sealers=("b.test",)),
                                  dns, spf_lookup=SPF)
    at_c = asyncio.run(auth_c.authenticate(forwarded, "198.51.100.2", HOST, "fwd@b.test"))
    assert {r.result for r in at_c.dkim} == {DkimStatus.FAIL}  # the footer broke DKIM
    assert at_c.dmarc.result is DmarcResult.FAIL
    assert at_c.arc.result is ArcResult.PASS
    assert (at_c.action, at_c.dmarc.override) == (Action.ACCEPT, "trusted_forwarder")


def test_seal_without_rsa_key_leaves_message_alone(tmp_path: Path) -> None:
    ks = DkimKeyStore(tmp_path)
    ks.generate("e.test", KeyAlgorithm.ED25519, "e1")
    msg = message()
    assert seal_forwarded(msg, "e.test", ks, HOST) == msg


FRAGMENTS = [b"DKIM-Signature: v=1; a=rsa-sha256; d=a.test; s=r1; h=from; bh=AA==; b=AA==",
             b"DKIM-Signature: ;;;==", b"ARC-Seal: i=1; cv=none; d=x; s=y; b=", b"ARC-Seal: i=x",
             b"ARC-Message-Signature: i=1; a=rsa-sha256; d=a.test; s=r1; h=from; bh=; b=",
             b"Authentication-Results: mx.b.test; dmarc=pass", b"Authentication-Results: (",
             b"From: a@a.test", b"From: <@>", b"From: =?utf-8?q?x?= <a@q.test>", b"From:",
             b"Subject: \xff\xfe", b" folded continuation", b"\x00\x01garbage", b"To: b@b.test"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=8), st.binary(max_size=64))
def test_hostile_messages_never_crash_and_headers_stay_well_formed(
        dns: FakeResolver, lines: list[bytes], body: bytes) -> None:
    msg = b"\r\n".join(lines) + b"\r\n\r\n" + body
    verdict = authenticate(dns, msg, ip="203.0.113.9", mail_from="x@evil.test")
    head = verdict.headers
    assert head.endswith(b"\r\n")
    assert head.count(b"\r\n") == head.count(b"\r\n\t") + 2  # two fields, only folds
    header, _ = split_header(verdict.message)
    assert b"\nAuthentication-Results: mx.b.test" not in b"\n" + header  # forgeries gone
