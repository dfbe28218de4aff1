"""Outbound delivery to a real Kittiwake server: STARTTLS (RFC 3207) with and without
certificate verification, SIZE (RFC 1870), SMTPUTF8 (RFC 6531) and per-recipient replies.

The server's self-signed certificate names `mx.test`, so the zone makes `mx.test` the MX host
of `kw.mx.test`: verified TLS then checks the certificate against the MX host name.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from conftest import Server, body_of, free_port
from test_smtpclient import message, send, settings

from kittiwake.dns import DnsResolver
from kittiwake.smtpclient import DeliveryResult, Destination
from support.dnsserver import DnsServer, dns_server_fixture

HOST = "127.0.0.71"
ALICE, UTF8_USER = "alice@kw.mx.test", "用户@kw.mx.test"
MAX_SIZE = 50_000
MSG = ("From: Jörg <jörg@sender.test>\r\nTo: alice@kw.mx.test\r\nSubject: Grüße\r\n\r\n"
       "Hallo ✓\r\n.dot\r\n").encode()

dns = dns_server_fixture({"mx.test": f"@ A {HOST}\nkw MX 10 mx.test.\n"})


@pytest.fixture(scope="module")
def kittiwake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("kittiwake")
    server = Server(root=root, host=HOST, ports={"smtp": free_port(HOST)})
    server.write_config({"max_message_size": MAX_SIZE})
    server.cli("domain", "add", "kw.mx.test")
    for user in (ALICE, UTF8_USER):
        server.add_user(user)
    server.start()
    yield server
    server.stop()


def test_per_recipient_replies_over_opportunistic_tls(dns: DnsServer,
                                                      kittiwake: Server) -> None:
    results = send(dns, kittiwake.smtp, message(ALICE, "nobody@kw.mx.test", UTF8_USER,
                                                content=MSG, smtputf8=True, eight_bit=True))
    alice, nobody, utf8_user = results
    assert alice.delivered and utf8_user.delivered and alice.tls and alice.host == "mx.test"
    assert nobody.permanent and (nobody.reply.code, nobody.reply.enhanced) == (550, "5.1.1")
    for user in (ALICE, UTF8_USER):
        [stored] = [m for m in kittiwake.messages(user) if b"Subject: Gr" in m]
        assert body_of(stored) == MSG
        assert b"with UTF8SMTPS" in stored  # SMTPUTF8 over TLS (RFC 6531 §3.7.3)


def test_required_tls_verifies_the_mx_host_certificate(dns: DnsServer,
                                                       kittiwake: Server) -> None:
    [result] = send(dns, kittiwake.smtp, message(ALICE), tls="required", tls_verify=True,
                    ca_file=str(kittiwake.cert))
    assert result.delivered and result.tls


def test_required_tls_with_an_untrusted_certificate_is_transient(
        dns: DnsServer, kittiwake: Server, tmp_path: Path) -> None:
    other_ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    before = len(kittiwake.messages(ALICE))
    [result] = send(dns, kittiwake.smtp, message(ALICE), tls="required", tls_verify=True,
                    ca_file=str(other_ca))
    assert not result.delivered and not result.permanent
    assert result.reply.enhanced == "4.7.5" and "certificate" in result.reply.lines[0]
    assert len(kittiwake.messages(ALICE)) == before


def test_message_over_the_advertised_size_bounces_unsent(dns: DnsServer,
                                                         kittiwake: Server) -> None:
    big = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 1000
    assert len(big) > MAX_SIZE
    [result] = send(dns, kittiwake.smtp, message(ALICE, content=big))
    assert result.permanent and (result.reply.code, result.reply.enhanced) == (552, "5.3.4")
    assert str(MAX_SIZE) in result.reply.lines[0]


def test_failed_tls_handshake_is_retried_in_plain_text(dns: DnsServer,
                                                       kittiwake: Server) -> None:
    # Like Postfix at security level "may". The client side is made unable to agree on a
    # cipher (the server wants forward-secret AEAD suites), so the handshake really fails.
    broken = ssl.create_default_context()
    broken.check_hostname, broken.verify_mode = False, ssl.CERT_NONE
    broken.maximum_version = ssl.TLSVersion.TLSv1_2
    broken.set_ciphers("AES128-SHA")

    async def run() -> list[DeliveryResult]:
        destination = Destination("kw.mx.test", settings(kittiwake.smtp),
                                  DnsResolver(dns.settings()))
        destination._tls_context = broken
        async with destination:
            return await destination.send(message(ALICE, content=b"Subject: plain\r\n\r\nx\r\n"))

    [result] = asyncio.run(asyncio.wait_for(run(), 30))
    assert result.delivered and not result.tls
    assert any(b"Subject: plain" in m for m in kittiwake.messages(ALICE))
