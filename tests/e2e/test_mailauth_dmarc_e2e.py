"""SPF + DKIM + DMARC (+ ARC) end to end at the library level, against a real DNS server.

NSD serves a.test (p=reject), q.test (p=quarantine), n.test (p=none), h.test (p=reject,
pct=50) with SPF and DKIM records; a broken zone stands for a DNS outage. Every check goes
through `authenticate_inbound` / `InboundAuthenticator` with kittiwake's DnsResolver and
pyspf's driver pointed at that server: genuine mail passes, a forged From from an unlisted
address is refused, quarantined or delivered as its domain's policy says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from kittiwake.dns import DnsResolver
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
    Policy,
    SpfResult,
    authenticate_inbound,
    seal_forwarded,
    sign_outbound,
)
from kittiwake.mailauth.authresults import parse
from support.dnsserver import DnsServer, requires_nsd, txt_record
from support.mailauthfakes import message

pytestmark = requires_nsd

SENDER_IP = "192.0.2.10"  # a.test's (and the others') only permitted sender
FORGER_IP = "203.0.113.66"
FORWARDER_IP = "198.51.100.20"
POLICIES = {"a.test": "p=reject", "q.test": "p=quarantine", "n.test": "p=none",
            "h.test": "p=reject; pct=50"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DkimKeyStore:
    ks = DkimKeyStore(tmp_path_factory.mktemp("dmarc") / "dkim")
    for domain in POLICIES:
        ks.generate(domain, KeyAlgorithm.RSA, "r1")
        ks.generate(domain, KeyAlgorithm.ED25519, "e1")
    ks.generate("fwd.test", KeyAlgorithm.RSA, "arc1")
    return ks


@pytest.fixture(scope="module")
def dns(store: DkimKeyStore) -> Iterator[DnsServer]:
    lines = []
    for domain, policy in POLICIES.items():
        lines += [txt_record(f"{domain}.", f"v=spf1 ip4:{SENDER_IP} -all"),
                  txt_record(f"_dmarc.{domain}.", f"v=DMARC1; {policy}; "
                                                  f"rua=mailto:dmarc@{domain}")]
    lines += [txt_record("fwd.test.", f"v=spf1 ip4:{FORWARDER_IP} -all")]
    for domain in store.domains():
        lines += [txt_record(f"{name}.", text) for name, text in store.dns_records(domain)]
    zones = {"test": "\n".join(lines),
             "down.test": '@ TXT "this zone fails to load\n'}  # SERVFAIL: a DNS outage
    with DnsServer(zones) as server:
        yield server


def settings(dns: DnsServer, host: str = "mx.b.test", **kw: object) -> AuthSettings:
    return AuthSettings(hostname=host, dns=dns.settings(), **kw)  # type: ignore[arg-type]


def receive(dns: DnsServer, msg: bytes, ip: str, mail_from: str, **kw: object) -> AuthVerdict:
    return asyncio.run(authenticate_inbound(msg, ip, "mail.example", mail_from,
                                            settings(dns, **kw), DnsResolver(dns.settings())))


def test_genuine_mail_passes_spf_dkim_dmarc(store: DkimKeyStore, dns: DnsServer) -> None:
    msg = sign_outbound(message(from_="Alice <alice@a.test>"), None, store)
    verdict = receive(dns, msg, SENDER_IP, "alice@a.test")
    assert verdict.spf.result is SpfResult.PASS
    assert [r.result for r in verdict.dkim] == [DkimStatus.PASS, DkimStatus.PASS]
    assert verdict.dmarc.result is DmarcResult.PASS
    assert verdict.action is Action.ACCEPT
    header = parse(verdict.headers.decode().split("\r\nReceived-SPF:")[0])
    assert [(r.method, r.result) for r in header.results] == [
        ("spf", "pass"), ("dkim", "pass"), ("dkim", "pass"), ("dmarc", "pass"), ("arc", "none")]


@pytest.mark.parametrize(("domain", "action", "disposition"), [
    ("a.test", Action.REJECT, Policy.REJECT),
    ("q.test", Action.QUARANTINE, Policy.QUARANTINE),
    ("n.test", Action.ACCEPT, Policy.NONE),
])
def test_forged_from_follows_the_domains_policy(dns: DnsServer, domain: str, action: Action,
                                                disposition: Policy) -> None:
    verdict = receive(dns, message(from_=f"CEO <ceo@{domain}>"), FORGER_IP, "x@evil.test")
    assert verdict.spf.result is SpfResult.NONE  # evil.test publishes nothing
    assert verdict.dkim == ()
    assert (verdict.dmarc.result, verdict.dmarc.disposition) == (DmarcResult.FAIL, disposition)
    assert verdict.action is action
    if action is Action.REJECT:
        assert verdict.reply is not None
        assert verdict.reply.to_bytes().startswith(b"550 5.7.1 ")


def test_forged_envelope_too_fails_spf(dns: DnsServer) -> None:
    verdict = receive(dns, message(from_="ceo@a.test"), FORGER_IP, "ceo@a.test")
    assert verdict.spf.result is SpfResult.FAIL
    assert verdict.action is Action.REJECT


def test_subdomain_falls_back_to_the_organisational_record(dns: DnsServer) -> None:
    verdict = receive(dns, message(from_="x@news.a.test"), FORGER_IP, "x@evil.test")
    assert (verdict.dmarc.record_domain, verdict.dmarc.org_domain) == ("a.test", "a.test")
    assert verdict.action is Action.REJECT


def test_signature_of_another_domain_does_not_align(store: DkimKeyStore,
                                                    dns: DnsServer) -> None:
    # Signed (validly) by n.test, claiming to be from a.test.
    msg = sign_outbound(message(from_="ceo@a.test"), "n.test", store)
    verdict = receive(dns, msg, SENDER_IP, "bounce@n.test")
    assert {r.result for r in verdict.dkim} == {DkimStatus.PASS}
    assert verdict.spf.result is SpfResult.PASS
    assert verdict.dmarc.result is DmarcResult.FAIL
    assert verdict.action is Action.REJECT


@pytest.mark.parametrize(("draw", "action"), [(0.2, Action.REJECT), (0.7, Action.QUARANTINE)])
def test_pct_sampling(dns: DnsServer, draw: float, action: Action) -> None:
    auth = InboundAuthenticator(settings(dns), DnsResolver(dns.settings()), rng=lambda: draw)
    verdict = asyncio.run(auth.authenticate(message(from_="x@h.test"), FORGER_IP, "h",
                                            "x@evil.test"))
    assert verdict.action is action


def test_dns_outage_is_temperror_and_the_message_is_accepted(dns: DnsServer) -> None:
    verdict = receive(dns, message(from_="x@down.test"), FORGER_IP, "x@down.test")
    assert verdict.spf.result is SpfResult.TEMPERROR
    assert verdict.dmarc.result is DmarcResult.TEMPERROR
    assert verdict.action is Action.ACCEPT


def test_forwarding_with_arc_through_a_trusted_sealer(store: DkimKeyStore,
                                                      dns: DnsServer) -> None:
    # a.test → fwd.test (an alias that adds a footer, then forwards) → c.test
    sent = sign_outbound(message(from_="alice@a.test"), None, store)
    at_fwd = receive(dns, sent, SENDER_IP, "alice@a.test")
    changed = at_fwd.content.replace(b"see you.", b"see you.\r\n-- via fwd.test")
    forwarded = seal_forwarded(changed, "fwd.test", store, "mx.b.test")
    at_c = receive(dns, forwarded, FORWARDER_IP, "alias+srs@fwd.test", host="mx.c.test",
                   trusted_arc_sealers=("fwd.test",))
    assert at_c.arc.result is ArcResult.PASS
    assert at_c.dmarc.result is DmarcResult.FAIL  # SPF is fwd.test's, DKIM broke
    assert (at_c.action, at_c.dmarc.override) == (Action.ACCEPT, "trusted_forwarder")
    untrusted = receive(dns, forwarded, FORWARDER_IP, "alias+srs@fwd.test", host="mx.c.test")
    assert untrusted.action is Action.REJECT
