"""DKIM keys, signing and verification (RFC 6376, RFC 8463, RFC 8301), with a fake resolver.

Interoperability with independent implementations (Perl Mail::DKIM, OpenDKIM) and real DNS
is tests/e2e/test_mailauth_dkim_interop.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import stat
from pathlib import Path

import dkim as dkimpy
import pytest

from kittiwake.mailauth.dkim import (
    MAX_SIGNATURES,
    DkimResult,
    DkimStatus,
    DkimVerifier,
    sign,
    signed_header_list,
)
from kittiwake.mailauth.dkimkeys import DkimKey, DkimKeyError, DkimKeyStore, KeyAlgorithm
from support.mailauthfakes import TEMPFAIL, FakeResolver, message

DAY = dt.date(2025, 3, 1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DkimKeyStore:
    ks = DkimKeyStore(tmp_path_factory.mktemp("data") / "dkim")
    ks.generate("a.test", KeyAlgorithm.RSA, today=DAY)
    ks.generate("a.test", KeyAlgorithm.ED25519, today=DAY)
    return ks


@pytest.fixture(scope="module")
def keys(store: DkimKeyStore) -> tuple[DkimKey, ...]:
    return store.active_keys("a.test")


def resolver_for(store: DkimKeyStore, domain: str = "a.test") -> FakeResolver:
    return FakeResolver({name: [text] for name, text in store.dns_records(domain)})


def verify(msg: bytes, resolver: FakeResolver) -> list[DkimResult]:
    return asyncio.run(DkimVerifier(resolver).verify(msg))


# --- keys ---------------------------------------------------------------------------------

def test_keys_are_private_files_under_named_selectors(store: DkimKeyStore) -> None:
    path = store.root / "a.test" / "rsa20250301.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((store.root / "a.test").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (store.root / "a.test" / "ed20250301.key").exists()


def test_first_key_of_each_algorithm_is_active(keys: tuple[DkimKey, ...]) -> None:
    assert [(k.selector, k.algorithm) for k in keys] == [
        ("rsa20250301", KeyAlgorithm.RSA), ("ed20250301", KeyAlgorithm.ED25519)]


def test_txt_records(keys: tuple[DkimKey, ...], store: DkimKeyStore) -> None:
    rsa_key, ed_key = keys
    assert rsa_key.record_name == "rsa20250301._domainkey.a.test"
    assert rsa_key.txt_record.startswith("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A")
    assert len(rsa_key.public_key_b64) == 392  # 2048-bit SubjectPublicKeyInfo
    assert ed_key.txt_record.startswith("v=DKIM1; k=ed25519; p=")
    assert len(ed_key.public_key_b64) == 44  # 32 octets (RFC 8463 §4)
    assert dict(store.dns_records("a.test")) == {k.record_name: k.txt_record for k in keys}


def test_rotation_add_publish_switch(tmp_path: Path) -> None:
    ks = DkimKeyStore(tmp_path / "dkim")
    old = ks.generate("r.test", KeyAlgorithm.ED25519, "old")
    assert ks.active_keys("r.test") == (old,)
    new = ks.generate("r.test", KeyAlgorithm.ED25519, "new")  # not used until switched
    assert ks.active_keys("r.test") == (old,)
    assert {n for n, _ in ks.dns_records("r.test")} == {"old._domainkey.r.test",
                                                        "new._domainkey.r.test"}
    ks.activate("r.test", "new")
    assert ks.active_keys("r.test") == (new,)  # the cached answer is refreshed
    forced = ks.generate("r.test", KeyAlgorithm.ED25519, "now", activate=True)
    assert ks.active_keys("r.test") == (forced,)


def test_existing_selector_is_never_overwritten(tmp_path: Path) -> None:
    ks = DkimKeyStore(tmp_path / "dkim")
    ks.generate("r.test", KeyAlgorithm.ED25519, "s1")
    with pytest.raises(DkimKeyError, match="exists"):
        ks.generate("r.test", KeyAlgorithm.ED25519, "s1")


@pytest.mark.parametrize("selector", ["../x", "a/b", "-a", "a b", "a..b", "s" * 64])
def test_bad_selectors_are_refused(tmp_path: Path, selector: str) -> None:
    with pytest.raises(DkimKeyError):
        DkimKeyStore(tmp_path).generate("a.test", KeyAlgorithm.ED25519, selector)


@pytest.mark.parametrize("domain", ["..", "a/b.test", "../etc", ""])
def test_bad_domains_are_refused(tmp_path: Path, domain: str) -> None:
    with pytest.raises(DkimKeyError):
        DkimKeyStore(tmp_path).generate(domain, KeyAlgorithm.ED25519, "s")


def test_idn_domain_is_stored_as_a_label(tmp_path: Path) -> None:
    ks = DkimKeyStore(tmp_path)
    key = ks.generate("bücher.test", KeyAlgorithm.ED25519, "s")
    assert key.domain == "xn--bcher-kva.test"
    assert ks.active_keys("BÜCHER.test") == (key,)


def test_unknown_domain_has_no_keys(store: DkimKeyStore) -> None:
    assert store.active_keys("nobody.test") == ()
    assert store.keys("nobody.test") == []


def test_missing_key_file_is_reported(store: DkimKeyStore) -> None:
    with pytest.raises(DkimKeyError, match="no DKIM key"):
        store.key("a.test", "nope")


# --- signing ------------------------------------------------------------------------------

def test_header_list_over_signs_every_field() -> None:
    msg = message(extra="Cc: c@c.test\r\nReceived: x\r\nReferences: <r@x>\r\n")
    names = signed_header_list(msg)
    for name in ("from", "subject", "date", "to", "message-id", "mime-version",
                 "content-type", "cc", "references"):
        assert names.count(name) == 2, name  # present once → listed twice (RFC 6376 §8.15)
    for name in ("content-transfer-encoding", "reply-to"):
        assert names.count(name) == 1, name  # absent → may not be added
    assert "in-reply-to" not in names and "received" not in names


def test_signatures_are_relaxed_and_dual(keys: tuple[DkimKey, ...]) -> None:
    headers = sign(message(), "a.test", keys).decode()
    assert headers.count("DKIM-Signature:") == 2
    assert "a=rsa-sha256" in headers and "a=ed25519-sha256" in headers
    assert headers.count("c=relaxed/relaxed") == 2
    assert "s=rsa20250301" in headers and "s=ed20250301" in headers


def test_key_of_another_domain_cannot_sign(keys: tuple[DkimKey, ...]) -> None:
    with pytest.raises(ValueError, match="cannot sign"):
        sign(message(), "other.test", keys)


# --- verifying ----------------------------------------------------------------------------

def test_signed_message_passes_with_both_algorithms(store: DkimKeyStore,
                                                    keys: tuple[DkimKey, ...]) -> None:
    msg = message()
    results = verify(sign(msg, "a.test", keys) + msg, resolver_for(store))
    assert [(r.result, r.algorithm, r.selector, r.domain) for r in results] == [
        (DkimStatus.PASS, "rsa-sha256", "rsa20250301", "a.test"),
        (DkimStatus.PASS, "ed25519-sha256", "ed20250301", "a.test")]
    assert all(len(r.header_b) >= 8 for r in results)
    assert results[0].header_b != results[1].header_b


def test_relaxed_survives_refolding_and_whitespace(store: DkimKeyStore,
                                                   keys: tuple[DkimKey, ...]) -> None:
    msg = message()
    signed = sign(msg, "a.test", keys) + msg
    relayed = signed.replace(b"Subject: Hello", b"SUBJECT:   Hello\r\n ").replace(
        b"see you.", b"see   you.")
    assert {r.result for r in verify(relayed, resolver_for(store))} == {DkimStatus.PASS}


@pytest.mark.parametrize(("change", "reason"), [
    ((b"see you.", b"see you!"), "body hash did not verify"),
    ((b"Subject: Hello", b"Subject: Hellp"), "signature did not verify"),
    ((b"From: Alice <alice@a.test>", b"From: Alice <alice@a.test>\r\nFrom: x@evil.test"),
     "signature did not verify"),  # over-signed: a second From breaks it
    ((b"To: bob@b.test", b"To: bob@b.test\r\nCc: more@evil.test"), "signature did not verify"),
    ((b"To: bob@b.test", b"To: bob@b.test\r\nReply-To: x@evil.test"),
     "signature did not verify"),
])
def test_altered_message_fails(store: DkimKeyStore, keys: tuple[DkimKey, ...],
                               change: tuple[bytes, bytes], reason: str) -> None:
    msg = message()
    altered = (sign(msg, "a.test", keys) + msg).replace(*change)
    results = verify(altered, resolver_for(store))
    assert [(r.result, r.reason) for r in results] == [(DkimStatus.FAIL, reason)] * 2


def test_unsigned_message_has_no_results(store: DkimKeyStore) -> None:
    assert verify(message(), resolver_for(store)) == []


@pytest.mark.parametrize(("records", "status", "reason"), [
    ({}, DkimStatus.PERMERROR, "no key for signature"),
    (TEMPFAIL, DkimStatus.TEMPERROR, "key lookup failed (DNS)"),
    (["v=DKIM1; k=ed25519; p="], DkimStatus.PERMERROR, "key revoked"),
    (["v=DKIM1; k=rsa; p=AAAA"], DkimStatus.PERMERROR, "key type rsa does not match"),
    (["v=DKIM1; k=ed25519; p=!!notbase64"], DkimStatus.PERMERROR, "key syntax"),
    (["v=DKIM1; k=ed25519; h=sha1; p=AAAA"], DkimStatus.PERMERROR, "does not allow sha256"),
    (["this is not a key"], DkimStatus.PERMERROR, ""),
])
def test_key_problems(keys: tuple[DkimKey, ...], records: object, status: DkimStatus,
                      reason: str) -> None:
    ed = keys[1]
    msg = message()
    signed = sign(msg, "a.test", [ed]) + msg
    resolver = FakeResolver()
    if records != {}:
        resolver.records[ed.record_name] = records
    [result] = verify(signed, resolver)
    assert result.result is status
    assert reason in result.reason


def test_wrong_key_published_fails(tmp_path: Path, keys: tuple[DkimKey, ...]) -> None:
    other = DkimKeyStore(tmp_path).generate("a.test", KeyAlgorithm.ED25519, "x")
    msg = message()
    signed = sign(msg, "a.test", [keys[1]]) + msg
    [result] = verify(signed, FakeResolver({keys[1].record_name: [other.txt_record]}))
    assert (result.result, result.reason) == (DkimStatus.FAIL, "signature did not verify")


def test_second_key_record_is_tried(store: DkimKeyStore, keys: tuple[DkimKey, ...]) -> None:
    msg = message()
    signed = sign(msg, "a.test", [keys[1]]) + msg
    resolver = FakeResolver({keys[1].record_name: ["unrelated text", keys[1].txt_record]})
    assert verify(signed, resolver)[0].result is DkimStatus.PASS


def _dkimpy_signed(msg: bytes, key: DkimKey, **kw: object) -> bytes:
    return dkimpy.sign(msg, key.selector.encode(), b"a.test", key.dkimpy_private_key,
                       **kw) + msg  # type: ignore[no-any-return]


def test_rsa_sha1_is_refused_rfc8301(store: DkimKeyStore, keys: tuple[DkimKey, ...]) -> None:
    signed = _dkimpy_signed(message(), keys[0], signature_algorithm=b"rsa-sha1")
    [result] = verify(signed, resolver_for(store))
    assert result.result is DkimStatus.PERMERROR
    assert "RFC 8301" in result.reason


def test_from_must_be_signed_rfc6376_5_4(store: DkimKeyStore, keys: tuple[DkimKey, ...]) -> None:
    signed = _dkimpy_signed(message(), keys[1], signature_algorithm=b"ed25519-sha256",
                            include_headers=[b"from", b"subject"])
    signed = signed.replace(b"h=from : subject", b"h=subject", 1)
    [result] = verify(signed, resolver_for(store))
    assert (result.result, result.reason) == (DkimStatus.PERMERROR, "From field not signed")


def test_expired_signature_is_permerror(store: DkimKeyStore, keys: tuple[DkimKey, ...]) -> None:
    msg = message()
    signed = sign(msg, "a.test", [keys[1]]) + msg
    signed = signed.replace(b"q=dns/txt;", b"q=dns/txt; x=1000;", 1)  # long past
    [result] = verify(signed, resolver_for(store))
    assert result.result is DkimStatus.PERMERROR


@pytest.mark.parametrize("header", [
    b"DKIM-Signature: v=1; a=rsa-sha256; this is not tag=value\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=a.test; s=x\r\n",  # required tags missing
    b"DKIM-Signature: v=2; a=rsa-sha256; b=AAAA; bh=AAAA; d=a.test; h=from; s=x\r\n",
    b"DKIM-Signature: v=1; a=foo-sha256; b=AAAA; bh=AAAA; d=a.test; h=from; s=x\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; b=AAAA; bh=AAAA; d=a/b; h=from; s=x\r\n",
])
def test_malformed_signatures_are_permerror(header: bytes) -> None:
    [result] = verify(header + message(), FakeResolver())
    assert result.result is DkimStatus.PERMERROR


def test_too_many_signatures_are_not_evaluated(store: DkimKeyStore,
                                               keys: tuple[DkimKey, ...]) -> None:
    msg = message()
    one = sign(msg, "a.test", [keys[1]])
    results = verify(one * (MAX_SIGNATURES + 2) + msg, resolver_for(store))
    assert len(results) == MAX_SIGNATURES + 2
    assert [r.result for r in results[:MAX_SIGNATURES]] == [DkimStatus.PASS] * MAX_SIGNATURES
    assert {r.result for r in results[MAX_SIGNATURES:]} == {DkimStatus.NEUTRAL}


def test_identical_b_prefixes_get_longer() -> None:
    from kittiwake.mailauth.dkim import _unique_b_prefixes

    rows = [DkimResult("a.test", "s", "rsa-sha256", DkimStatus.PASS, header_b=b)
            for b in ("ABCDEFGHIJKLMNOP", "ABCDEFGHZZZZ", "QRSTUVWXYZ")]
    assert [r.header_b for r in _unique_b_prefixes(rows)] == ["ABCDEFGHIJKL", "ABCDEFGHZZZZ",
                                                               "QRSTUVWX"]


def test_garbage_header_is_permerror_not_a_crash() -> None:
    msg = b"DKIM-Signature: v=1; d=a.test\r\n\x00\x01 garbage line\r\n" + message()
    results = verify(msg, FakeResolver())
    assert all(r.result is DkimStatus.PERMERROR for r in results)


def test_lookups_happen_once_per_key(store: DkimKeyStore, keys: tuple[DkimKey, ...]) -> None:
    msg = message()
    resolver = resolver_for(store)
    verify(sign(msg, "a.test", keys) * 3 + msg, resolver)
    assert sorted(resolver.queries) == sorted(k.record_name for k in keys)


def test_files_written_by_keygen_are_readable_by_openssl_tools(store: DkimKeyStore) -> None:
    # PKCS#8 PEM: what openssl pkey and OpenDKIM read.
    pem = (store.root / "a.test" / "ed20250301.key").read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert os.path.getsize(store.root / "a.test" / "rsa20250301.key") > 1600


# --- RFC 8463 appendix A: signatures made by the RFC's authors ------------------------------

RFC8463_MESSAGE = "\r\n".join([
    "DKIM-Signature: v=1; a=ed25519-sha256; c=simple/simple; ",
    " d=football.example.com; i=@football.example.com; ",
    " q=dns/txt; s=brisbane; t=1518460054; h=from : to : ",
    " subject : date : message-id : from : subject : date; ",
    " bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=; ",
    " b=9/dsDChY0YMTtD5Eyw3wx7x22BlSJP7M5ECbJ7GWrR45nXlTCGb8l0YB",
    " o0wBLR++X5LqmsxXaOYLLJe46l10AQ==",
    "DKIM-Signature: v=1; a=rsa-sha256; c=simple/simple; ",
    " d=football.example.com; i=@football.example.com; ",
    " q=dns/txt; s=test; t=1527915362; h=from : to : subject : ",
    " date : message-id : from : subject : date; ",
    " bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=; ",
    " b=icKcLSEZYXJ95flvWE8FT6hl5iqd8MC/LEKYH0QjsqYy6MO/4pgVNCZH",
    " l/RAXAuADxE/40Fg7uTlxwwD1hjN2Ple6J//cJfslBdDOq6zTVbne1dqtl",
    " NOat7iamJ1AfRqyG+ja7a2AZsrpUuJ7VA6O+0zRYPqpwMEkEFIzI9i/Xk=",
    "From: Joe SixPack <joe@football.example.com>",
    "To: Suzie Q <suzie@shopping.example.net>",
    "Subject: Is dinner ready?",
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)",
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>",
    "",
    "Hi.",
    "",
    "We lost the game.  Are you hungry yet?",
    "",
    "Joe.",
    "",
]).encode()
RFC8463_KEYS = {  # RFC 8463 appendix A.2
    "brisbane._domainkey.football.example.com": [
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
    "test._domainkey.football.example.com": [
        "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08"
        "a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMK"
        "rM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"],
}


def test_rfc8463_example_verifies() -> None:
    results = verify(RFC8463_MESSAGE, FakeResolver(RFC8463_KEYS))
    assert [(r.algorithm, r.selector, r.result) for r in results] == [
        ("ed25519-sha256", "brisbane", DkimStatus.PASS),
        ("rsa-sha256", "test", DkimStatus.PASS)]
    altered = verify(RFC8463_MESSAGE.replace(b"hungry", b"thirsty"), FakeResolver(RFC8463_KEYS))
    assert {r.result for r in altered} == {DkimStatus.FAIL}
