"""MIME structure for IMAP (RFC 9051 §6.4.5, §7.5.2; RFC 3501; RFC 2045/2046/2231)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kittiwake.message import structure
from kittiwake.message.params import get_param
from kittiwake.message.structure import (
    binary_size,
    body_size,
    find_part,
    format_body,
    format_bodystructure,
    format_envelope,
    parse_structure,
    section_span,
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def tree(node: dict[str, Any]) -> tuple[str, list[Any]]:
    """(type/subtype, children): an embedded message counts as one child."""
    ctype = f"{node['type']}/{node['subtype']}".lower()
    if "parts" in node:
        return ctype, [tree(p) for p in node["parts"]]
    if "msg" in node:
        return ctype, [tree(node["msg"])]
    return ctype, []


def check_offsets(node: dict[str, Any], lo: int, hi: int) -> None:
    """Every node lies inside its parent's body; siblings are in order, disjoint."""
    assert lo <= node["h"] <= node["b"] <= node["e"] <= hi
    if "parts" in node:
        assert node["parts"], "a multipart always has a part"
        previous = node["b"]
        for part in node["parts"]:
            assert part["h"] >= previous
            check_offsets(part, node["b"], node["e"])
            previous = part["e"]
    if "msg" in node:
        assert (node["msg"]["h"], node["msg"]["e"]) == (node["b"], node["e"])
        check_offsets(node["msg"], node["b"], node["e"])


def body(raw: bytes, node: dict[str, Any] | None) -> bytes:
    assert node is not None
    return raw[node["b"] : node["e"]]


# --------------------------------------------------------------------------- RFC examples

RFC9051_ENVELOPE_MESSAGE = crlf(
    "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
    "From: Terry Gray <gray@cac.washington.edu>\n"
    "Subject: IMAP4rev2 WG mtg summary and minutes\n"
    "To: imap@cac.washington.edu\n"
    "cc: minutes@CNRI.Reston.VA.US,\n"
    "    John Klensin <KLENSIN@MIT.EDU>\n"
    "Message-Id: <B27397-0100000@cac.washington.edu>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    "\n"
    "Hello\n"
)


