"""IMAP ENVELOPE address parsing (RFC 5322 §3.4, RFC 3501 §7.4.2 address structure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kittiwake.message.envelope import _parse_address_list, build_envelope, parse_address_list

END = [None, None, None, None]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Terry Gray <gray@cac.washington.edu>", [["Terry Gray", None, "gray", "cac.washington.edu"]]),
        ("minutes@CNRI.Reston.VA.US,\r\n John Klensin <KLENSIN@MIT.EDU>",
         [[None, None, "minutes", "CNRI.Reston.VA.US"], ["John Klensin", None, "KLENSIN", "MIT.EDU"]]),
        ('"Doe, John" <john@x.org>, jane@y (Jane Y)',
         [["Doe, John", None, "john", "x.org"], ["Jane Y", None, "jane", "y"]]),
        # RFC 5322 §A.1.3: groups; RFC 3501: start (NIL NIL name NIL), end (NIL NIL NIL NIL)
        ("A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;, Mary Smith <mary@x.test>",
         [[None, None, "A Group", None], ["Ed Jones", None, "c", "a.test"],
          [None, None, "joe", "where.test"], ["John", None, "jdoe", "one.test"], END,
          ["Mary Smith", None, "mary", "x.test"]]),
        ("Undisclosed recipients:;", [[None, None, "Undisclosed recipients", None], END]),
        ("team: a@b", [[None, None, "team", None], [None, None, "a", "b"], END]),  # unterminated
        ("<@route1,@route2:user@host>", [[None, "@route1,@route2", "user", "host"]]),  # obs-route
        # RFC 5322 §A.5: comments everywhere
        ("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
         [["Pete", None, "pete", "silly.test"]]),
        ("John Q. Public <jqp@x>", [["John Q. Public", None, "jqp", "x"]]),  # obs-phrase
        ('"john doe"@example.com', [[None, None, "john doe", "example.com"]]),  # quoting removed
        ('"Giant; \\"Big\\" Box" <sysservices@example.net>',
         [['Giant; "Big" Box', None, "sysservices", "example.net"]]),
        ("=?utf-8?q?J=C3=B6rg?= <j@x>", [["=?utf-8?q?J=C3=B6rg?=", None, "j", "x"]]),  # kept raw
        ("Jörg <jörg@bücher.example>", [["Jörg", None, "jörg", "bücher.example"]]),  # RFC 6532
        ("postmaster", [[None, None, "postmaster", ""]]),  # no domain: host "" (NIL means group)
        ("a@b, , c@d,", [[None, None, "a", "b"], [None, None, "c", "d"]]),
        ("Name <a@b", [["Name", None, "a", "b"]]),
        ("", None),
        (" ,, ", None),
    ],
)
def test_parse_address_list(value: str, expected: list[list[str | None]] | None) -> None:
    assert parse_address_list(value) == expected
    assert _parse_address_list(value) == expected


def test_build_envelope_unfolds_and_keeps_raw_values() -> None:
    env = build_envelope({
        "subject": " =?utf-8?q?caf=C3=A9?=\r\n  time",
        "from": " Fred <f@x>",
        "message-id": " <1@x> ",
        "cc": "   ",
    })
    assert env == {"subject": "=?utf-8?q?caf=C3=A9?=  time", "from": [["Fred", None, "f", "x"]],
                   "message_id": "<1@x>"}


_ADDRESS_ALPHABET = st.sampled_from(
    [*"abcXYZ019.-_ +=?", '"', "<", ">", "@", ",", ";", ":", "(", ")", "\\", "é", "\t", "[", "]"]
)


@given(st.lists(_ADDRESS_ALPHABET, max_size=60).map("".join))
def test_fast_path_agrees_with_full_parser(value: str) -> None:
    assert parse_address_list(value) == _parse_address_list(value)


@given(st.text(max_size=200))
def test_parse_address_list_never_raises(value: str) -> None:
    result = parse_address_list(value)
    assert result is None or all(len(address) == 4 for address in result)
