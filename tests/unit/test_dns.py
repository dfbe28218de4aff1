"""MX, address and TXT lookups (RFC 5321 §5.1, RFC 7505) against a real NSD on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kittiwake.dns import (
    DnsResolver,
    DnsSettings,
    DnsStatus,
    DnsTemporaryError,
    MxResult,
    ascii_name,
    order_mx,
)
from support.dnsserver import DnsServer, dns_server_fixture, txt_record

T = TypeVar("T")

LONG_KEY = "v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" * 12
TRICKY = 'quote " backslash \\ semicolon ; done'

ZONE = "\n".join([
    "pref MX 20 mx20.pref",
    "pref MX 10 mx10.pref",
    "pref MX 30 mx30.pref",
    "tie MX 10 a.tie",
    "tie MX 10 b.tie",
    "tie MX 10 c.tie",
    "tie MX 5 first.tie",
    "amx A 127.0.0.2",
    "amx AAAA ::1",
    "null MX 0 .",
    "mixednull MX 0 .",
    "mixednull MX 10 real.mixednull",
    "host A 127.0.0.3",
    "host A 127.0.0.4",
    "host AAAA ::1",
    "v6only AAAA ::1",
    "xn--strae-oqa MX 10 mx.xn--strae-oqa",
    "mx.xn--strae-oqa A 127.0.0.5",
    txt_record("_domainkey.long", LONG_KEY),
    txt_record("multi", "v=spf1 -all"),
    txt_record("multi", "other record"),
    txt_record("tricky", TRICKY),
])

dns = dns_server_fixture({"mx.test": ZONE, "other.test": "www A 127.0.0.9\n"})


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def resolver(dns: DnsServer) -> DnsResolver:
    return DnsResolver(dns.settings(timeout=2.0), rng=random.Random(1))


# --- MX --------------------------------------------------------------------------------------

def test_mx_hosts_come_in_preference_order(resolver: DnsResolver) -> None:
    assert run(resolver.mx("pref.mx.test")) == MxResult(
        ("mx10.pref.mx.test", "mx20.pref.mx.test", "mx30.pref.mx.test"), DnsStatus.OK)


def test_equal_preferences_are_tried_in_random_order(dns: DnsServer) -> None:
    orders = set()
    for seed in range(30):
        result = run(DnsResolver(dns.settings(), rng=random.Random(seed)).mx("tie.mx.test"))
        assert result.hosts[0] == "first.tie.mx.test"  # preference 5 always first
        orders.add(result.hosts[1:])
    assert len(orders) > 1 and all(sorted(o) == ["a.tie.mx.test", "b.tie.mx.test",
                                                 "c.tie.mx.test"] for o in orders)


def test_domain_without_mx_is_its_own_implicit_mx(resolver: DnsResolver) -> None:
    assert run(resolver.mx("AMX.mx.test.")) == MxResult(("amx.mx.test",), DnsStatus.OK,
                                                        implicit=True)


def test_null_mx_means_the_domain_takes_no_mail(resolver: DnsResolver) -> None:
    result = run(resolver.mx("null.mx.test"))
    assert result.status is DnsStatus.NULL_MX and result.hosts == ()
    assert "does not accept mail" in result.detail


def test_null_mx_mixed_with_a_real_mx_uses_the_real_one(resolver: DnsResolver) -> None:
    assert run(resolver.mx("mixednull.mx.test")).hosts == ("real.mixednull.mx.test",)


def test_nonexistent_domain_is_nxdomain(resolver: DnsResolver) -> None:
    result = run(resolver.mx("nowhere.mx.test"))
    assert result.status is DnsStatus.NXDOMAIN and result.hosts == ()


def test_impossible_names_do_not_exist(resolver: DnsResolver) -> None:
    assert run(resolver.mx("a" * 64 + ".mx.test")).status is DnsStatus.NXDOMAIN
    assert run(resolver.mx("a..mx.test")).status is DnsStatus.NXDOMAIN
    assert run(resolver.addresses("x" * 300)) == []
    assert run(resolver.txt("\udcff.mx.test")) == []


def test_refused_query_is_a_temporary_failure(resolver: DnsResolver) -> None:
    # NSD is not authoritative for example.org and refuses: that may change, so retry.
    assert run(resolver.mx("example.org")).status is DnsStatus.TEMPFAIL


def test_silent_server_is_a_temporary_failure_after_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # receives queries, never answers
        settings = DnsSettings(("127.0.0.1",), silent.getsockname()[1], timeout=0.3)
        result = run(DnsResolver(settings).mx("mx.test"))
    assert result.status is DnsStatus.TEMPFAIL and "timeout" in result.detail


def test_internationalised_domain_is_queried_in_a_label_form(resolver: DnsResolver) -> None:
    assert run(resolver.mx("Straße.mx.test")).hosts == ("mx.xn--strae-oqa.mx.test",)
    assert run(resolver.addresses("mx.straße.mx.test")) == ["127.0.0.5"]


# --- addresses and TXT ------------------------------------------------------------------------

def test_addresses_are_a_then_aaaa(resolver: DnsResolver) -> None:
    assert run(resolver.addresses("host.mx.test")) in (
        ["127.0.0.3", "127.0.0.4", "::1"], ["127.0.0.4", "127.0.0.3", "::1"])
    assert run(resolver.addresses("v6only.mx.test")) == ["::1"]


def test_missing_name_has_no_addresses(resolver: DnsResolver) -> None:
    assert run(resolver.addresses("nowhere.mx.test")) == []
    assert run(resolver.addresses("pref.mx.test")) == []  # exists, but only MX records


def test_ip_literals_need_no_lookup() -> None:
    offline = DnsResolver(DnsSettings(("127.0.0.1",), 9, timeout=0.1))
    assert run(offline.addresses("[192.0.2.1]")) == ["192.0.2.1"]
    assert run(offline.addresses("[IPv6:2001:db8::1]")) == ["2001:db8::1"]
    assert run(offline.addresses("127.0.0.1")) == ["127.0.0.1"]


def test_addresses_raise_when_no_answer_can_be_had(resolver: DnsResolver) -> None:
    with pytest.raises(DnsTemporaryError):
        run(resolver.addresses("www.example.org"))


def test_long_txt_record_strings_are_joined(resolver: DnsResolver) -> None:
    assert run(resolver.txt("_domainkey.long.mx.test")) == [LONG_KEY]
    assert len(LONG_KEY) > 255  # travels as several strings, and over TCP if it must
    assert run(resolver.txt("tricky.mx.test")) == [TRICKY]


def test_each_txt_record_is_one_string(resolver: DnsResolver) -> None:
    assert sorted(run(resolver.txt("multi.mx.test"))) == ["other record", "v=spf1 -all"]


def test_missing_txt_is_empty_and_unanswerable_txt_raises(resolver: DnsResolver) -> None:
    assert run(resolver.txt("nowhere.mx.test")) == []
    assert run(resolver.txt("amx.mx.test")) == []
    with pytest.raises(DnsTemporaryError):
        run(resolver.txt("_dmarc.example.org"))


def test_second_zone_is_served(resolver: DnsResolver) -> None:
    assert run(resolver.addresses("www.other.test")) == ["127.0.0.9"]


# --- pure helpers -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("straße.de", "xn--strae-oqa.de"),  # IDNA2008, not IDNA2003's "strasse.de"
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("_dmarc.example.org", "_dmarc.example.org"),
    ],
)
def test_ascii_name(name: str, expected: str) -> None:
    assert ascii_name(name) == expected


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from("abcdef")), min_size=1,
                max_size=8), st.integers(0, 1000))
def test_order_mx_respects_preferences(records: list[tuple[int, str]], seed: int) -> None:
    result = order_mx([(p, f"{h}.example.") for p, h in records], random.Random(seed))
    best = {}
    for pref, host in records:
        best[f"{host}.example"] = min(pref, best.get(f"{host}.example", pref))
    assert sorted(result.hosts) == sorted(best)  # each host once
    prefs = [min(p for p, h in records if f"{h}.example" == host) for host in result.hosts]
    assert prefs == sorted(prefs)


def test_order_mx_null_only() -> None:
    assert order_mx([(0, "")], random.Random(0)).status is DnsStatus.NULL_MX


def test_dns_server_fixture_can_be_restarted(tmp_path: Path) -> None:
    server = DnsServer({"x.test": "a A 127.0.0.1\n"}, workdir=tmp_path)
    with server:
        port = server.port
        assert server.query("a.x.test").answer
    assert server.proc is None
    with DnsServer({"x.test": "a A 127.0.0.2\n"}, port=port, workdir=tmp_path) as again:
        assert str(again.query("a.x.test").answer[0][0]) == "127.0.0.2"