def test_envelope_matches_rfc9051_example() -> None:
    # RFC 9051 §7.5.2 (and RFC 3501 §7.4.2) FETCH response example, joined onto one line.
    expected = (
        '("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev2 WG mtg summary and minutes" '
        '(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        '(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        '(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        '((NIL NIL "imap" "cac.washington.edu")) '
        '((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL '
        '"<B27397-0100000@cac.washington.edu>")'
    )
    assert format_envelope(parse_structure(RFC9051_ENVELOPE_MESSAGE)) == expected


def test_body_matches_rfc3501_text_example() -> None:
    # RFC 3501 §7.4.2: ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)
    # A message with no Content-Type gets RFC 2045 §5.2's default, as in that example.
    lines = ["x" * 31] * 84 + ["y" * 30] * 8
    raw = b"From: a@b.example\r\nSubject: no MIME\r\n\r\n" + "".join(f"{line}\r\n" for line in lines).encode()
    struct = parse_structure(raw)
    assert format_body(struct) == '("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'
    assert format_bodystructure(struct, extensible=False) == format_body(struct)
    assert format_bodystructure(struct) == (
        '("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92 NIL NIL NIL NIL)'
    )


def test_body_matches_rfc3501_multipart_example() -> None:
    # RFC 3501 §7.4.2 BODYSTRUCTURE example (non-extensible form).
    part1 = "\n".join(["a" * 48] * 22 + ["b" * 52])
    part2 = "\n".join(["QUFB" * 15] * 70 + ["QkJC" * 17 + "Qk"] * 3)
    assert (len(crlf(part1)), len(crlf(part2))) == (1152, 4554)
    raw = crlf(
        "From: a@b.example\n"
        "MIME-Version: 1.0\n"
        'Content-Type: MULTIPART/MIXED; BOUNDARY="=_b"\n'
        "\n"
        "--=_b\n"
        "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
        "\n"
        f"{part1}\n"
        "--=_b\n"
        "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\n"
        "Content-ID: <960723163407.20117h@cac.washington.edu>\n"
        "Content-Description: Compiler diff\n"
        "Content-Transfer-Encoding: BASE64\n"
        "\n"
        f"{part2}\n"
        "--=_b--\n"
    )
    assert format_body(parse_structure(raw)) == (
        '(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        '("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        '"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
    )


# --------------------------------------------------------------------------- exact BODYSTRUCTUREs

SIMPLE = crlf(
    "From: Fred Foobar <foobar@Blurdybloop.example>\n"
    "Subject: afternoon meeting\n"
    "To: mooch@owatagu.siam.edu.example\n"
    "Message-Id: <B27397-0100000@Blurdybloop.example>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    "\n"
    "Hello Joe, do you think we can meet at 3:30 tomorrow?\n"
)

ALTERNATIVE = crlf(
    "From: a@example.com\n"
    "Content-Type: multipart/alternative; boundary=\"alt\"\n"
    "\n"
    "--alt\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "caf=C3=A9\n"
    "--alt\n"
    "Content-Type: text/html; charset=utf-8\n"
    "Content-Language: en, fr\n"
    "\n"
    "<p>caf&eacute;</p>\n"
    "--alt--\n"
)

FORWARD = crlf(
    "From: a@example.com\n"
    "Subject: fwd\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="XX"\n'
    "\n"
    "preamble\n"
    "--XX\n"
    "\n"
    "see below\n"
    "--XX\n"
    "Content-Type: message/rfc822\n"
    "Content-Disposition: inline\n"
    "\n"
    'From: "Doe, Jane" <jane@example.org>\n'
    "To: undisclosed-recipients:;\n"
    "Subject: =?UTF-8?Q?caf=C3=A9?=\n"
    "Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
    "\n"
    "hi\n"
    "there\n"
    "--XX--\n"
    "epilogue\n"
)

ATTACHMENT = crlf(
    "From: a@example.com\n"
    "Content-Type: multipart/mixed;\n"
    ' boundary="----=_Part_1_2.3"\n'
    "\n"
    "------=_Part_1_2.3\n"
    "Content-Type: text/plain\n"
    "\n"
    "see attached\n"
    "------=_Part_1_2.3\n"
    'Content-Type: application/pdf; name="r.pdf"\n'
    "Content-Disposition: attachment;\n"
    ' filename="r.pdf"; size=6\n'
    "Content-Transfer-Encoding: base64\n"
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    "Content-Location: http://example.com/r.pdf\n"
    "\n"
    "JVBE\n"
    "Ri0x\n"
    "------=_Part_1_2.3--\n"
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (SIMPLE, '("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 55 1 NIL NIL NIL NIL)'),
        (
            ALTERNATIVE,
            '(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 9 1 NIL NIL NIL NIL)'
            '("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 18 1 NIL NIL ("en" "fr") NIL)'
            ' "ALTERNATIVE" ("BOUNDARY" "alt") NIL NIL NIL)',
        ),
        (
            FORWARD,
            '(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 9 1 NIL NIL NIL NIL)'
            '("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 149 '
            '("Mon, 1 Jan 2024 00:00:00 +0000" "=?UTF-8?Q?caf=C3=A9?=" '
            '(("Doe, Jane" NIL "jane" "example.org")) (("Doe, Jane" NIL "jane" "example.org")) '
            '(("Doe, Jane" NIL "jane" "example.org")) '
            '((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL) '
            '("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 9 2 NIL NIL NIL NIL) 7 '
            'NIL ("INLINE" NIL) NIL NIL)'
            ' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL)',
        ),
        (
            ATTACHMENT,
            '(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 12 1 NIL NIL NIL NIL)'
            '("APPLICATION" "PDF" ("NAME" "r.pdf") NIL NIL "BASE64" 10 '
            '"Q2hlY2sgSW50ZWdyaXR5IQ==" ("ATTACHMENT" ("FILENAME" "r.pdf" "SIZE" "6")) NIL '
            '"http://example.com/r.pdf")'
            ' "MIXED" ("BOUNDARY" "----=_Part_1_2.3") NIL NIL NIL)',
        ),
    ],
    ids=["simple", "alternative", "forward", "attachment"],
)
def test_exact_bodystructure(raw: bytes, expected: str) -> None:
    struct = parse_structure(raw)
    assert format_bodystructure(struct) == expected
    # the cached form survives JSON and formats identically
    assert format_bodystructure(json.loads(json.dumps(struct))) == expected


def test_body_form_has_no_extension_data() -> None:
    assert format_body(parse_structure(ALTERNATIVE)) == (
        '(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 9 1)'
        '("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 18 1) "ALTERNATIVE")'
    )


def test_binary_size_decodes_base64_and_quoted_printable() -> None:
    alt = parse_structure(ALTERNATIVE)
    assert binary_size(alt["parts"][0], ALTERNATIVE) == len("café".encode())
    assert binary_size(alt["parts"][1], ALTERNATIVE) == body_size(alt["parts"][1]) == 18
    att = parse_structure(ATTACHMENT)
    assert binary_size(att["parts"][1], ATTACHMENT) == len(b"%PDF-1")
    uu = b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 f\r\n"
    assert binary_size(parse_structure(uu), uu) is None
    broken = b"Content-Transfer-Encoding: base64\r\n\r\nQUJ\r\n"
    assert binary_size(parse_structure(broken), broken) is None  # as BINARY[]: UNKNOWN-CTE


# --------------------------------------------------------------------------- sections

# RFC 3501 §6.4.5's example of part numbering, built out as a real message.
SECTIONS = crlf(
    "From: outer@example.com\n"
    "Subject: sections\n"
    'Content-Type: multipart/mixed; boundary="b0"\n'
    "\n"
    "--b0\n"
    "Content-Type: text/plain\n"
    "\n"
    "part 1\n"
    "--b0\n"
    "Content-Type: application/octet-stream\n"
    "\n"
    "part 2\n"
    "--b0\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "Subject: three\n"
    'Content-Type: multipart/mixed; boundary="b3"\n'
    "\n"
    "--b3\n"
    "Content-Type: text/plain\n"
    "\n"
    "part 3.1\n"
    "--b3\n"
    "Content-Type: application/octet-stream\n"
    "\n"
    "part 3.2\n"
    "--b3--\n"
    "--b0\n"
    'Content-Type: multipart/mixed; boundary="b4"\n'
    "\n"
    "--b4\n"
    "Content-Type: image/gif\n"
    "\n"
    "part 4.1\n"
    "--b4\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "Subject: four two\n"
    'Content-Type: multipart/mixed; boundary="b42"\n'
    "\n"
    "--b42\n"
    "Content-Type: text/plain\n"
    "\n"
    "part 4.2.1\n"
    "--b42\n"
    'Content-Type: multipart/alternative; boundary="b422"\n'
    "\n"
    "--b422\n"
    "Content-Type: text/plain\n"
    "\n"
    "part 4.2.2.1\n"
    "--b422\n"
    "Content-Type: text/richtext\n"
    "\n"
    "part 4.2.2.2\n"
    "--b422--\n"
    "--b42--\n"
    "--b4--\n"
    "--b0--\n"
)


@pytest.mark.parametrize(
    ("section", "ctype"),
    [
        ((1,), "text/plain"),
        ((2,), "application/octet-stream"),
        ((3,), "message/rfc822"),
        ((3, 1), "text/plain"),
        ((3, 2), "application/octet-stream"),
        ((4,), "multipart/mixed"),
        ((4, 1), "image/gif"),
        ((4, 2), "message/rfc822"),
        ((4, 2, 1), "text/plain"),
        ((4, 2, 2), "multipart/alternative"),
        ((4, 2, 2, 1), "text/plain"),
        ((4, 2, 2, 2), "text/richtext"),
    ],
)
def test_rfc3501_part_numbering(section: tuple[int, ...], ctype: str) -> None:
    struct = parse_structure(SECTIONS)
    node = find_part(struct, section)
    assert node is not None
    assert f"{node['type']}/{node['subtype']}" == ctype
    if not ctype.startswith(("multipart", "message")):
        assert body(SECTIONS, node) == ("part " + ".".join(map(str, section))).encode()


def test_section_spans() -> None:
    raw = SECTIONS
    struct = parse_structure(raw)

    def span(section: tuple[int, ...], spec: str = "") -> bytes:
        result = section_span(struct, section, spec)
        assert result is not None
        return raw[result[0] : result[1]]

    assert span(()) == raw
    assert span((), "HEADER").startswith(b"From: outer") and span((), "HEADER").endswith(b"\r\n\r\n")
    assert span((), "TEXT").startswith(b"--b0\r\n") and span((), "TEXT").endswith(b"--b0--\r\n")
    assert span((1,), "MIME") == b"Content-Type: text/plain\r\n\r\n"
    assert span((3,), "HEADER") == b'Subject: three\r\nContent-Type: multipart/mixed; boundary="b3"\r\n\r\n'
    assert span((3,), "TEXT").endswith(b"--b3--")
    assert span((3,)) == span((3,), "HEADER") + span((3,), "TEXT")
    assert span((4, 1), "MIME") == b"Content-Type: image/gif\r\n\r\n"
    assert span((4, 2), "HEADER").startswith(b"Subject: four two\r\n")
    assert span((4, 2, 2, 2)) == b"part 4.2.2.2"
    assert section_span(struct, (1,), "HEADER") is None  # not a message/rfc822 part
    assert section_span(struct, (), "MIME") is None
    assert section_span(struct, (5,)) is None
    assert section_span(struct, (1, 1)) is None
    assert section_span(struct, (0,)) is None


def test_single_part_message_has_part_one_which_is_its_body() -> None:
    struct = parse_structure(SIMPLE)
    assert find_part(struct, (1,)) is struct
    start_end = section_span(struct, (1,))
    assert start_end is not None
    assert SIMPLE[start_end[0] : start_end[1]] == b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    assert section_span(struct, (2,)) is None


# --------------------------------------------------------------------------- table of shapes


def test_missing_headers_give_empty_envelope_and_defaults() -> None:
    struct = parse_structure(b"\r\njust a body\r\n")
    assert struct["env"] == {}
    assert format_envelope(struct) == "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert tree(struct) == ("text/plain", [])
    assert struct["params"] == [["charset", "US-ASCII"]]
    assert body(b"\r\njust a body\r\n", struct) == b"just a body\r\n"


def test_lf_only_message_parses_like_crlf() -> None:
    lf = FORWARD.replace(b"\r\n", b"\n")
    a, b = parse_structure(FORWARD), parse_structure(lf)
    assert tree(a) == tree(b)
    assert body(lf, b["parts"][0]) == b"see below"
    assert body(lf, b["parts"][1]["msg"]) == b"hi\nthere"
    assert b["parts"][1]["msg"]["env"] == a["parts"][1]["msg"]["env"]


def test_no_blank_line_means_all_header() -> None:
    raw = b"Subject: only a header\r\nFrom: a@b"
    struct = parse_structure(raw)
    assert (struct["b"], struct["e"]) == (len(raw), len(raw))
    assert struct["env"]["subject"] == "only a header"
    assert format_bodystructure(struct).startswith('("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0')


def test_preamble_and_epilogue_belong_to_no_part() -> None:
    struct = parse_structure(FORWARD)
    first, second = struct["parts"]
    assert FORWARD[struct["b"] : first["h"]] == b"preamble\r\n--XX\r\n"
    assert body(FORWARD, second).endswith(b"there")
    assert FORWARD[second["e"] :] == b"\r\n--XX--\r\nepilogue\r\n"


def test_missing_close_delimiter_ends_last_part_at_end() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n\r\none\r\n--z\r\n\r\ntwo\r\n"
    struct = parse_structure(raw)
    assert [body(raw, p) for p in struct["parts"]] == [b"one", b"two\r\n"]


def test_boundary_lines_need_line_start_and_only_trailing_whitespace() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=ab\n\n"
        "--ab \t\n\n"
        "x --ab\n"  # not at line start
        "--abc\n"  # longer boundary: not ours
        "--ab--x\n"  # junk after close: not a delimiter
        "--ab\n\ny\n"
        "--ab--  \n"
    )
    struct = parse_structure(raw)
    assert [body(raw, p) for p in struct["parts"]] == [b"x --ab\r\n--abc\r\n--ab--x", b"y"]


