"""Outbound delivery end to end: real DNS (NSD) and real SMTP servers (Postfix's smtp-sink) on
loopback addresses. Each destination in the zone has its own 127.0.0.x; a test starts the
servers it needs there on a free port, which `ClientSettings.port` points at."""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, wait_port

from kittiwake.dns import DnsResolver
from kittiwake.smtpclient import (
    ClientSettings,
    DeliveryResult,
    OutboundMessage,
    Recipient,
    deliver,
)
from support.dnsserver import DnsServer, dns_server_fixture

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
pytestmark = pytest.mark.skipif(not Path(SMTP_SINK).exists(), reason="needs postfix (smtp-sink)")

ZONE = """
pref            MX 10 mx1.pref
pref            MX 20 mx2.pref
mx1.pref        A 127.0.0.11
mx2.pref        A 127.0.0.12
fallback        MX 10 down.fallback
fallback        MX 20 up.fallback
down.fallback   A 127.0.0.21
up.fallback     A 127.0.0.22
implicit        A 127.0.0.31
null            MX 0 .
alldown         MX 10 a.alldown
alldown         MX 20 b.alldown
a.alldown       A 127.0.0.41
b.alldown       A 127.0.0.42
noaddr          MX 10 ghost.noaddr
farm            MX 10 hosts.farm
hosts.farm      A 127.0.0.51
hosts.farm      A 127.0.0.52
d               MX 10 mx.d
mx.d            A 127.0.0.61
xn--bcher-kva   MX 10 mx.d
"""
D = "127.0.0.61"  # the all-purpose destination d.mx.test
MSG = (b"From: a@sender.test\r\nTo: u@d.mx.test\r\nSubject: hello\r\nMessage-ID: <1@sender.test>"
       b"\r\n\r\nFirst line\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n")

dns = dns_server_fixture({"mx.test": ZONE})


@dataclass
class Dumped:
    """One message as smtp-sink wrote it (its dump format turns CRLF into LF)."""

    helo: str
    proto: str
    mail: str
    rcpts: list[str]
    content: bytes


@dataclass
class Sink:
    host: str
    port: int
    flags: tuple[str, ...]
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    dumps: Path = field(init=False)

    def __post_init__(self) -> None:
        self.dumps = self.root / f"sink-{self.host}"
        self.dumps.mkdir(parents=True, exist_ok=True)

    def start(self) -> Sink:
        user = ["-u", getpass.getuser()] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [SMTP_SINK, *user, "-t", "20", *self.flags, "-d", f"{self.dumps}/%M.",
             f"{self.host}:{self.port}", "64"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.host, self.port, timeout=5)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.proc = None

    def messages(self) -> list[Dumped]:
        out = []
        files = sorted(self.dumps.rglob("*.*"), key=lambda p: p.stat().st_mtime_ns)
        for path in files:
            head, _, rest = path.read_bytes().partition(b"\nReceived: ")
            fields = [line.split(": ", 1) for line in head.decode().split("\n") if ": " in line]
            content = rest.split(b"\n", 3)[3]  # the three-line Received header
            out.append(Dumped(
                helo=next((v for k, v in fields if k == "X-Helo-Args"), ""),
                proto=next(v for k, v in fields if k == "X-Client-Proto"),
                mail=next(v for k, v in fields if k == "X-Mail-Args"),
                rcpts=[v for k, v in fields if k == "X-Rcpt-Args"],
                content=content.removesuffix(b"\n")))  # the dump adds an empty line
        return out


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def sinks(tmp_path: Path, port: int) -> Iterator[Callable[..., Sink]]:
    started: list[Sink] = []

    def start(host: str, *flags: str) -> Sink:
        sink = Sink(host, port, flags, tmp_path).start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


def settings(port: int, **kw: Any) -> ClientSettings:
    base: dict[str, Any] = dict(helo_name="client.sender.test", port=port, connect_timeout=2.0,
                                greeting_timeout=5.0, command_timeout=5.0, mail_timeout=5.0,
                                rcpt_timeout=5.0, data_init_timeout=5.0,
                                data_final_timeout=5.0, quit_timeout=2.0)
    base.update(kw)
    return ClientSettings(**base)


