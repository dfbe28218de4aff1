"""DKIM (and ARC) interoperability with independent implementations, over real DNS.

Keys come from Kittiwake's key store; their TXT records are served by NSD on loopback.
Both directions are checked with Perl's Mail::DKIM (libmail-dkim-perl) and OpenDKIM
(opendkim-tools): what Kittiwake signs verifies there, what they sign verifies here, and a
message altered after signing fails everywhere. Limits of the Debian 12 tools, asserted
so a future upgrade shows up:
- Mail::DKIM 1.20230212 has no ed25519-sha256: it reports our Ed25519 signature as an
  unsupported algorithm (and the RSA one as pass); OpenDKIM 2.11 verifies both.
- `opendkim-testmsg` signs only with rsa-sha1 (no option to choose), which RFC 8301 §3.1
  forbids verifiers to accept: Kittiwake reports it as permerror, by design.
- `opendkim-testmsg` reads its nameserver from /etc/resolv.conf (port 53 only); those
  tests run it in a private mount namespace against an NSD on port 53 of 127.83.75.1,
  and are skipped where that is not allowed (see support.dkimtools).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from kittiwake.dns import DnsResolver
from kittiwake.mailauth.arc import ArcResult, verify_arc
from kittiwake.mailauth.check import AuthSettings, InboundAuthenticator, seal_forwarded
from kittiwake.mailauth.dkim import DkimResult, DkimStatus, DkimVerifier, sign
from kittiwake.mailauth.dkimkeys import DkimKey, DkimKeyStore, KeyAlgorithm
from support import dkimtools as tools
from support.dnsserver import DnsServer, nsd_available, requires_nsd, txt_record
from support.mailauthfakes import message

pytestmark = requires_nsd

OPENDKIM_NS = "127.83.75.1"  # any 127/8 address: opendkim-testmsg can only use port 53

needs_perl = pytest.mark.skipif(not tools.perl_available(),
                                reason="needs libmail-dkim-perl")
needs_opendkim = pytest.mark.skipif(not tools.opendkim_available(),
                                    reason="needs opendkim-tools")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DkimKeyStore:
    ks = DkimKeyStore(tmp_path_factory.mktemp("interop") / "dkim")
    ks.generate("a.test", KeyAlgorithm.RSA, "rsa1")
    ks.generate("a.test", KeyAlgorithm.ED25519, "ed1")
    ks.generate("fwd.test", KeyAlgorithm.RSA, "arc1")
    return ks


def zones(store: DkimKeyStore) -> dict[str, str]:
    return {domain: "\n".join(txt_record(name + ".", text)
                              for name, text in store.dns_records(domain))
            for domain in store.domains()}


@pytest.fixture(scope="module")
def dns(store: DkimKeyStore) -> Iterator[DnsServer]:
    with DnsServer(zones(store)) as server:
        yield server


@pytest.fixture(scope="module")
def dns53(store: DkimKeyStore) -> Iterator[DnsServer]:
    if not nsd_available() or not tools.opendkim_dns_available():
        pytest.skip("cannot give opendkim-testmsg a private resolv.conf (unshare -rm)")
    try:
        server = DnsServer(zones(store), host=OPENDKIM_NS, port=53).start()
    except RuntimeError as exc:
        pytest.skip(f"cannot run NSD on {OPENDKIM_NS}:53: {str(exc)[:200]}")
    yield server
    server.stop()


def keyfile(tmp_path: Path, key: DkimKey) -> Path:
    path = tmp_path / f"{key.selector}.pem"
    # PKCS#1 for RSA (what Mail::DKIM::PrivateKey and opendkim read), PKCS#8 otherwise.
    path.write_bytes(key.dkimpy_private_key if key.algorithm is KeyAlgorithm.RSA
                     else key.private_pem)
    return path


def signed(store: DkimKeyStore, *algorithms: KeyAlgorithm) -> bytes:
    keys = [k for k in store.active_keys("a.test") if k.algorithm in algorithms]
    msg = message()
    return sign(msg, "a.test", keys) + msg


def kittiwake_verify(msg: bytes, server: DnsServer) -> list[DkimResult]:
    return asyncio.run(DkimVerifier(DnsResolver(server.settings())).verify(msg))


ALTER = (b"see you.", b"see you!")


# --- Perl Mail::DKIM -----------------------------------------------------------------------

@needs_perl
def test_kittiwake_signature_verifies_in_mail_dkim(store: DkimKeyStore, dns: DnsServer) -> None:
    overall, sigs = tools.perl_verify(signed(store, KeyAlgorithm.RSA, KeyAlgorithm.ED25519),
                                      dns.address)
    assert overall == "pass"
    assert sigs[0] == ("a.test", "rsa1", "rsa-sha256", "pass")
    # Debian 12's Mail::DKIM predates ed25519-sha256 (see the module docstring).
    assert sigs[1][:3] == ("a.test", "ed1", "ed25519-sha256")
    assert "unsupported algorithm" in sigs[1][3]


@needs_perl
def test_altered_message_fails_in_mail_dkim(store: DkimKeyStore, dns: DnsServer) -> None:
    overall, sigs = tools.perl_verify(signed(store, KeyAlgorithm.RSA).replace(*ALTER),
                                      dns.address)
    assert overall == "fail"
    assert sigs[0][3] == "fail (body has been altered)"


@needs_perl
def test_mail_dkim_signature_verifies_in_kittiwake(store: DkimKeyStore, dns: DnsServer,
                                                   tmp_path: Path) -> None:
    key = store.key("a.test", "rsa1")
    msg = tools.perl_sign(message(), "a.test", "rsa1", keyfile(tmp_path, key))
    assert msg.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=a.test;")
    [result] = kittiwake_verify(msg, dns)
    assert (result.result, result.domain, result.selector) == (DkimStatus.PASS, "a.test",
                                                               "rsa1")
    [altered] = kittiwake_verify(msg.replace(*ALTER), dns)
    assert altered.result is DkimStatus.FAIL


@needs_perl
def test_kittiwake_arc_seal_verifies_in_mail_dkim(store: DkimKeyStore, dns: DnsServer) -> None:
    resolver = DnsResolver(dns.settings())
    auth = InboundAuthenticator(AuthSettings(hostname="mx.fwd.test", dns=dns.settings()),
                                resolver)
    verdict = asyncio.run(auth.authenticate(signed(store, KeyAlgorithm.RSA), "192.0.2.1",
                                            "mail.a.test", "alice@a.test"))
    sealed = seal_forwarded(verdict.content, "fwd.test", store, "mx.fwd.test")
    assert asyncio.run(verify_arc(sealed, resolver)).result is ArcResult.PASS
    result, detail = tools.perl_arc_verify(sealed, dns.address)
    assert result == "pass", detail
    result, _ = tools.perl_arc_verify(sealed.replace(*ALTER), dns.address)
    assert result == "fail"


# --- OpenDKIM ------------------------------------------------------------------------------

@needs_opendkim
@pytest.mark.parametrize("algorithms", [(KeyAlgorithm.RSA,), (KeyAlgorithm.ED25519,),
                                        (KeyAlgorithm.RSA, KeyAlgorithm.ED25519)],
                         ids=["rsa", "ed25519", "dual"])
def test_kittiwake_signature_verifies_in_opendkim(store: DkimKeyStore, dns53: DnsServer,
                                                  algorithms: tuple[KeyAlgorithm, ...]) -> None:
    status, output = tools.opendkim_verify(signed(store, *algorithms), dns53.host)
    assert (status, output) == (0, "")


@needs_opendkim
@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA, KeyAlgorithm.ED25519],
                         ids=["rsa", "ed25519"])
def test_altered_message_fails_in_opendkim(store: DkimKeyStore, dns53: DnsServer,
                                           algorithm: KeyAlgorithm) -> None:
    status, output = tools.opendkim_verify(signed(store, algorithm).replace(*ALTER),
                                           dns53.host)
    assert status != 0
    assert "Bad signature" in output


@needs_opendkim
def test_opendkim_testmsg_signature_is_rsa_sha1_which_rfc8301_refuses(
        store: DkimKeyStore, dns: DnsServer, tmp_path: Path) -> None:
    key = store.key("a.test", "rsa1")
    msg = tools.opendkim_sign(message(), "a.test", "rsa1", keyfile(tmp_path, key))
    assert b"a=rsa-sha1;" in msg.split(b"\r\n\r\n", 1)[0]
    [result] = kittiwake_verify(msg, dns)
    assert (result.result, result.domain, result.selector) == (DkimStatus.PERMERROR, "a.test",
                                                               "rsa1")
    assert "RFC 8301" in result.reason
