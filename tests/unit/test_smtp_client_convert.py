"""8-bit → 7-bit conversion for servers without 8BITMIME (RFC 6152 §3, RFC 2045 §6)."""

from __future__ import annotations

import email
import email.message
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kittiwake.smtpclient.convert import to_7bit

HEAD = (b"From: a@example.org\r\nTo: b@example.net\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"X-Folded: one\r\n two\r\nMIME-Version: 1.0\r\n")


def parse(data: bytes) -> email.message.Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def lines_ok(data: bytes) -> bool:
    return data.isascii() and all(len(line) <= 76 for line in data.split(b"\r\n"))


def test_7bit_message_is_untouched() -> None:
    msg = HEAD + b"\r\nplain\r\n"
    assert to_7bit(msg) is msg


def test_8bit_text_becomes_quoted_printable_and_headers_stay_byte_exact() -> None:
    body = "Grüße, naïve café = 100 %   \r\n.dot\r\n\r\nend".encode()
    msg = HEAD + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit" \
        b"\r\n\r\n" + body
    out = to_7bit(msg)
    assert out is not None and lines_ok(out)
    head, _, encoded = out.partition(b"\r\n\r\n")
    assert head + b"\r\n" == HEAD + b"Content-Type: text/plain; charset=utf-8\r\n" \
        b"Content-Transfer-Encoding: quoted-printable\r\n"
    assert encoded == b"Gr=C3=BC=C3=9Fe, na=C3=AFve caf=C3=A9 =3D 100 %  =20\r\n.dot\r\n\r\nend"
    assert parse(out).get_payload(decode=True) == body


def test_missing_transfer_encoding_field_is_added() -> None:
    out = to_7bit(HEAD + b"\r\nk\xc3\xa4se\r\n")  # text/plain by default
    assert out is not None
    assert out.endswith(b"Content-Transfer-Encoding: quoted-printable\r\n\r\nk=C3=A4se\r\n")


def test_long_line_gets_soft_breaks() -> None:
    body = ("é" * 200 + "\r\n").encode()
    out = to_7bit(HEAD + b"\r\n" + body)
    assert out is not None and lines_ok(out)
    assert parse(out).get_payload(decode=True) == body


MULTIPART = (HEAD + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
             b"This is a MIME message.\r\n"
             b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
             b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n"
             b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n"
             b"--inner\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<p>ascii</p>\r\n"
             b"--inner--\r\n"
             b"--outer\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: binary\r\n\r\n"
             b"\x89PNG\r\n\x1a\n\x00\xff\r\n"
             b"--outer\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
             b"Subject: inner\r\nMIME-Version: 1.0\r\n\r\nj\xc3\xa4\r\n"
             b"--outer--\r\nepilogue\r\n")


def test_multipart_parts_are_converted_one_by_one() -> None:
    out = to_7bit(MULTIPART)
    assert out is not None and lines_ok(out)
    assert out.startswith(HEAD + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
                          b"This is a MIME message.\r\n--outer\r\n")
    assert b"<p>ascii</p>\r\n--inner--\r\n" in out  # 7-bit parts are kept exactly
    assert out.endswith(b"--outer--\r\nepilogue\r\n")
    parsed = parse(out)
    alternative, image, embedded = parsed.get_payload()  # type: ignore[misc]
    text, html = alternative.get_payload()
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    assert text.get_payload(decode=True) == "café".encode()
    assert html.get_payload(decode=True) == b"<p>ascii</p>"
    assert image["Content-Transfer-Encoding"] == "base64"
    assert image.get_payload(decode=True) == b"\x89PNG\r\n\x1a\n\x00\xff"
    assert embedded["Content-Transfer-Encoding"] == "7bit"
    [inner] = embedded.get_payload()
    assert inner.get_payload(decode=True) == "jä".encode()  # the CRLF belongs to "--outer--"


def test_multipart_without_close_delimiter_converts_its_last_part() -> None:
    msg = (HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xe9t\xe9\r\n")
    out = to_7bit(msg)
    assert out is not None and out.endswith(b"--b\r\nContent-Transfer-Encoding: "
                                            b"quoted-printable\r\n\r\n=E9t=E9\r\n")


@pytest.mark.parametrize(
    "msg",
    [
        HEAD.replace(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=", "Subject: Grüße".encode())
        + b"\r\nbody\xc3\xa9\r\n",  # 8-bit header: only SMTPUTF8 carries it
        b"Subject: no MIME\r\n\r\ncaf\xc3\xa9\r\n",  # no MIME-Version, no charset
        HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\npre \xff\r\n--b\r\n\r\nx\r\n"
        b"--b--\r\n",
        HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n"
        b"epilogue \xff\r\n",
        HEAD + b"Content-Type: multipart/mixed\r\n\r\n--b\r\n\r\n\xff\r\n",
        HEAD + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n\xff\r\n",
        HEAD + b"Content-Type: message/partial; id=1; number=1\r\n\r\n\xff\r\n",
        HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nX-H: \xff\r\n\r\nx\r\n"
        b"--b--\r\n",
    ],
)
def test_what_cannot_be_converted_faithfully_is_refused(msg: bytes) -> None:
    assert to_7bit(msg) is None


@given(st.binary(max_size=400))
def test_any_8bit_text_body_round_trips(body: bytes) -> None:
    body = body.replace(b"\r", b"").replace(b"\n", b"\r\n")  # CRLF lines, as SMTP has them
    msg = HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
    out = to_7bit(msg)
    assert out is not None and lines_ok(out)
    assert parse(out).get_payload(decode=True) == body


@given(st.binary(max_size=300))
def test_any_8bit_attachment_round_trips(blob: bytes) -> None:
    msg = (HEAD + b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
           b"Content-Type: application/octet-stream\r\n\r\n" + blob + b"\r\n--zz--\r\n")
    if b"--zz" in blob:
        return  # the blob would contain the boundary: not a valid message to begin with
    out = to_7bit(msg)
    assert out is not None and lines_ok(out)
    [part] = parse(out).get_payload()  # type: ignore[misc]
    assert part.get_payload(decode=True) == blob