def test_unquoted_boundary_with_equals_and_nested_prefix_boundaries() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=----=_outer\n\n"
        "------=_outer\n"
        "Content-Type: multipart/alternative; boundary=\"----=_outer_inner\"\n\n"
        "------=_outer_inner\n\na\n"
        "------=_outer_inner\n\nb\n"
        "------=_outer_inner--\n"
        "------=_outer\n\nc\n"
        "------=_outer--\n"
    )
    struct = parse_structure(raw)
    assert tree(struct) == ("multipart/mixed", [
        ("multipart/alternative", [("text/plain", []), ("text/plain", [])]), ("text/plain", []),
    ])
    inner = struct["parts"][0]["parts"]
    assert [body(raw, p) for p in inner] == [b"a", b"b"]


def test_multipart_without_boundary_is_text_plain() -> None:
    struct = parse_structure(b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhello\r\n--x--\r\n")
    assert tree(struct) == ("text/plain", [])  # RFC 2045 §5.2
    assert struct["lines"] == 4


def test_multipart_without_any_delimiter_gets_an_empty_part() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=nope\r\n\r\nno delimiters here\r\n"
    struct = parse_structure(raw)
    assert tree(struct) == ("multipart/mixed", [("text/plain", [])])
    assert format_body(struct) == (
        '(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0) "MIXED")'
    )


def test_invalid_content_type_defaults_to_text_plain() -> None:
    for value in (b"text", b"/plain", b"te xt/plain", b""):
        struct = parse_structure(b"Content-Type: " + value + b"\r\n\r\nx")
        assert tree(struct) == ("text/plain", [])
        assert struct["params"] == [["charset", "US-ASCII"]]


def test_multipart_digest_children_default_to_message_rfc822() -> None:
    raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n"
        "--d\n\nSubject: one\n\nbody one\n"
        "--d\nContent-Type: text/plain\n\nnot a message\n"
        "--d--\n"
    )
    struct = parse_structure(raw)
    assert tree(struct) == ("multipart/digest", [("message/rfc822", [("text/plain", [])]), ("text/plain", [])])
    assert struct["parts"][0]["msg"]["env"]["subject"] == "one"
    assert '"MESSAGE" "RFC822" NIL NIL NIL "7BIT"' in format_bodystructure(struct)


