"""Outbound delivery end to end, what is sent: 8BITMIME and 7-bit conversion (RFC 6152),
SMTPUTF8 (RFC 6531), DSN parameters (RFC 3461), connection reuse, smarthost, TLS policy."""

from __future__ import annotations

import asyncio
import email
import email.policy
from pathlib import Path
from typing import Any

from test_smtpclient import MSG, D, crlf, dns, message, port, send, settings, sinks

from kittiwake.dns import DnsResolver
from kittiwake.smtpclient import Destination, Recipient
from support.dnsserver import DnsServer

__all__ = ["dns", "port", "sinks"]  # fixtures shared with test_smtpclient

TEXT_8BIT = ("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
             "Content-Transfer-Encoding: 8bit\r\nSubject: greetings\r\n\r\n"
             "Grüße aus Köln\r\n.dot line ünd\r\n").encode()
MULTIPART_8BIT = (
    b"MIME-Version: 1.0\r\nSubject: parts\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"preamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n"
    b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b"\x00\xff\xfe binary\r\n--b1--\r\nepilogue\r\n")
HEADER_8BIT = "From: Jörg <j@sender.test>\r\nSubject: x\r\n\r\nbody\r\n".encode()


# --- 8BITMIME ------------------------------------------------------------------------------------

def test_8bit_message_declares_body_8bitmime(dns: DnsServer, port: int, sinks: Any) -> None:
    sink = sinks(D)
    [result] = send(dns, port, message("u@d.mx.test", content=TEXT_8BIT, eight_bit=True))
    assert result.delivered
    [dumped] = sink.messages()
    assert "BODY=8BITMIME" in dumped.mail
    assert dumped.content == crlf(TEXT_8BIT)


def test_8bit_text_is_converted_for_a_server_without_8bitmime(dns: DnsServer, port: int,
                                                             sinks: Any) -> None:
    sink = sinks(D, "-8")
    [result] = send(dns, port, message("u@d.mx.test", content=TEXT_8BIT, eight_bit=True))
    assert result.delivered
    [dumped] = sink.messages()
    assert "BODY" not in dumped.mail
    assert dumped.content.isascii()
    assert b"Content-Transfer-Encoding: quoted-printable\n" in dumped.content
    assert b"8bit" not in dumped.content
    parsed = email.message_from_bytes(dumped.content.replace(b"\n", b"\r\n"),
                                      policy=email.policy.default)
    assert parsed.get_content() == "Grüße aus Köln\r\n.dot line ünd\r\n"  # type: ignore[attr-defined]


def test_8bit_multipart_parts_are_converted(dns: DnsServer, port: int, sinks: Any) -> None:
    sink = sinks(D, "-8")
    [result] = send(dns, port, message("u@d.mx.test", content=MULTIPART_8BIT, eight_bit=True))
    assert result.delivered
    [dumped] = sink.messages()
    parsed = email.message_from_bytes(dumped.content.replace(b"\n", b"\r\n"),
                                      policy=email.policy.default)
    text, blob = parsed.iter_parts()  # type: ignore[attr-defined]
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    assert text.get_content() == "café"
    assert blob["Content-Transfer-Encoding"] == "base64"
    assert blob.get_content() == b"\x00\xff\xfe binary"
    assert b"preamble\n" in dumped.content and b"epilogue" in dumped.content


def test_8bit_header_cannot_be_converted_and_bounces(dns: DnsServer, port: int,
                                                     sinks: Any) -> None:
    sink = sinks(D, "-8")
    [result] = send(dns, port, message("u@d.mx.test", content=HEADER_8BIT, eight_bit=True))
    assert result.permanent and (result.reply.code, result.reply.enhanced) == (554, "5.6.3")
    assert sink.messages() == []


# --- SMTPUTF8 ------------------------------------------------------------------------------------

def test_non_ascii_local_part_needs_smtputf8(dns: DnsServer, port: int, sinks: Any) -> None:
    sink = sinks(D)  # smtp-sink does not offer SMTPUTF8
    results = send(dns, port, message("jörg@d.mx.test", "plain@d.mx.test", smtputf8=True))
    refused, delivered = results
    assert refused.permanent and (refused.reply.code, refused.reply.enhanced) == (553, "5.6.7")
    assert delivered.delivered  # RFC 6531 §3.2: the ASCII recipient still gets it
    assert sink.messages()[0].rcpts == ["<plain@d.mx.test>"]


def test_utf8_headers_need_smtputf8(dns: DnsServer, port: int, sinks: Any) -> None:
    sinks(D)
    [result] = send(dns, port, message("u@d.mx.test", content=HEADER_8BIT, smtputf8=True))
    assert result.permanent and result.reply.enhanced == "5.6.7"


def test_idn_domain_is_sent_as_a_labels_to_a_server_without_smtputf8(
        dns: DnsServer, port: int, sinks: Any) -> None:
    sink = sinks(D)
    [result] = send(dns, port, message("user@bücher.mx.test", sender="me@bücher.mx.test",
                                       smtputf8=True))
    assert result.delivered and result.recipient == "user@bücher.mx.test"
    [dumped] = sink.messages()
    assert dumped.mail == "<me@xn--bcher-kva.mx.test>"
    assert dumped.rcpts == ["<user@xn--bcher-kva.mx.test>"]


# --- DSN -----------------------------------------------------------------------------------------

