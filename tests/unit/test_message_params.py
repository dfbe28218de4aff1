"""MIME parameter parsing (RFC 2045 §5.1, RFC 2183, RFC 2231)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kittiwake.message.params import (
    _parse_header_value,
    decode_rfc2231,
    get_param,
    parse_header_value,
    parse_list,
    strip_comments,
)


@pytest.mark.parametrize(
    ("value", "main", "params"),
    [
        ("text/plain", "text/plain", []),
        ('text/plain; charset="utf-8"; format=flowed', "text/plain",
         [["charset", "utf-8"], ["format", "flowed"]]),
        ("multipart/mixed;\r\n boundary=----=_Part_1_2.3", "multipart/mixed",
         [["boundary", "----=_Part_1_2.3"]]),  # unquoted "=": invalid but common
        ('multipart/mixed; boundary="a;b"', "multipart/mixed", [["boundary", "a;b"]]),
        ('text/plain (comment); charset=us-ascii (Plain text)', "text/plain",
         [["charset", "us-ascii"]]),
        ('attachment; filename="a \\"quoted\\" name.pdf"', "attachment",
         [["filename", 'a "quoted" name.pdf']]),
        ("attachment; filename=my file.pdf", "attachment", [["filename", "my file.pdf"]]),
        ("text/plain;; charset = utf-8 ;", "text/plain", [["charset", "utf-8"]]),
        ("text/plain; novalue; x=", "text/plain", [["x", ""]]),
        ('text/plain; name="unterminated', "text/plain", [["name", "unterminated"]]),
        ("", "", []),
        # RFC 2231 §3: continuations join, in section order, at the first one's place
        ('a/b; x=1; n*1="b"; n*0="a"; y=2', "a/b", [["x", "1"], ["n", "ab"], ["y", "2"]]),
        # §4: an extended first section makes the joined value extended ("n*")
        ("a/b; n*0*=utf-8''%C3%A9; n*1=\"t t\"", "a/b", [["n*", "utf-8''%C3%A9t%20t"]]),
        ("a/b; n*=us-ascii'en-us'This%20is", "a/b", [["n*", "us-ascii'en-us'This%20is"]]),
    ],
)
def test_parse_header_value(value: str, main: str, params: list[list[str]]) -> None:
    assert parse_header_value(value) == (main, params)
    assert _parse_header_value(value) == (main, params)


def test_get_param_prefers_decoded_extended_value() -> None:
    params = [["filename", "Resume.pdf"], ["filename*", "UTF-8''R%C3%A9sum%C3%A9.pdf"]]
    assert get_param(params, "FILENAME") == "Résumé.pdf"
    assert get_param([["Boundary", "x"]], "boundary") == "x"
    assert get_param(params, "name") is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A", "This is ***fun***"),
        ("iso-8859-1''caf%E9", "café"),
        ("x-unknown''caf%C3%A9", "café"),
        ("no quotes%21", "no quotes!"),
        ("utf-8''bad%zz", "bad%zz"),
    ],
)
def test_decode_rfc2231(value: str, text: str) -> None:
    assert decode_rfc2231(value) == text


def test_parse_list_and_strip_comments() -> None:
    assert parse_list(" en, (comment) fr ,, de-CH ") == ["en", "fr", "de-CH"]
    assert strip_comments(' 7bit (plain) ') == "7bit"
    assert strip_comments('"(not a comment)" x') == '"(not a comment)" x'


_ALPHABET = st.sampled_from(
    [*"abcXY09./-_=+", '"', ";", " ", "\t", "(", ")", "\\", "*", "é", "\r\n ", "'", "%",
     "name=", "; charset=", '; n="v"', "\xa0"]
)


@given(st.lists(_ALPHABET, max_size=30).map("".join))
def test_fast_path_agrees_with_general_parser(value: str) -> None:
    assert parse_header_value(value) == _parse_header_value(value)


@given(st.text(max_size=200))
def test_parse_header_value_never_raises(value: str) -> None:
    main, params = parse_header_value(value)
    assert isinstance(main, str)
    assert all(len(p) == 2 for p in params)
