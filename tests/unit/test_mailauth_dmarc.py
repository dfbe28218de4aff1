"""DMARC (RFC 7489): record parsing, organisational domains, alignment, policy discovery,
pct= sampling and local overrides — with a fake resolver and fixed SPF/DKIM results."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from kittiwake.mailauth.arc import ArcOutcome, ArcResult
from kittiwake.mailauth.dkim import DkimResult, DkimStatus
from kittiwake.mailauth.dmarc import (
    DmarcEvaluator,
    DmarcOutcome,
    DmarcPolicyOptions,
    DmarcRecord,
    DmarcRecordError,
    DmarcResult,
    Policy,
    aligned,
    from_domains,
    organizational_domain,
    parse_record,
)
from kittiwake.mailauth.spf import SpfOutcome, SpfResult
from support.mailauthfakes import TEMPFAIL, FakeResolver, message


def spf(result: SpfResult, domain: str) -> SpfOutcome:
    return SpfOutcome(result, "mailfrom", domain, f"x@{domain}", "192.0.2.1", "h")


def dkim(result: DkimStatus, domain: str) -> DkimResult:
    return DkimResult(domain, "s", "rsa-sha256", result)


# --- records ------------------------------------------------------------------------------

def test_rfc7489_example_record() -> None:
    rec = parse_record("v=DMARC1; p=quarantine; rua=mailto:dmarc-feedback@example.com,"
                       "mailto:tld-test@thirdparty.example.net!10m; pct=25; sp=reject; "
                       "adkim=s; aspf=r; fo=0:d")
    assert rec == DmarcRecord(
        p=Policy.QUARANTINE, sp=Policy.REJECT, pct=25, adkim="s", aspf="r",
        rua=("mailto:dmarc-feedback@example.com",
             "mailto:tld-test@thirdparty.example.net!10m"),
        fo=("0", "d"), raw=rec.raw)


def test_defaults() -> None:
    assert parse_record("v=DMARC1; p=none") == DmarcRecord(p=Policy.NONE, raw="v=DMARC1; p=none")


@pytest.mark.parametrize("text", [
    "p=reject; v=DMARC1",  # v must come first (§6.4)
    "v=DMARC2; p=reject",
    "v=DMARC1; p=block",  # invalid p and no rua
    "v=DMARC1",  # no p and no rua
    "v=DMARC1; p=reject; sp=never",
    "v=DMARC1; p",
])
def test_unusable_records(text: str) -> None:
    with pytest.raises(DmarcRecordError):
        parse_record(text)


def test_bad_p_with_rua_counts_as_none_rfc7489_6_6_3_step_6() -> None:
    rec = parse_record("v=DMARC1; p=bogus; rua=mailto:r@x.test")
    assert (rec.p, rec.rua) == (Policy.NONE, ("mailto:r@x.test",))


def test_bad_optional_tags_fall_back_to_defaults() -> None:
    rec = parse_record("v=DMARC1; p=reject; pct=150; adkim=x; aspf=; foo=bar")
    assert (rec.pct, rec.adkim, rec.aspf) == (100, "r", "r")


def test_case_and_spacing() -> None:
    rec = parse_record("v=DMARC1;P=Reject ;  SP = none;pct= 50")
    assert (rec.p, rec.sp, rec.pct) == (Policy.REJECT, Policy.NONE, 50)


# --- organisational domain and alignment (§3.2, §3.1) --------------------------------------

@pytest.mark.parametrize(("domain", "org"), [
    ("example.com", "example.com"),
    ("mail.example.com", "example.com"),
    ("a.b.example.co.uk", "example.co.uk"),
    ("a.test", "a.test"),
    ("deep.sub.a.test", "a.test"),
    ("com", "com"),
    ("foo.github.io", "foo.github.io"),  # private-section public suffix
])
def test_organizational_domain(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(("ident", "from_domain", "mode", "result"), [
    ("example.com", "example.com", "s", True),
    ("mail.example.com", "example.com", "s", False),
    ("mail.example.com", "example.com", "r", True),
    ("example.com", "news.example.com", "r", True),
    ("example.net", "example.com", "r", False),
    ("a.github.io", "b.github.io", "r", False),
    ("EXAMPLE.com.", "example.COM", "s", True),
    ("", "example.com", "r", False),
])
def test_alignment(ident: str, from_domain: str, mode: str, result: bool) -> None:
    assert aligned(ident, from_domain, mode) is result


@pytest.mark.parametrize(("field", "domains"), [
    ("From: Alice <alice@A.Test>", ["a.test"]),
    ("From: a@x.test, b@y.test", ["x.test", "y.test"]),
    ('From: "=?utf-8?q?=3Cx=40evil=2Etest=3E?=" <a@good.test>', ["good.test"]),
    ("From: =?utf-8?q?=3Cx=40evil=2Etest=3E?= <a@good.test>", ["good.test"]),
    ("From: undisclosed:;", []),
    ("From: a@[192.0.2.1]", []),
    ("From: a@bücher.test", ["xn--bcher-kva.test"]),
])
def test_from_domains(field: str, domains: list[str]) -> None:
    msg = (field + "\r\nSubject: x\r\n\r\nbody\r\n").encode()
    assert from_domains(msg) == domains


def test_two_from_fields_both_count() -> None:
    msg = b"From: a@x.test\r\nFrom: b@y.test\r\n\r\n"
    assert from_domains(msg) == ["x.test", "y.test"]


# --- evaluation ---------------------------------------------------------------------------

DNS = {
    "_dmarc.reject.test": ["v=DMARC1; p=reject; sp=quarantine"],
    "_dmarc.quar.test": ["v=DMARC1; p=quarantine"],
    "_dmarc.none.test": ["v=DMARC1; p=none; rua=mailto:r@none.test"],
    "_dmarc.strict.test": ["v=DMARC1; p=reject; adkim=s; aspf=s"],
    "_dmarc.half.test": ["v=DMARC1; p=reject; pct=50"],
    "_dmarc.two.test": ["v=DMARC1; p=reject", "v=DMARC1; p=none"],
    "_dmarc.bad.test": ["v=DMARC1; p=block"],
    "_dmarc.slow.test": TEMPFAIL,
    "_dmarc.mixed.test": ["some other text", "v=DMARC1; p=reject"],
}


def evaluate(from_domain: str, spf_outcome: SpfOutcome | None = None,
             dkim_results: Sequence[DkimResult] = (), *, rng: float = 0.0,
             options: DmarcPolicyOptions | None = None,
             arc: ArcOutcome | None = None) -> DmarcOutcome:
    evaluator = DmarcEvaluator(FakeResolver(DNS), options, rng=lambda: rng)
    return asyncio.run(evaluator.evaluate(from_domain, spf_outcome, dkim_results, arc))


def test_aligned_spf_passes() -> None:
    out = evaluate("reject.test", spf(SpfResult.PASS, "bounces.reject.test"))
    assert (out.result, out.spf_aligned, out.dkim_aligned) == (DmarcResult.PASS, True, False)
    assert (out.policy, out.disposition) == (Policy.REJECT, Policy.NONE)


def test_aligned_dkim_passes_even_when_spf_fails() -> None:
    out = evaluate("reject.test", spf(SpfResult.FAIL, "reject.test"),
                   [dkim(DkimStatus.FAIL, "reject.test"), dkim(DkimStatus.PASS, "reject.test")])
    assert (out.result, out.dkim_aligned) == (DmarcResult.PASS, True)


def test_unaligned_passes_do_not_count() -> None:
    out = evaluate("reject.test", spf(SpfResult.PASS, "other.test"),
                   [dkim(DkimStatus.PASS, "other.test")])
    assert (out.result, out.disposition) == (DmarcResult.FAIL, Policy.REJECT)


def test_strict_alignment() -> None:
    out = evaluate("strict.test", spf(SpfResult.PASS, "mail.strict.test"),
                   [dkim(DkimStatus.PASS, "mail.strict.test")])
    assert out.result is DmarcResult.FAIL
    assert evaluate("strict.test", spf(SpfResult.PASS, "strict.test")).result is DmarcResult.PASS


def test_policies_become_dispositions() -> None:
    assert evaluate("quar.test").disposition is Policy.QUARANTINE
    out = evaluate("none.test")
    assert (out.result, out.disposition) == (DmarcResult.FAIL, Policy.NONE)


def test_subdomain_uses_org_record_and_sp() -> None:
    out = evaluate("news.reject.test")
    assert (out.record_domain, out.policy, out.disposition) == (
        "reject.test", Policy.QUARANTINE, Policy.QUARANTINE)
    assert out.org_domain == "reject.test"


def test_no_record_is_none() -> None:
    out = evaluate("nothing.test", spf(SpfResult.FAIL, "nothing.test"))
    assert (out.result, out.disposition, out.record) == (DmarcResult.NONE, Policy.NONE, None)


def test_non_dmarc_txt_records_are_ignored() -> None:
    assert evaluate("mixed.test").disposition is Policy.REJECT


def test_two_records_mean_no_policy() -> None:
    out = evaluate("two.test")
    assert (out.result, out.disposition) == (DmarcResult.PERMERROR, Policy.NONE)
    assert "more than one" in out.reason


def test_invalid_record_is_permerror() -> None:
    out = evaluate("bad.test")
    assert (out.result, out.disposition) == (DmarcResult.PERMERROR, Policy.NONE)


def test_dns_failure_is_temperror_and_no_action() -> None:
    out = evaluate("slow.test")
    assert (out.result, out.disposition) == (DmarcResult.TEMPERROR, Policy.NONE)


@pytest.mark.parametrize(("draw", "disposition", "sampled_out"), [
    (0.0, Policy.REJECT, False), (0.49, Policy.REJECT, False),
    (0.5, Policy.QUARANTINE, True), (0.99, Policy.QUARANTINE, True)])
def test_pct_sampling_rfc7489_6_6_4(draw: float, disposition: Policy, sampled_out: bool) -> None:
    out = evaluate("half.test", rng=draw)
    assert (out.disposition, out.sampled_out) == (disposition, sampled_out)
    assert out.result is DmarcResult.FAIL


def test_always_accept_overrides_policy() -> None:
    opts = DmarcPolicyOptions(always_accept_from=("reject.test",))
    out = evaluate("news.reject.test", options=opts)
    assert (out.result, out.disposition, out.override) == (
        DmarcResult.FAIL, Policy.NONE, "local_policy")


def test_never_accept_rejects_even_passing_mail() -> None:
    opts = DmarcPolicyOptions(never_accept_from=("none.test",))
    out = evaluate("none.test", spf(SpfResult.PASS, "none.test"), options=opts)
    assert (out.result, out.disposition, out.override) == (
        DmarcResult.PASS, Policy.REJECT, "local_policy")
    assert evaluate("nothing.test", options=opts).disposition is Policy.NONE


def test_trusted_arc_sealer_rescues_forwarded_mail() -> None:
    opts = DmarcPolicyOptions(trusted_arc_sealers=("lists.test",))
    good = ArcOutcome(ArcResult.PASS, 1, sealers=("lists.test",))
    out = evaluate("reject.test", options=opts, arc=good)
    assert (out.disposition, out.override) == (Policy.NONE, "trusted_forwarder")
    untrusted = ArcOutcome(ArcResult.PASS, 1, sealers=("other.test",))
    assert evaluate("reject.test", options=opts, arc=untrusted).disposition is Policy.REJECT
    broken = ArcOutcome(ArcResult.FAIL, 1, sealers=("lists.test",))
    assert evaluate("reject.test", options=opts, arc=broken).disposition is Policy.REJECT


def test_message_with_two_from_domains_gets_the_strictest() -> None:
    evaluator = DmarcEvaluator(FakeResolver(DNS), rng=lambda: 0.0)
    msg = message(from_="a@none.test, b@reject.test")
    out = asyncio.run(evaluator.check(msg, spf(SpfResult.PASS, "none.test"), []))
    assert (out.from_domain, out.disposition) == ("reject.test", Policy.REJECT)


def test_message_without_from_is_permerror() -> None:
    evaluator = DmarcEvaluator(FakeResolver(DNS))
    out = asyncio.run(evaluator.check(b"Subject: x\r\n\r\nbody\r\n", None, []))
    assert (out.result, out.disposition) == (DmarcResult.PERMERROR, Policy.NONE)


def test_lookups_stop_at_the_from_domain_when_it_has_a_record() -> None:
    resolver = FakeResolver(DNS)
    asyncio.run(DmarcEvaluator(resolver).evaluate("reject.test", None, []))
    assert resolver.queries == ["_dmarc.reject.test"]
    resolver.queries.clear()
    asyncio.run(DmarcEvaluator(resolver).evaluate("a.b.reject.test", None, []))
    assert resolver.queries == ["_dmarc.a.b.reject.test", "_dmarc.reject.test"]