def message(*rcpts: str | Recipient, content: bytes | Path = MSG, **kw: Any) -> OutboundMessage:
    recipients = tuple(r if isinstance(r, Recipient) else Recipient(r) for r in rcpts)
    return OutboundMessage(kw.pop("sender", "a@sender.test"), recipients, content, **kw)


def send(dns: DnsServer, port: int, msg: OutboundMessage, **kw: Any) -> list[DeliveryResult]:
    started = time.monotonic()
    results = asyncio.run(asyncio.wait_for(
        deliver(msg, settings(port, **kw), DnsResolver(dns.settings())), 30))
    assert time.monotonic() - started < 15
    return results


def crlf(content: bytes) -> bytes:
    return content.replace(b"\r\n", b"\n")


# --- routing -----------------------------------------------------------------------------------

def test_lowest_preference_mx_gets_the_message(dns: DnsServer, port: int, sinks: Any) -> None:
    first, second = sinks("127.0.0.11"), sinks("127.0.0.12")
    [result] = send(dns, port, message("u@pref.mx.test"))
    assert result.delivered and not result.permanent
    assert (result.host, result.address) == ("mx1.pref.mx.test", "127.0.0.11")
    assert result.reply.code == 250 and result.reply.enhanced == "2.0.0"
    [dumped] = first.messages()
    assert second.messages() == []
    assert dumped.content == crlf(MSG)  # dot-stuffed on the wire, intact on arrival
    assert dumped.mail == "<a@sender.test>" and dumped.rcpts == ["<u@pref.mx.test>"]
    assert (dumped.helo, dumped.proto) == ("client.sender.test", "ESMTP")


def test_next_mx_is_tried_when_the_first_is_down(dns: DnsServer, port: int, sinks: Any) -> None:
    up = sinks("127.0.0.22")  # nothing listens on down.fallback (127.0.0.21)
    [result] = send(dns, port, message("u@fallback.mx.test"))
    assert result.delivered and result.host == "up.fallback.mx.test"
    assert len(up.messages()) == 1


def test_host_with_a_down_address_is_reached_on_its_other_address(
        dns: DnsServer, port: int, sinks: Any) -> None:
    sinks("127.0.0.52")
    [result] = send(dns, port, message("u@farm.mx.test"))
    assert result.delivered and result.address == "127.0.0.52"


def test_greeting_4xx_moves_on_to_the_next_mx(dns: DnsServer, port: int, sinks: Any) -> None:
    busy, fine = sinks("127.0.0.11", "-r", "CONNECT"), sinks("127.0.0.12")
    [result] = send(dns, port, message("u@pref.mx.test"))
    assert result.delivered and result.host == "mx2.pref.mx.test"
    assert busy.messages() == [] and len(fine.messages()) == 1


def test_domain_without_mx_is_delivered_to_its_address(dns: DnsServer, port: int,
                                                       sinks: Any) -> None:
    sink = sinks("127.0.0.31")
    [result] = send(dns, port, message("u@implicit.mx.test"))
    assert result.delivered and result.host == "implicit.mx.test"
    assert len(sink.messages()) == 1


def test_null_mx_bounces_at_once(dns: DnsServer, port: int) -> None:
    [result] = send(dns, port, message("u@null.mx.test"))
    assert result.permanent and not result.delivered and result.host is None
    assert (result.reply.code, result.reply.enhanced) == (556, "5.1.10")  # RFC 7505 §4.2


def test_nonexistent_domain_bounces(dns: DnsServer, port: int) -> None:
    [result] = send(dns, port, message("u@nowhere.mx.test"))
    assert result.permanent and result.reply.enhanced == "5.1.2"


def test_mx_hosts_without_addresses_bounce(dns: DnsServer, port: int) -> None:
    [result] = send(dns, port, message("u@noaddr.mx.test"))
    assert result.permanent and result.reply.enhanced == "5.4.4"


