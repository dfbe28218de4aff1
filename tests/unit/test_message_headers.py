"""Header reading (RFC 5322 §2.2, RFC 2047) and trace-field writing (RFC 5321 §4.4)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kittiwake.message.headers import (
    date_header,
    decode_words,
    delivered_to_header,
    format_date,
    get_all_fields,
    get_field,
    header_bounds,
    iter_field_spans,
    iter_fields,
    message_id,
    received_header,
    return_path_header,
    split_header,
    unfold,
)

# --------------------------------------------------------------------------- split_header


@pytest.mark.parametrize(
    ("raw", "header", "body_offset"),
    [
        (b"Subject: hi\r\n\r\nbody\r\n", b"Subject: hi\r\n", 15),
        (b"Subject: hi\n\nbody\n", b"Subject: hi\n", 13),
        (b"A: 1\r\nB: 2\r\n\r\n", b"A: 1\r\nB: 2\r\n", 14),  # empty body
        (b"A: 1\r\nB: 2\r\n", b"A: 1\r\nB: 2\r\n", 12),  # no blank line: all header
        (b"A: 1", b"A: 1", 4),
        (b"\r\nbody only", b"", 2),  # no header fields at all
        (b"\nbody only", b"", 1),
        (b"", b"", 0),
        (b"A: 1\r\n\nbody", b"A: 1\r\n", 7),  # CRLF then bare LF
        (b"A: 1\n\r\nbody", b"A: 1\n", 7),
        (b"A: 1\r\n\r\nx\n\ny", b"A: 1\r\n", 8),  # later LF-LF in the body is not the end
    ],
)
def test_split_header(raw: bytes, header: bytes, body_offset: int) -> None:
    assert split_header(raw) == (header, body_offset)


def test_header_bounds_respects_range() -> None:
    raw = b"junk--A: 1\r\n\r\nbody--more"
    assert header_bounds(raw, 6, len(raw) - 6) == (12, 14)
    assert header_bounds(raw, 6, 10) == (10, 10)


# --------------------------------------------------------------------------- fields

HEADER = (
    b"Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Subject: folded\r\n  subject line\r\n"
    b"this line is garbage\r\n"
    b" stray continuation belongs to nothing useful\r\n"
    b"X-Obsolete  : spaced name\r\n"
    b"Received: second\r\n"
    b"Empty:\r\n"
    b"\r\n"
    b"Body-Looking: not a header\r\n"
)


def test_iter_fields_lowercases_names_keeps_raw_values() -> None:
    fields = list(iter_fields(HEADER))
    assert fields == [
        ("received", b" from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000"),
        ("subject", b" folded\r\n  subject line"),
        ("x-obsolete", b" spaced name"),
        ("received", b" second"),
        ("empty", b""),
    ]


def test_iter_fields_on_lf_only_header() -> None:
    assert list(iter_fields(b"A: 1\n b\nC: 2\n\nD: 3\n")) == [("a", b" 1\n b"), ("c", b" 2")]


def test_iter_field_spans_are_exact_field_bytes() -> None:
    spans = list(iter_field_spans(HEADER))
    assert [name for name, _, _ in spans] == ["received", "subject", "x-obsolete", "received", "empty"]
    _, start, end = spans[1]
    assert HEADER[start:end] == b"Subject: folded\r\n  subject line\r\n"
    _, start, end = spans[-1]
    assert HEADER[start:end] == b"Empty:\r\n"


def test_get_field_and_get_all_fields() -> None:
    assert get_field(HEADER, "SUBJECT") == b" folded\r\n  subject line"
    assert get_field(HEADER, "body-looking") is None
    assert get_all_fields(HEADER, "Received") == [
        b" from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000",
        b" second",
    ]


def test_unfold_removes_line_breaks_keeps_whitespace() -> None:
    assert unfold(b" folded\r\n  subject line") == b" folded  subject line"
    assert unfold(b"a\n\tb") == b"a\tb"


@given(st.binary(max_size=400))
def test_iter_fields_never_raises(data: bytes) -> None:
    for name, value in iter_fields(data):
        assert name == name.lower()
        assert isinstance(value, bytes)
    for _, start, end in iter_field_spans(data):
        assert 0 <= start < end <= len(data)


# --------------------------------------------------------------------------- RFC 2047

# RFC 2047 §8 examples, then the cases real mail needs.
@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        (b"=?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>", "Keith Moore <moore@cs.utk.edu>"),
        (b"=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=", "Keld Jørn Simonsen"),
        (b"=?ISO-8859-1?Q?Andr=E9?= Pirard", "André Pirard"),
        (
            b"=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\r\n"
            b" =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=",
            "If you can read this you understand the example.",
        ),
        (b"(=?ISO-8859-1?Q?a?=)", "(a)"),
        (b"(=?ISO-8859-1?Q?a?= b)", "(a b)"),
        (b"(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)", "(ab)"),
        (b"(=?ISO-8859-1?Q?a?=  =?ISO-8859-1?Q?b?=)", "(ab)"),
        (b"(=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?=)", "(ab)"),
        (b"(=?ISO-8859-1?Q?a_b?=)", "(a b)"),
        (b"(=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=)", "(a b)"),
        (b"=?US-ASCII*EN?Q?Keith_Moore?=", "Keith Moore"),  # RFC 2231 §5 language
        (b"=?utf-8?b?Y2Fmw6k=?=", "café"),
        # a UTF-8 character split across two words is joined before decoding
        (b"=?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?=", "éé"),
        (b"=?UTF-8?Q?=C3?= =?UTF-8?Q?=A9?=", "é"),
        (b"=?utf-8?b?Y2Fmw6k?=", "café"),  # missing padding
        (b"plain text", "plain text"),
        (b"Caf\xc3\xa9 (raw UTF-8, RFC 6532)", "Café (raw UTF-8, RFC 6532)"),
        (b"Caf\xe9 (raw Latin-1)", "Café (raw Latin-1)"),
        (b"=?x-unknown?Q?abc?=", "abc"),
        (b"=?utf-8?Q?broken", "=?utf-8?Q?broken"),
        (b"a =?utf-8?q?b?= c", "a b c"),
    ],
)
def test_decode_words(encoded: bytes, decoded: str) -> None:
    assert decode_words(encoded) == decoded


def test_decode_words_accepts_str() -> None:
    assert decode_words("=?utf-8?q?caf=C3=A9?=") == "café"


@given(st.binary(max_size=200))
def test_decode_words_never_raises(data: bytes) -> None:
    assert isinstance(decode_words(data), str)
    assert isinstance(decode_words(b"=?utf-8?B?" + data + b"?="), str)
    assert isinstance(decode_words(b"=?" + data + b"?Q?" + data + b"?="), str)


# --------------------------------------------------------------------------- writers

WHEN = datetime(2024, 3, 5, 14, 7, 9, tzinfo=UTC)


def _lines(field: bytes) -> list[bytes]:
    assert field.endswith(b"\r\n")
    lines = field[:-2].split(b"\r\n")
    for line in lines:
        assert b"\r" not in line and b"\n" not in line
    for line in lines[1:]:
        assert line[:1] in (b" ", b"\t"), "continuation lines start with WSP"
    return lines


def _unfolded(field: bytes) -> str:
    _, value = next(iter_fields(field))
    return " ".join(unfold(value).decode().split())


def test_received_header_typical_esmtps() -> None:
    field = received_header(
        from_helo="mx0.research.example",
        from_ip="203.0.113.80",
        from_rdns="mx0.research.example",
        by_host="mail.example.test",
        protocol="ESMTPS",
        queue_id="4Q2x8Z1abc",
        recipient="user@example.test",
        tls="TLSv1.3 cipher TLS_AES_256_GCM_SHA384",
        when=WHEN,
    )
    assert all(len(line) <= 78 for line in _lines(field))
    assert field.startswith(b"Received: from mx0.research.example (mx0.research.example [203.0.113.80])")
    assert _unfolded(field) == (
        "from mx0.research.example (mx0.research.example [203.0.113.80])"
        " (TLSv1.3 cipher TLS_AES_256_GCM_SHA384) by mail.example.test with ESMTPS"
        " id 4Q2x8Z1abc for <user@example.test>; Tue, 05 Mar 2024 14:07:09 +0000"
    )


def test_received_header_without_rdns_recipient_or_tls() -> None:
    field = received_header(
        from_helo="client.example", from_ip="192.0.2.1", from_rdns=None, by_host="mx.example",
        protocol="SMTP", queue_id="Q1", recipient=None, tls=None, when=WHEN,
    )
    assert field == (
        b"Received: from client.example ([192.0.2.1]) by mx.example with SMTP id Q1;\r\n"
        b"\tTue, 05 Mar 2024 14:07:09 +0000\r\n"
    )


def test_received_header_ipv6_literal_and_mapped_ipv4() -> None:
    common = dict(from_helo="h.example", from_rdns=None, by_host="mx.example", protocol="ESMTP",
                  queue_id="Q1", recipient=None, tls=None, when=WHEN)
    assert b"([IPv6:2001:db8::1])" in received_header(from_ip="2001:db8:0::1", **common)  # type: ignore[arg-type]
    assert b"([192.0.2.7])" in received_header(from_ip="::ffff:192.0.2.7", **common)  # type: ignore[arg-type]


def test_received_header_bogus_helo_cannot_inject() -> None:
    field = received_header(
        from_helo="evil)\r\nX-Injected: yes (", from_ip="198.51.100.9", from_rdns="bad name\r\n",
        by_host="mx.example", protocol="ESMTP", queue_id="Q1", recipient="a@b\r\nX: y",
        tls="TLSv1.2 (x)\r\n", when=WHEN,
    )
    lines = _lines(field)
    assert not any(line.startswith(b"X-") for line in lines)
    text = _unfolded(field)
    # The claimed name is only inside the comment, with its parentheses quoted.
    assert text.startswith("from [198.51.100.9] ([198.51.100.9] helo=evil\\)X-Injected: yes \\()")
    assert "(TLSv1.2 \\(x\\))" in text
    assert "for <a@bX: y>;" in text
    assert len(list(iter_fields(field))) == 1


def test_received_header_hide_ip_leaves_out_client_address() -> None:
    field = received_header(
        from_helo="[192.168.1.20]", from_ip="192.168.1.20", from_rdns="laptop.lan",
        by_host="mail.example.test", protocol="ESMTPSA", queue_id="Q9",
        recipient="bob@example.org", tls="TLSv1.3", when=WHEN, hide_ip=True,
    )
    assert b"192.168" not in field and b"laptop" not in field
    assert _unfolded(field).startswith("from unknown (TLSv1.3) by mail.example.test with ESMTPSA id Q9")


def test_received_header_long_tls_comment_is_folded() -> None:
    tls = "TLSv1.3 cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 " * 3
    field = received_header(
        from_helo="a.example", from_ip="192.0.2.1", from_rdns=None, by_host="mx.example",
        protocol="UTF8SMTPS", queue_id="Q1", recipient="user@example.test", tls=tls, when=WHEN,
    )
    assert all(len(line) <= 78 for line in _lines(field))


@pytest.mark.parametrize("bad", [{"protocol": "ESMTP S"}, {"queue_id": "a;b"}])
def test_received_header_rejects_non_atom_protocol_or_id(bad: dict[str, str]) -> None:
    args: dict[str, object] = dict(from_helo="a.example", from_ip="192.0.2.1", from_rdns=None,
                                   by_host="mx.example", protocol="ESMTP", queue_id="Q1",
                                   recipient=None, tls=None, when=WHEN)
    args.update(bad)
    with pytest.raises(ValueError):
        received_header(**args)  # type: ignore[arg-type]


def test_return_path_and_delivered_to() -> None:
    assert return_path_header(None) == b"Return-Path: <>\r\n"
    assert return_path_header("") == b"Return-Path: <>\r\n"
    assert return_path_header("bounce@example.org") == b"Return-Path: <bounce@example.org>\r\n"
    assert return_path_header("a\r\nb@x") == b"Return-Path: <ab@x>\r\n"
    assert delivered_to_header("user@example.test") == b"Delivered-To: user@example.test\r\n"


def test_message_id_is_unique_and_well_formed() -> None:
    ids = {message_id("example.test") for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        assert re.fullmatch(r"<[0-9a-f]{32}@example\.test>", value)
    with pytest.raises(ValueError):
        message_id("bad domain>")


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (WHEN, "Tue, 05 Mar 2024 14:07:09 +0000"),
        (datetime(1969, 2, 13, 23, 32, 54, tzinfo=timezone(-timedelta(hours=3, minutes=30))),
         "Thu, 13 Feb 1969 23:32:54 -0330"),  # RFC 5322 §A.1.3
        (datetime(2024, 12, 31, 9, 0, 0, tzinfo=timezone(timedelta(hours=5, minutes=45))),
         "Tue, 31 Dec 2024 09:00:00 +0545"),
        (datetime(2024, 1, 1), "Mon, 01 Jan 2024 00:00:00 -0000"),  # naive: zone unknown
    ],
)
def test_format_date(when: datetime, text: str) -> None:
    assert format_date(when) == text
    assert date_header(when) == f"Date: {text}\r\n".encode()