def test_rfc2231_continuations_and_charsets() -> None:
    # RFC 2231 §3 and §4.1 examples
    raw = crlf(
        "Content-Type: application/x-stuff;\n"
        "\ttitle*0*=us-ascii'en'This%20is%20even%20more%20;\n"
        "\ttitle*1*=%2A%2A%2Afun%2A%2A%2A%20;\n"
        "\ttitle*2=\"isn't it!\"\n"
        "Content-Disposition: attachment;\n"
        " filename*=UTF-8''R%C3%A9sum%C3%A9.pdf; filename=\"Resume.pdf\"\n"
        "\n"
        "data"
    )
    struct = parse_structure(raw)
    assert struct["params"] == [["title*", "us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn%27t%20it!"]]
    assert get_param(struct["params"], "title") == "This is even more ***fun*** isn't it!"
    disposition, params = struct["disp"]
    assert disposition == "attachment"
    assert get_param(params, "filename") == "Résumé.pdf"
    ext = parse_structure(crlf(
        "Content-Type: message/external-body; access-type=URL;\n"
        ' URL*0="ftp://";\n'
        ' URL*1="cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar"\n\n'
    ))
    assert ext["params"] == [["access-type", "URL"],
                             ["URL", "ftp://cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar"]]


def test_rfc2047_subject_stays_raw_in_envelope() -> None:
    raw = crlf("Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\n"
               "  =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=\n\n")
    env = parse_structure(raw)["env"]
    assert env["subject"] == ("=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?="
                              "  =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=")