def test_every_mx_down_is_transient(dns: DnsServer, port: int) -> None:
    results = send(dns, port, message("u@alldown.mx.test", "v@alldown.mx.test"))
    for result in results:
        assert not result.permanent and not result.delivered
        assert (result.reply.code, result.reply.enhanced) == (451, "4.4.1")
        assert "b.alldown.mx.test" in result.reply.lines[0]  # the last host tried


def test_dns_failure_is_transient(dns: DnsServer, port: int) -> None:
    [result] = send(dns, port, message("u@example.org"))  # NSD refuses: not its zone
    assert not result.permanent and result.reply.enhanced == "4.4.3"


# --- replies -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("flags", "code", "permanent"),
    [
        (("-r", "RCPT"), 450, False),
        (("-f", "RCPT"), 500, True),
        (("-f", "MAIL"), 500, True),
        (("-r", "MAIL"), 450, False),
        (("-f", "DATA"), 500, True),
        (("-f", "."), 500, True),
        (("-r", "."), 450, False),
        (("-Q", "MAIL"), 421, False),
    ],
)
def test_refusals_decide_every_recipient(dns: DnsServer, port: int, sinks: Any,
                                         flags: tuple[str, ...], code: int,
                                         permanent: bool) -> None:
    sink = sinks(D, *flags)
    results = send(dns, port, message("u@d.mx.test", "v@d.mx.test"))
    assert [(r.reply.code, r.permanent, r.delivered) for r in results] == \
        [(code, permanent, False)] * 2
    assert all(r.host == "mx.d.mx.test" for r in results)
    if flags[1] != ".":  # (smtp-sink dumps what it refuses at the final dot)
        assert sink.messages() == []


def test_server_vanishing_mid_transaction_is_transient(dns: DnsServer, port: int,
                                                       sinks: Any) -> None:
    sinks(D, "-q", "RCPT")  # disconnects without a reply
    [result] = send(dns, port, message("u@d.mx.test"))
    assert not result.permanent and (result.reply.code, result.reply.enhanced) == (451, "4.4.2")


def test_slow_server_times_out_instead_of_hanging(dns: DnsServer, port: int,
                                                  sinks: Any) -> None:
    sinks(D, "-p", "-W", "MAIL:5")  # (-W answers pipelined commands out of order)
    started = time.monotonic()
    [result] = send(dns, port, message("u@d.mx.test"), mail_timeout=0.5)
    assert time.monotonic() - started < 4
    assert not result.permanent and "timeout" in result.reply.lines[0]


def test_ehlo_refused_falls_back_to_helo(dns: DnsServer, port: int, sinks: Any) -> None:
    sink = sinks(D, "-f", "EHLO")
    [result] = send(dns, port, message("u@d.mx.test"))
    assert result.delivered
    assert sink.messages()[0].proto == "SMTP"


def test_server_without_esmtp_gets_plain_smtp(dns: DnsServer, port: int, sinks: Any) -> None:
    sink = sinks(D, "-e")
    msg = message(Recipient("u@d.mx.test", notify="SUCCESS"), envid="e1", ret="FULL")
    [result] = send(dns, port, msg)
    assert result.delivered and result.relayed_without_dsn
    [dumped] = sink.messages()
    assert dumped.mail == "<a@sender.test>" and dumped.rcpts == ["<u@d.mx.test>"]


def test_without_pipelining_recipients_are_sent_one_by_one(dns: DnsServer, port: int,
                                                           sinks: Any) -> None:
    sink = sinks(D, "-p")
    results = send(dns, port, message("u@d.mx.test", "v@d.mx.test", "w@d.mx.test"))
    assert all(r.delivered for r in results)
    assert sink.messages()[0].rcpts == ["<u@d.mx.test>", "<v@d.mx.test>", "<w@d.mx.test>"]


def test_many_recipients_are_split_into_transactions(dns: DnsServer, port: int,
                                                     sinks: Any) -> None:
    sink = sinks(D)
    rcpts = [f"r{i}@d.mx.test" for i in range(5)]
    results = send(dns, port, message(*rcpts), max_recipients=2)
    assert [r.recipient for r in results] == rcpts and all(r.delivered for r in results)
    assert sorted(len(m.rcpts) for m in sink.messages()) == [1, 2, 2]
