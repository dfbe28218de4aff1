"""`kittiwake dns`: the records to publish and the comparison with what DNS serves
(kittiwake.dnsrecords, fake record lookups; real NSD in tests/e2e/test_mailauth_dnsrecords_e2e.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from kittiwake.dns import DnsTemporaryError
from kittiwake.dnsrecords import (
    CheckResult,
    CheckStatus,
    Record,
    check,
    mta_sts_policy,
    records_for,
    zone_text,
)

DKIM = [("rsa1._domainkey.a.test", "v=DKIM1; k=rsa; p=" + "A" * 392),
        ("ed1", "v=DKIM1; k=ed25519; p=" + "B" * 44)]


def records(**kw: object) -> list[Record]:
    return records_for("a.test", "mx.a.test", ["192.0.2.1", "2001:db8::1"], DKIM,
                       "dmarc@a.test", **kw)  # type: ignore[arg-type]


def by_purpose(recs: list[Record]) -> dict[str, Record]:
    return {r.purpose.split(":")[0].split(" (")[0]: r for r in recs}


def test_records_for_a_domain() -> None:
    lines = [r.zone_line() for r in records()]
    assert lines[:4] == [
        "a.test. 3600 IN MX 10 mx.a.test.",
        "mx.a.test. 3600 IN A 192.0.2.1",
        "mx.a.test. 3600 IN AAAA 2001:db8::1",
        'a.test. 3600 IN TXT "v=spf1 ip4:192.0.2.1 ip6:2001:db8::1 mx -all"',
    ]
    assert 'ed1._domainkey.a.test. 3600 IN TXT "v=DKIM1; k=ed25519; p=' + "B" * 44 + '"' in lines
    assert '_dmarc.a.test. 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@a.test"' \
        in lines
    assert '_smtp._tls.a.test. 3600 IN TXT "v=TLSRPTv1; rua=mailto:dmarc@a.test"' in lines
    assert any(line.startswith('_mta-sts.a.test. 3600 IN TXT "v=STSv1; id=') for line in lines)
    for service, port in [("submission", 587), ("submissions", 465), ("imap", 143),
                          ("imaps", 993), ("pop3", 110), ("pop3s", 995)]:
        assert f"_{service}._tcp.a.test. 3600 IN SRV 0 1 {port} mx.a.test." in lines


def test_long_dkim_key_is_split_into_255_octet_strings() -> None:
    line = next(r for r in records() if r.purpose == "DKIM selector rsa1").zone_line()
    assert line.startswith('rsa1._domainkey.a.test. 3600 IN TXT ( "v=DKIM1; k=rsa; p=AAA')
    strings = line.split("( ", 1)[1].rstrip(" )").split('" "')
    assert [len(s.strip('"')) for s in strings] == [255, len(DKIM[0][1]) - 255]


def test_without_addresses_spf_is_mx_only() -> None:
    recs = records_for("a.test", "mx.a.test")
    spf = next(r for r in recs if r.kind == "spf")
    assert spf.value == "v=spf1 mx -all"
    assert not any(r.kind == "address" for r in recs)
    assert next(r for r in recs if r.kind == "dmarc").value.endswith("mailto:postmaster@a.test")


def test_reports_to_another_domain_need_its_consent_rfc7489_7_1() -> None:
    recs = records_for("a.test", "mx.a.test", report_address="reports@ops.test")
    auth = next(r for r in recs if r.kind == "report-auth")
    assert auth.zone_line() == 'a.test._report._dmarc.ops.test. 3600 IN TXT "v=DMARC1"'


def test_services_not_offered_get_a_dot_target_rfc6186() -> None:
    recs = records(services={"imaps": 993, "pop3": None})
    srv = [r.zone_line() for r in recs if r.kind == "srv"]
    assert srv == ["_imaps._tcp.a.test. 3600 IN SRV 0 1 993 mx.a.test.",
                   "_pop3._tcp.a.test. 3600 IN SRV 0 0 0 ."]


def test_idn_domain_is_published_as_a_label() -> None:
    recs = records_for("bücher.test", "mx.bücher.test")
    assert recs[0].zone_line() == "xn--bcher-kva.test. 3600 IN MX 10 mx.xn--bcher-kva.test."


def test_mta_sts_id_follows_the_policy() -> None:
    one = next(r for r in records_for("a.test", "mx.a.test") if r.kind == "mta-sts")
    two = next(r for r in records_for("a.test", "mx2.a.test") if r.kind == "mta-sts")
    assert one.value != two.value
    assert mta_sts_policy("mx.a.test") == ("version: STSv1\r\nmode: testing\r\n"
                                           "mx: mx.a.test\r\nmax_age: 604800\r\n")


def test_zone_text_comments_each_record() -> None:
    text = zone_text(records()[:2])
    assert text == ("; MX: mail for the domain goes to this server\n"
                    "a.test. 3600 IN MX 10 mx.a.test.\n"
                    "; address of the mail server\n"
                    "mx.a.test. 3600 IN A 192.0.2.1\n")


# --- check --------------------------------------------------------------------------------

class FakeRecords:
    def __init__(self, data: Mapping[tuple[str, str], list[str] | None]) -> None:
        self.data = data

    async def records(self, name: str, rtype: str) -> list[str]:
        value = self.data.get((name, rtype), [])
        if value is None:
            raise DnsTemporaryError("timeout")
        return list(value)


def published(recs: list[Record]) -> dict[tuple[str, str], list[str]]:
    data: dict[tuple[str, str], list[str]] = {}
    for r in recs:
        data.setdefault((r.name, r.rtype), []).append(r.value)
    return data


def run(recs: list[Record], data: Mapping[tuple[str, str], list[str] | None]
        ) -> list[CheckResult]:
    return asyncio.run(check(recs, FakeRecords(data)))


def test_everything_published_is_ok() -> None:
    recs = records()
    results = run(recs, published(recs))
    assert [r.status for r in results] == [CheckStatus.OK] * len(recs)
    assert all(r.message.startswith("ok ") for r in results)


def test_missing_record_is_named_with_what_to_publish() -> None:
    recs = records()
    data = published(recs)
    del data[("_dmarc.a.test", "TXT")]
    [bad] = [r for r in run(recs, data) if not r.ok]
    assert bad.status is CheckStatus.MISSING
    assert bad.message.startswith("MISSING  DMARC")
    assert "_dmarc.a.test TXT" in bad.message
    assert 'publish  _dmarc.a.test. 3600 IN TXT "v=DMARC1; p=quarantine;' in bad.message


@pytest.mark.parametrize(("key", "served", "status"), [
    (("a.test", "MX"), ["10 other.example"], CheckStatus.DIFFERENT),
    (("a.test", "MX"), ["5 mx.a.test", "20 backup.example"], CheckStatus.OK),
    (("a.test", "TXT"), ["v=spf1 -all"], CheckStatus.DIFFERENT),
    (("a.test", "TXT"), ["v=spf1 mx ip6:2001:db8::1 IP4:192.0.2.1 -all"], CheckStatus.OK),
    (("a.test", "TXT"), ["v=spf1 mx -all", "v=spf1 -all"], CheckStatus.DIFFERENT),
    (("a.test", "TXT"), ["google-site-verification=x"], CheckStatus.MISSING),
    (("ed1._domainkey.a.test", "TXT"), ["v=DKIM1; k=ed25519; p=CCCC"], CheckStatus.DIFFERENT),
    (("ed1._domainkey.a.test", "TXT"), ["k=ed25519;p=" + "B" * 22 + " " + "B" * 22],
     CheckStatus.OK),
    (("_dmarc.a.test", "TXT"), ["v=DMARC1; p=none; rua=mailto:dmarc@a.test"],
     CheckStatus.DIFFERENT),
    (("_dmarc.a.test", "TXT"), ["v=DMARC1;rua=mailto:dmarc@a.test; P=Quarantine"],
     CheckStatus.OK),
    (("_mta-sts.a.test", "TXT"), ["v=STSv1; id=20240101"], CheckStatus.OK),
    (("_imaps._tcp.a.test", "SRV"), ["0 1 993 elsewhere.example"], CheckStatus.DIFFERENT),
    (("_imaps._tcp.a.test", "SRV"), ["5 0 993 mx.a.test"], CheckStatus.OK),
    (("_imaps._tcp.a.test", "SRV"), ["0 1 143 mx.a.test"], CheckStatus.DIFFERENT),
    (("mx.a.test", "A"), ["192.0.2.99"], CheckStatus.DIFFERENT),
    (("a.test", "MX"), None, CheckStatus.ERROR),
])
def test_comparisons(key: tuple[str, str], served: list[str] | None,
                     status: CheckStatus) -> None:
    recs = records()
    data: dict[tuple[str, str], list[str] | None] = dict(published(recs))
    data[key] = served
    results = [r for r in run(recs, data) if (r.record.name, r.record.rtype) == key]
    if key == ("a.test", "TXT"):
        results = [r for r in results if r.record.kind == "spf"]
    if key == ("mx.a.test", "A"):
        results = [r for r in results if r.record.rtype == "A"]
    assert [r.status for r in results] == [status]
    if status is CheckStatus.DIFFERENT:
        assert results[0].message.startswith("WRONG ")
        assert results[0].record.name in results[0].message
