"""`kittiwake dns a.test --check` logic against a real DNS server (NSD on loopback).

The zone is exactly what `records_for` tells the administrator to publish (its zone-file
lines, pasted into NSD's zone file); the check must then say "ok" for every record, and
name the record that is removed or changed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kittiwake.dnsrecords import (
    CheckResult,
    CheckStatus,
    DnsRecordResolver,
    Record,
    check,
    records_for,
    zone_text,
)
from kittiwake.mailauth.dkimkeys import DkimKeyStore, KeyAlgorithm
from support.dnsserver import DnsServer, requires_nsd

pytestmark = requires_nsd


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    ks = DkimKeyStore(tmp_path_factory.mktemp("dns") / "dkim")
    ks.generate("a.test", KeyAlgorithm.RSA, "rsa1")
    ks.generate("a.test", KeyAlgorithm.ED25519, "ed1")
    return records_for("a.test", "mx.a.test", ["192.0.2.25", "2001:db8::25"],
                       ks.dns_records("a.test"), "dmarc@a.test")


def run_check(records: list[Record], zone: str, tmp_path: Path) -> list[CheckResult]:
    with DnsServer({"a.test": zone}, workdir=tmp_path / "nsd") as server:
        return asyncio.run(check(records, DnsRecordResolver(server.settings())))


def test_published_records_check_out(records: list[Record], tmp_path: Path) -> None:
    results = run_check(records, zone_text(records), tmp_path)
    assert [r.message for r in results if not r.ok] == []
    assert len(results) == len(records) == 15


def test_removed_records_are_named(records: list[Record], tmp_path: Path) -> None:
    lines = zone_text(records).splitlines()
    gone = {"_dmarc.a.test.", "ed1._domainkey.a.test.", "_imaps._tcp.a.test."}
    zone = "\n".join(x for x in lines if x.split(" ", 1)[0] not in gone)
    bad = [r for r in run_check(records, zone, tmp_path) if not r.ok]
    assert {(r.record.name, r.status) for r in bad} == {
        ("_dmarc.a.test", CheckStatus.MISSING), ("ed1._domainkey.a.test", CheckStatus.MISSING),
        ("_imaps._tcp.a.test", CheckStatus.MISSING)}
    dmarc = next(r for r in bad if r.record.kind == "dmarc")
    assert "_dmarc.a.test TXT" in dmarc.message and "publish" in dmarc.message


def test_wrong_records_are_named(records: list[Record], tmp_path: Path) -> None:
    zone = zone_text(records).replace("v=spf1 ip4:192.0.2.25 ip6:2001:db8::25 mx -all",
                                      "v=spf1 include:elsewhere.example -all")
    zone = zone.replace("IN MX 10 mx.a.test.", "IN MX 10 mail.other.example.")
    bad = [r for r in run_check(records, zone, tmp_path) if not r.ok]
    assert {(r.record.kind, r.status) for r in bad} == {("spf", CheckStatus.DIFFERENT),
                                                        ("mx", CheckStatus.DIFFERENT)}
    spf = next(r for r in bad if r.record.kind == "spf")
    assert "include:elsewhere.example" in spf.message


def test_unreachable_dns_is_an_error_not_missing(records: list[Record]) -> None:
    from kittiwake.dns import DnsSettings

    resolver = DnsRecordResolver(DnsSettings(nameservers=("127.0.0.1",), port=9, timeout=0.5))
    results = asyncio.run(check(records[:2], resolver))
    assert {r.status for r in results} == {CheckStatus.ERROR}
    assert "DNS lookup failed" in results[0].message
