"""ARC (RFC 8617): sealing forwarded mail and verifying chains, with a fake resolver."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kittiwake.mailauth.arc import ArcOutcome, ArcResult, arc_seal, verify_arc
from kittiwake.mailauth.authresults import authentication_results
from kittiwake.mailauth.dkimkeys import DkimKeyStore, KeyAlgorithm
from support.mailauthfakes import TEMPFAIL, FakeResolver, message


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DkimKeyStore:
    ks = DkimKeyStore(tmp_path_factory.mktemp("arc") / "dkim")
    ks.generate("fwd.test", KeyAlgorithm.RSA, "arc1")
    ks.generate("fwd.test", KeyAlgorithm.ED25519, "ed1")
    ks.generate("lists.test", KeyAlgorithm.RSA, "arc2")
    return ks


def resolver(store: DkimKeyStore) -> FakeResolver:
    fake = FakeResolver()
    for domain in store.domains():
        for name, text in store.dns_records(domain):
            fake.add(name, text)
    return fake


def seal(store: DkimKeyStore, msg: bytes, domain: str, host: str, arc: ArcOutcome) -> bytes:
    """What a forwarder does: record its results, then seal."""
    with_ar = authentication_results(host, arc=arc) + msg
    key = store.active_key(domain, KeyAlgorithm.RSA)
    assert key is not None
    return arc_seal(with_ar, key, host) + with_ar


def verify(msg: bytes, fake: FakeResolver) -> ArcOutcome:
    return asyncio.run(verify_arc(msg, fake))


def test_no_chain_is_none(store: DkimKeyStore) -> None:
    assert verify(message(), resolver(store)) == ArcOutcome(ArcResult.NONE)


def test_sealed_message_verifies(store: DkimKeyStore) -> None:
    sealed = seal(store, message(), "fwd.test", "mx.fwd.test", ArcOutcome(ArcResult.NONE))
    assert sealed.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=fwd.test; s=arc1;")
    assert b"ARC-Authentication-Results: i=1; mx.fwd.test;" in sealed
    out = verify(sealed, resolver(store))
    assert (out.result, out.instances, out.sealers) == (ArcResult.PASS, 1, ("fwd.test",))


def test_two_hops_chain(store: DkimKeyStore) -> None:
    fake = resolver(store)
    hop1 = seal(store, message(), "fwd.test", "mx.fwd.test", ArcOutcome(ArcResult.NONE))
    first = verify(hop1, fake)
    hop2 = seal(store, hop1.replace(b"see you.", b"see you.\r\n-- list footer"),
                "lists.test", "mx.lists.test", first)
    assert b"ARC-Seal: i=2; cv=pass;" in hop2
    out = verify(hop2, fake)
    assert (out.result, out.instances, out.last_sealer) == (ArcResult.PASS, 2, "lists.test")
    assert out.sealers == ("lists.test", "fwd.test")


def test_changes_after_sealing_fail(store: DkimKeyStore) -> None:
    sealed = seal(store, message(), "fwd.test", "mx.fwd.test", ArcOutcome(ArcResult.NONE))
    out = verify(sealed.replace(b"see you.", b"see me."), resolver(store))
    assert out.result is ArcResult.FAIL
    assert "did not validate" in out.reason


def test_missing_key_fails(store: DkimKeyStore) -> None:
    sealed = seal(store, message(), "fwd.test", "mx.fwd.test", ArcOutcome(ArcResult.NONE))
    assert verify(sealed, FakeResolver()).result is ArcResult.FAIL


def test_dns_failure_is_named(store: DkimKeyStore) -> None:
    sealed = seal(store, message(), "fwd.test", "mx.fwd.test", ArcOutcome(ArcResult.NONE))
    out = verify(sealed, FakeResolver({"arc1._domainkey.fwd.test": TEMPFAIL}))
    assert out.result is ArcResult.FAIL
    assert "DNS" in out.reason


def test_without_our_results_there_is_nothing_to_seal(store: DkimKeyStore) -> None:
    key = store.active_key("fwd.test", KeyAlgorithm.RSA)
    assert key is not None
    assert arc_seal(message(), key, "mx.fwd.test") == b""


def test_ed25519_cannot_seal(store: DkimKeyStore) -> None:
    key = store.active_key("fwd.test", KeyAlgorithm.ED25519)
    assert key is not None
    with pytest.raises(ValueError, match="rsa-sha256"):
        arc_seal(message(), key, "mx.fwd.test")


def test_incomplete_set_fails(tmp_path: Path) -> None:
    msg = b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=x.test; s=s; b=AAAA\r\n" + message()
    assert verify(msg, FakeResolver()).result is ArcResult.FAIL


def test_absurd_instance_numbers_fail_fast() -> None:
    msg = b"ARC-Seal: i=51; cv=pass; a=rsa-sha256; d=x.test; s=s; b=AAAA\r\n" + message()
    out = verify(msg, FakeResolver())
    assert (out.result, out.instances) == (ArcResult.FAIL, 51)
