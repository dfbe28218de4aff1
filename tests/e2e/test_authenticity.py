"""Issue 4 end to end: two Kittiwake servers and a real DNS server publishing exactly what
`kittiwake dns` says to publish (MX, SPF, DKIM, DMARC …).

Mail from a.test (127.0.0.5) to b.test (127.0.0.6) arrives with spf=pass dkim=pass
dmarc=pass; a forged From: a.test sent from an unlisted address (127.0.0.7) lands in Junk
under p=quarantine and is refused under p=reject; `kittiwake dns a.test --check` is all
good and names a record once it is removed.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSWORD, QUEUE_FAST, Server, free_port, port_free, wait_mail

A_HOST, B_HOST, FORGER = "127.0.0.5", "127.0.0.6", "127.0.0.7"


@dataclass
class AuthPair:
    a: Server
    b: Server
    dns: object
    zones: dict[str, str]

    def republish(self, origin: str, zone: str) -> None:
        """Serve a changed zone on the same port (NSD restarted)."""
        self.zones[origin] = zone
        self.dns.stop(remove=False)  # type: ignore[attr-defined]
        self.dns.zones = dict(self.zones)  # type: ignore[attr-defined]
        self.dns.start()  # type: ignore[attr-defined]


def _server(root: Path, host: str, hostname: str, kinds: dict[str, int], dns_port: int) -> Server:
    root.mkdir()
    srv = Server(root=root, host=host, ports=kinds)
    srv.write_config({"shutdown_grace": 1.0}, hostname=hostname, sections={
        "queue": dict(QUEUE_FAST),
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": 2.0},
        "mailauth": {"verify": True, "public_addresses": [host]},
        "delivery": {"source_address": host},
    })
    return srv


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthPair]:
    from support.dnsserver import DnsServer, free_udp_tcp_port, nsd_available

    if not nsd_available():
        pytest.skip("needs nsd (apt-get install nsd)")
    for host in (A_HOST, B_HOST):
        if not port_free(host, 25):
            pytest.fail(f"port 25 on {host} is held by another process")
    root = tmp_path_factory.mktemp("auth")
    dns_port = free_udp_tcp_port()
    a = _server(root / "a", A_HOST, "mx.a.test",
                {"smtp": 25, "submission": free_port(A_HOST)}, dns_port)
    b = _server(root / "b", B_HOST, "mx.b.test", {"smtp": 25}, dns_port)
    a.cli("domain", "add", "a.test")  # also makes the DKIM keys (RSA + Ed25519)
    a.add_user("alice@a.test", PASSWORD)
    b.cli("domain", "add", "b.test")
    b.add_user("bob@b.test", PASSWORD)
    # The zones are exactly what the operator is told to publish.
    zones = {"a.test": a.cli("dns", "a.test").stdout, "b.test": b.cli("dns", "b.test").stdout}
    dns = DnsServer(zones, port=dns_port).start()
    try:
        a.start()
        b.start()
        yield AuthPair(a, b, dns, zones)
    finally:
        a.stop()
        b.stop()
        dns.stop()


def _auth_results(stored: bytes) -> str:
    head = stored.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ")  # RFC 5322 §2.2.3
    fields = [f for f in unfolded.split("\r\n") if f.lower().startswith("authentication-results:")]
    assert len(fields) == 1, head
    return " ".join(fields[0].split())


def _forge(pair: AuthPair, marker: str) -> tuple[int, bytes]:
    """From an address a.test's SPF does not list, claiming to be alice@a.test."""
    msg = (f"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: {marker}\r\n"
           f"Message-ID: <{marker}@a.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
           "Please wire the money.\r\n").encode()
    with smtplib.SMTP(B_HOST, 25, timeout=30, source_address=(FORGER, 0)) as c:
        c.ehlo("forger.example")
        c.mail("alice@a.test")
        c.rcpt("bob@b.test")
        return c.data(msg)


def test_mail_from_a_to_b_passes_spf_dkim_and_dmarc(pair: AuthPair) -> None:
    marker = f"auth-ok-{time.time_ns()}"
    msg = (f"From: Alice <alice@a.test>\r\nTo: Bob <bob@b.test>\r\nSubject: {marker}\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           "Signed by a.test, checked by b.test.\r\n").encode()
    ctx = ssl.create_default_context(cafile=str(pair.a.cert))
    ctx.check_hostname = False
    with smtplib.SMTP(A_HOST, pair.a.ports["submission"], timeout=30) as c:
        c.starttls(context=ctx)
        c.login("alice@a.test", PASSWORD)
        c.sendmail("alice@a.test", ["bob@b.test"], msg)
    [stored] = wait_mail(pair.b, "bob@b.test", marker.encode(), timeout=30)
    results = _auth_results(stored)
    assert "mx.b.test" in results
    assert "spf=pass" in results, results
    assert "dkim=pass" in results and "header.d=a.test" in results, results
    assert "dmarc=pass" in results and "header.from=a.test" in results, results
    assert stored.count(b"DKIM-Signature:") == 2  # RSA and Ed25519 (RFC 8463)


def test_forged_from_lands_in_junk_under_quarantine(pair: AuthPair) -> None:
    assert "p=quarantine" in pair.zones["a.test"]
    marker = f"forged-q-{time.time_ns()}"
    code, _ = _forge(pair, marker)
    assert code == 250
    deadline = time.monotonic() + 10
    found: list[bytes] = []
    while time.monotonic() < deadline and not found:
        found = [m for m in pair.b.messages("bob@b.test", ".Junk") if marker.encode() in m]
        time.sleep(0.1)
    assert found, "not in Junk"
    assert not [m for m in pair.b.messages("bob@b.test") if marker.encode() in m]
    results = _auth_results(found[0])
    assert "spf=fail" in results and "dmarc=fail" in results, results


def test_forged_from_is_refused_under_reject(pair: AuthPair) -> None:
    pair.republish("a.test", pair.zones["a.test"].replace("p=quarantine", "p=reject"))
    try:
        marker = f"forged-r-{time.time_ns()}"
        code, reply = _forge(pair, marker)
        assert code == 550 and reply.startswith(b"5.7.1"), (code, reply)
        stored = pair.b.messages("bob@b.test") + pair.b.messages("bob@b.test", ".Junk")
        assert not [m for m in stored if marker.encode() in m]
    finally:
        pair.republish("a.test", pair.zones["a.test"].replace("p=reject", "p=quarantine"))


def test_dns_check_is_all_good_and_names_a_removed_record(pair: AuthPair) -> None:
    ok = pair.a.cli("dns", "a.test", "--check", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PROBLEM" not in ok.stdout
    original = pair.zones["a.test"]
    without_dmarc = "\n".join(line for line in original.splitlines()
                              if not line.startswith("_dmarc."))
    pair.republish("a.test", without_dmarc)
    try:
        bad = pair.a.cli("dns", "a.test", "--check", check=False)
        assert bad.returncode == 1
        problems = [line for line in bad.stdout.splitlines() if line.startswith("PROBLEM")]
        assert len(problems) == 1 and "_dmarc.a.test" in problems[0], bad.stdout
    finally:
        pair.republish("a.test", original)
