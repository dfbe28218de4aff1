"""SPF (RFC 7208) through kittiwake.mailauth.spf, with a lookup table instead of DNS.

The full RFC 7208 suite against a real DNS server is tests/e2e/test_mailauth_spf_suite.py;
these pin down kittiwake's own parts: identities, result mapping, the DNS hook, limits and
the Received-SPF field.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import spf

from kittiwake.dns import DnsSettings
from kittiwake.mailauth.spf import (
    SpfChecker,
    SpfDnsDriver,
    SpfOutcome,
    SpfResult,
    received_spf_header,
)
from support.mailauthfakes import TEMPFAIL, SpfTable

TABLE = SpfTable({
    ("a.test", "TXT"): ["v=spf1 ip4:192.0.2.0/24 mx:mx.a.test -all"],
    ("mx.a.test", "MX"): [(10, "mx1.a.test")],
    ("mx1.a.test", "A"): ["198.51.100.7"],
    ("soft.test", "TXT"): ["v=spf1 ~all"],
    ("neutral.test", "TXT"): ["v=spf1 ?all"],
    ("broken.test", "TXT"): ["v=spf1 frobnicate -all"],
    ("two.test", "TXT"): ["v=spf1 -all", "v=spf1 +all"],
    ("slow.test", "TXT"): TEMPFAIL,  # type: ignore[dict-item]
    ("helo.a.test", "TXT"): ["v=spf1 a -all"],
    ("helo.a.test", "A"): ["192.0.2.99"],
    ("exp.test", "TXT"): ["v=spf1 -all exp=why.exp.test"],
    ("why.exp.test", "TXT"): ["Go away\x07 %{i}"],
    ("loop.test", "TXT"): ["v=spf1 " + " ".join(f"a:h{i}.loop.test" for i in range(11)) + " -all"],
    ("void.test", "TXT"): ["v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test -all"],
})


def check(ip: str, mail_from: str, helo: str = "mail.example.org", **kw: object) -> SpfOutcome:
    checker = SpfChecker(lookup=TABLE, receiver="mx.b.test", **kw)  # type: ignore[arg-type]
    return asyncio.run(checker.check(ip, mail_from, helo))


@pytest.mark.parametrize(("ip", "sender", "expected"), [
    ("192.0.2.10", "a@a.test", SpfResult.PASS),
    ("198.51.100.7", "a@a.test", SpfResult.PASS),  # via mx:
    ("203.0.113.1", "a@a.test", SpfResult.FAIL),
    ("203.0.113.1", "a@soft.test", SpfResult.SOFTFAIL),
    ("203.0.113.1", "a@neutral.test", SpfResult.NEUTRAL),
    ("203.0.113.1", "a@unknown.test", SpfResult.NONE),
    ("203.0.113.1", "a@broken.test", SpfResult.PERMERROR),  # unknown mechanism, §5
    ("203.0.113.1", "a@two.test", SpfResult.PERMERROR),  # two records, §4.5
    ("203.0.113.1", "a@slow.test", SpfResult.TEMPERROR),  # §2.6.6
    ("203.0.113.1", "a@loop.test", SpfResult.PERMERROR),  # >10 lookups, §4.6.4
    ("203.0.113.1", "a@void.test", SpfResult.PERMERROR),  # >2 void lookups, §4.6.4
])
def test_results_map_to_rfc7208_names(ip: str, sender: str, expected: SpfResult) -> None:
    assert check(ip, sender).result is expected


def test_mail_from_identity_is_checked_with_its_domain() -> None:
    outcome = check("192.0.2.10", "alice@A.Test")
    assert (outcome.identity, outcome.domain, outcome.sender) == ("mailfrom", "a.test",
                                                                  "alice@A.Test")


def test_null_sender_checks_postmaster_at_helo() -> None:
    # RFC 7208 §2.4: with MAIL FROM:<>, check_host() runs on postmaster@<HELO>.
    outcome = check("192.0.2.99", "", helo="helo.a.test")
    assert outcome.result is SpfResult.PASS
    assert (outcome.identity, outcome.domain, outcome.sender) == (
        "helo", "helo.a.test", "postmaster@helo.a.test")
    assert check("192.0.2.98", "", helo="helo.a.test").result is SpfResult.FAIL


def test_invalid_client_ip_is_permerror_not_a_crash() -> None:
    assert check("not-an-ip", "a@a.test").result is SpfResult.PERMERROR


def test_explanation_from_dns_is_sanitised() -> None:
    outcome = check("203.0.113.1", "a@exp.test")
    assert outcome.result is SpfResult.FAIL
    assert outcome.explanation == "Go away? 203.0.113.1"


def test_default_explanation_rfc7208_6_2() -> None:
    outcome = check("203.0.113.1", "a@a.test", default_explanation="see https://x.test/spf")
    assert outcome.explanation == "see https://x.test/spf"


def test_lookups_go_to_the_checkers_own_driver_even_in_threads() -> None:
    # Two checkers with different data, run concurrently: each sees only its own DNS.
    other = SpfTable({("a.test", "TXT"): ["v=spf1 +all"]})
    results: dict[str, SpfResult] = {}

    def run(name: str, table: SpfTable) -> None:
        for _ in range(20):
            outcome = SpfChecker(lookup=table).check_sync("203.0.113.1", "a@a.test", "h")
            results[name] = outcome.result

    threads = [threading.Thread(target=run, args=("strict", TABLE)),
               threading.Thread(target=run, args=("open", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"strict": SpfResult.FAIL, "open": SpfResult.PASS}


def test_pyspf_outside_a_kittiwake_check_never_asks_the_system_resolver() -> None:
    # The hook installed by kittiwake.mailauth.spf fails such lookups (temperror).
    result, _, _ = spf.query(i="192.0.2.1", s="a@example.com", h="x").check()
    assert result == "temperror"


def test_driver_refuses_impossible_names_without_asking() -> None:
    driver = SpfDnsDriver(DnsSettings(nameservers=("192.0.2.1",), port=9, timeout=0.1))
    assert driver("a..b.test", "TXT", 1.0) == []
    assert driver("x" * 64 + ".test", "TXT", 1.0) == []


def test_driver_reports_unreachable_servers_as_temperror() -> None:
    driver = SpfDnsDriver(DnsSettings(nameservers=("127.0.0.1",), port=9, timeout=0.3))
    with pytest.raises(spf.TempError):
        driver("a.test", "TXT", 0.3)


# --- Received-SPF (RFC 7208 §9.1) ----------------------------------------------------------

def test_received_spf_header_fields() -> None:
    header = received_spf_header(check("192.0.2.10", "alice@a.test"), "mx.b.test").decode()
    assert header.startswith("Received-SPF: pass (mx.b.test: domain of alice@a.test "
                             "designates 192.0.2.10 as permitted sender)\r\n")
    for pair in ("client-ip=192.0.2.10;", 'envelope-from="alice@a.test";',
                 "helo=mail.example.org;", "receiver=mx.b.test;", "identity=mailfrom;"):
        assert pair in header
    assert header.endswith(";\r\n")
    assert all(len(line) < 998 for line in header.split("\r\n"))


def test_received_spf_null_sender_has_empty_envelope_from() -> None:
    header = received_spf_header(check("192.0.2.99", "", helo="helo.a.test"), "mx.b.test")
    assert b'envelope-from="";' in header
    assert b"identity=helo;" in header


def test_received_spf_cannot_be_broken_by_hostile_values() -> None:
    outcome = SpfOutcome(SpfResult.PERMERROR, "mailfrom", "x.test", 'a"b\\c@x.test\r\nX: y',
                         "192.0.2.1", "evil)\r\nInjected: 1", explanation="bad\r\nrecord")
    header = received_spf_header(outcome, "mx.b.test")
    assert header.count(b"\r\n") == header.count(b"\r\n\t") + 1  # only folds and the end
    assert b"\r\nX:" not in header and b"\r\nInjected" not in header
    assert b"problem=bad??record;" in header