def test_groups_in_to_and_sender_defaulting() -> None:
    raw = crlf("From: Boss <boss@x.test>\nReply-To:\nTo: A Group:Ed <c@a.test>,joe@w.test;, m@x.test\n\n")
    envelope = format_envelope(parse_structure(raw))
    assert envelope == (
        '(NIL NIL (("Boss" NIL "boss" "x.test")) (("Boss" NIL "boss" "x.test")) '
        '(("Boss" NIL "boss" "x.test")) ((NIL NIL "A Group" NIL)("Ed" NIL "c" "a.test")'
        '(NIL NIL "joe" "w.test")(NIL NIL NIL NIL)(NIL NIL "m" "x.test")) NIL NIL NIL NIL)'
    )


def test_strings_needing_literals() -> None:
    raw = 'Subject: "quoted" \\ and café\r\nFrom: Jörg <j@x>\r\n\r\n'.encode()
    struct = parse_structure(raw)
    envelope = format_envelope(struct)
    subject = '"quoted" \\ and café'
    assert envelope.startswith(f"(NIL {{{len(subject.encode())}}}\r\n{subject} ((")
    utf8 = format_envelope(struct, utf8=True)
    assert utf8.startswith('(NIL "\\"quoted\\" \\\\ and café" (("Jörg" NIL "j" "x"))')


def test_non_utf8_header_bytes_are_replaced_so_json_is_clean() -> None:
    struct = parse_structure(b"Subject: caf\xe9\r\n\r\n")
    assert struct["env"]["subject"] == "caf\ufffd"
    json.dumps(struct, ensure_ascii=False).encode("utf-8")


def test_deep_nesting_is_capped() -> None:
    depth = 300
    raw = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth)
    ) + b"\r\nleaf\r\n"
    struct = structure._parse(raw)
    node, levels = struct, 0
    while "parts" in node:
        node, levels = node["parts"][0], levels + 1
    assert levels == structure.MAX_DEPTH
    assert node["type"] == "application"
    check_offsets(struct, 0, len(raw))
    messages = b"Content-Type: message/rfc822\r\n\r\n" * depth + b"\r\nleaf"
    struct = structure._parse(messages)
    check_offsets(struct, 0, len(messages))
    format_bodystructure(struct)


def test_part_count_is_capped() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 20_000
    struct = structure._parse(raw)
    assert len(struct["parts"]) <= structure.MAX_PARTS
    assert struct["parts"][-1]["e"] == len(raw)
    check_offsets(struct, 0, len(raw))