def test_dsn_parameters_go_to_a_server_offering_dsn(dns: DnsServer, port: int,
                                                    sinks: Any) -> None:
    sink = sinks(D)
    msg = message(Recipient("u@d.mx.test", notify="SUCCESS,FAILURE", orcpt="rfc822;orig+x@o.test"),
                  Recipient("v@d.mx.test", notify="NEVER"), envid="id=42 x", ret="HDRS")
    results = send(dns, port, msg)
    assert all(r.delivered and not r.relayed_without_dsn for r in results)
    [dumped] = sink.messages()
    assert dumped.mail == "<a@sender.test> RET=HDRS ENVID=id+3D42+20x"
    assert dumped.rcpts == ["<u@d.mx.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Bx@o.test",
                            "<v@d.mx.test> NOTIFY=NEVER"]


def test_without_dsn_parameters_stay_home_and_success_is_relayed(
        dns: DnsServer, port: int, sinks: Any) -> None:
    sink = sinks(D, "-N")
    msg = message(Recipient("u@d.mx.test", notify="SUCCESS"), Recipient("v@d.mx.test",
                  notify="FAILURE"), envid="e", ret="FULL")
    results = send(dns, port, msg)
    assert [r.relayed_without_dsn for r in results] == [True, False]  # RFC 3461 §5.2.2.1
    [dumped] = sink.messages()
    assert dumped.mail == "<a@sender.test>"
    assert dumped.rcpts == ["<u@d.mx.test>", "<v@d.mx.test>"]


# --- connections ---------------------------------------------------------------------------------

def test_one_connection_carries_several_messages(dns: DnsServer, port: int, sinks: Any) -> None:
    sink = sinks(D, "-n", "1")  # smtp-sink exits after one session: a reconnect would fail

    async def run() -> list[bool]:
        out = []
        async with Destination("d.mx.test", settings(port), DnsResolver(dns.settings())) as dest:
            for i in range(3):
                results = await dest.send(message(f"u{i}@d.mx.test", content=MSG))
                out += [r.delivered for r in results]
        return out

    assert asyncio.run(asyncio.wait_for(run(), 20)) == [True] * 3
    assert sorted(m.rcpts[0] for m in sink.messages()) == ["<u0@d.mx.test>", "<u1@d.mx.test>",
                                                           "<u2@d.mx.test>"]


def test_dead_kept_connection_is_replaced(dns: DnsServer, port: int, sinks: Any) -> None:
    first = sinks(D)

    async def run() -> list[bool]:
        async with Destination("d.mx.test", settings(port), DnsResolver(dns.settings())) as dest:
            one = await dest.send(message("u@d.mx.test"))
            first.stop()  # the kept connection dies with its server …
            sinks("127.0.0.61")  # … and a new server takes the address
            two = await dest.send(message("v@d.mx.test"))
        return [r.delivered for r in one + two]

    assert asyncio.run(asyncio.wait_for(run(), 20)) == [True, True]


def test_smarthost_takes_everything(dns: DnsServer, port: int, sinks: Any) -> None:
    relay = sinks("127.0.0.81")
    msg = message("u@nowhere.invalid", "v@elsewhere.invalid")
    results = send(dns, port, msg, smarthost=f"127.0.0.81:{port}")
    assert all(r.delivered and r.host == "127.0.0.81" for r in results)
    assert relay.messages()[0].rcpts == ["<u@nowhere.invalid>", "<v@elsewhere.invalid>"]


def test_smarthost_credentials_are_never_sent_without_tls(dns: DnsServer, port: int,
                                                          sinks: Any) -> None:
    relay = sinks("127.0.0.81")  # offers AUTH PLAIN LOGIN, but no STARTTLS
    [result] = send(dns, port, message("u@nowhere.invalid"), smarthost=f"[127.0.0.81]:{port}",
                    smarthost_auth=("user", "secret"))
    assert not result.delivered and not result.permanent
    assert "without TLS" in result.reply.lines[0]
    assert relay.messages() == []


def test_required_tls_not_offered_is_transient(dns: DnsServer, port: int, sinks: Any) -> None:
    sink = sinks(D)
    [result] = send(dns, port, message("u@d.mx.test"), tls="required")
    assert not result.permanent and result.reply.enhanced == "4.7.4"
    assert sink.messages() == []


# --- the message itself --------------------------------------------------------------------------

def test_content_from_a_file_is_streamed(dns: DnsServer, port: int, sinks: Any,
                                         tmp_path: Path) -> None:
    sink = sinks(D)
    big = b"Subject: big\r\n\r\n" + b"".join(b".line %06d\r\n" % i for i in range(20000))
    path = tmp_path / "spooled.eml"
    path.write_bytes(big)
    [result] = send(dns, port, message("u@d.mx.test", content=path))
    assert result.delivered
    assert sink.messages()[0].content == crlf(big)


def test_message_without_final_line_ending_gets_one(dns: DnsServer, port: int,
                                                    sinks: Any) -> None:
    sink = sinks(D)
    [result] = send(dns, port, message("u@d.mx.test", content=b"Subject: x\r\n\r\n.no end"))
    assert result.delivered
    assert sink.messages()[0].content == b"Subject: x\n\n.no end\n"


def test_local_size_limit_bounces_without_connecting(dns: DnsServer, port: int) -> None:
    [result] = send(dns, port, message("u@d.mx.test"), max_message_size=10)
    assert result.permanent and (result.reply.code, result.reply.enhanced) == (552, "5.3.4")


def test_bad_addresses_bounce_alone(dns: DnsServer, port: int, sinks: Any) -> None:
    sinks(D)
    bad, good = send(dns, port, message("not an address@d.mx.test", "u@d.mx.test"))
    assert bad.permanent and bad.reply.enhanced == "5.1.3"
    assert good.delivered
