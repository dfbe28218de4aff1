"""Address and path parsing (RFC 5321 §4.1.2, §4.5.3.1; RFC 6531 §3.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kittiwake.address import Address, AddressError, parse_address, parse_path


@pytest.mark.parametrize(
    ("text", "local", "domain"),
    [
        ("user@example.com", "user", "example.com"),
        ("User.Name+tag@Example.COM", "User.Name+tag", "example.com"),
        ("a!#$%&'*+-/=?^_`{|}~@x.org", "a!#$%&'*+-/=?^_`{|}~", "x.org"),
        ('"john doe"@x.org', "john doe", "x.org"),
        ('"a\\"b"@x.org', 'a"b', "x.org"),
        ('"a\\\\b"@x.org', "a\\b", "x.org"),
        ('"a@b"@x.org', "a@b", "x.org"),
        ('"plain"@x.org', "plain", "x.org"),
        ("u@localhost", "u", "localhost"),
        ("u@sub-domain.ex-ample.com", "u", "sub-domain.ex-ample.com"),
        ("u@123.example", "u", "123.example"),
        ("u@[127.0.0.1]", "u", "[127.0.0.1]"),
        ("u@[IPv6:::1]", "u", "[IPv6:::1]"),
        ("u@[IPv6:2001:db8::1]", "u", "[IPv6:2001:db8::1]"),
        ("u@[ipv6:::ffff:192.0.2.1]", "u", "[ipv6:::ffff:192.0.2.1]"),
        ("u@xn--bcher-kva.example", "u", "bücher.example"),
        ("u@XN--BCHER-KVA.example", "u", "bücher.example"),
        # IDNA2008: the A-label of straße keeps the ß (IDNA2003 would map it to "ss").
        ("u@xn--strae-oqa.de", "u", "straße.de"),
        ("u@" + "a" * 63 + ".com", "u", "a" * 63 + ".com"),
        ("a" * 64 + "@x.com", "a" * 64, "x.com"),
    ],
)
def test_valid_ascii_addresses(text: str, local: str, domain: str) -> None:
    addr = parse_address(text, smtputf8=False)
    assert addr == Address(local, domain)
    assert parse_address(text, smtputf8=True) == addr


@pytest.mark.parametrize(
    "text",
    [
        "",
        "user",
        "@example.com",
        "user@",
        "user@example.com.",  # trailing dot
        "user@.example.com",
        "user@example..com",  # empty label
        ".user@example.com",
        "user.@example.com",
        "us..er@example.com",
        "us er@example.com",  # space
        "user@exa mple.com",
        "user@ex_ample.com",
        "user@-example.com",
        "user@example-.com",
        "user@" + "a" * 64 + ".com",  # label too long
        "a" * 65 + "@x.com",  # local part too long
        '"' + "a" * 63 + '"@x.com',  # quoted local part too long (65 octets as sent)
        "u@" + ".".join(["a" * 63] * 4) + ".com",  # domain over 255
        "a@b@c.com",
        '"unterminated@x.com',
        '"bad\\\x01"@x.com',
        '""@x.com',
        '"a"b@x.com',
        "a\x00b@x.com",
        "a\tb@x.com",
        "user@[1.2.3]",
        "user@[1.2.3.256]",
        "user@[01.2.3.4]",
        "user@[IPv6:1::2::3]",
        "user@[IPv6:fe80::1%eth0]",
        "user@[tag:content]",  # general address literal: refused
        "user@[127.0.0.1",
        "user@xn--abc.com",  # invalid A-label
        "user@xn--bcher-kva-.com",
        "用户@例子.广告",  # UTF-8 without SMTPUTF8
        "user@bücher.example",
        "user@example.com\udcff",  # invalid UTF-8 (surrogateescape)
    ],
)
def test_invalid_addresses(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text, smtputf8=False)


@pytest.mark.parametrize(
    ("text", "local", "domain", "ascii_domain"),
    [
        ("用户@例子.广告", "用户", "例子.广告", "xn--fsqu00a.xn--4rr70v"),
        ("jöran@Bücher.Example", "jöran", "bücher.example", "xn--bcher-kva.example"),
        ("u@straße.de", "u", "straße.de", "xn--strae-oqa.de"),
        ('"ü ü"@x.org', "ü ü", "x.org", "x.org"),
        ("δοκιμή@παράδειγμα.δοκιμή", "δοκιμή", "παράδειγμα.δοκιμή",
         "xn--hxajbheg2az3al.xn--jxalpdlp"),
    ],
)
def test_utf8_addresses_need_smtputf8(text: str, local: str, domain: str,
                                      ascii_domain: str) -> None:
    addr = parse_address(text, smtputf8=True)
    assert addr == Address(local, domain)
    assert addr.ascii_domain == ascii_domain
    assert not addr.is_ascii
    with pytest.raises(AddressError):
        parse_address(text, smtputf8=False)


@pytest.mark.parametrize(
    "text",
    [
        "u@例子。广告",  # ideographic full stop is not a label separator in SMTP
        "u@a\u0080b.com",  # C1 control
        "u\u0085@x.com",
        "u@\u200bexample.com",  # invisible character
        "u@ｅxample.com",  # fullwidth letter (a compatibility form)
        "u@ⅷ.example",
        "u@xn--example-zz6c.com",  # A-label of a label containing U+200B
        "u@" + "".join(chr(0x4E00 + i * 37) for i in range(30)) + ".com",  # A-label > 63
        "u@a\u05d0.com",  # bidi rule: mixed LTR/RTL label
    ],
)
def test_invalid_utf8_addresses(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text, smtputf8=True)


def test_length_limits_count_utf8_octets() -> None:
    # 32 two-octet characters = 64 octets: allowed; one more is 66.
    assert parse_address("é" * 32 + "@x.com", smtputf8=True).local == "é" * 32
    with pytest.raises(AddressError):
        parse_address("é" * 33 + "@x.com", smtputf8=True)


def test_whole_path_limit_is_256_octets() -> None:
    domain = ".".join(["a" * 63] * 3) + "." + "b" * 58  # 250 octets
    assert len(domain) == 250
    assert parse_address("abc@" + domain, smtputf8=False).domain == domain  # 254 + <> = 256
    with pytest.raises(AddressError):
        parse_address("abcd@" + domain, smtputf8=False)
    with pytest.raises(AddressError):
        parse_path("<abcd@" + domain + ">", smtputf8=False)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (Address("user", "x.org"), "user@x.org"),
        (Address("first.last", "x.org"), "first.last@x.org"),
        (Address("john doe", "x.org"), '"john doe"@x.org'),
        (Address('a"b', "x.org"), '"a\\"b"@x.org'),
        (Address("a\\b", "x.org"), '"a\\\\b"@x.org'),
        (Address(".a", "x.org"), '".a"@x.org'),
        (Address("a..b", "x.org"), '"a..b"@x.org'),
        (Address("a@b", "x.org"), '"a@b"@x.org'),
        (Address("用户", "例子.广告"), "用户@例子.广告"),
        (Address("u", "[IPv6:::1]"), "u@[IPv6:::1]"),
    ],
)
def test_str_quotes_only_when_needed(address: Address, text: str) -> None:
    assert str(address) == text
    assert parse_address(text, smtputf8=True) == address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<user@x.org>", Address("user", "x.org")),
        ("<>", None),
        ("<@a.example,@b.example:user@x.org>", Address("user", "x.org")),
        ("<@[IPv6:::1]:user@x.org>", Address("user", "x.org")),
        ('<"a>b"@x.org>', Address("a>b", "x.org")),
        ("<用户@例子.广告>", Address("用户", "例子.广告")),
    ],
)
def test_parse_path(text: str, expected: Address | None) -> None:
    assert parse_path(text, smtputf8=True) == expected


@pytest.mark.parametrize(
    "text",
    [
        "user@x.org",  # missing brackets
        "<user@x.org",
        "user@x.org>",
        "< user@x.org>",
        "<user@x.org >",
        "<@a.example:>",
        "<@a.example user@x.org>",
        "<@:user@x.org>",
        "<a.example:user@x.org>",
        "<@a..example:user@x.org>",
        "<<>>",
        "<postmaster>",  # only the SMTP core special-cases RCPT TO:<postmaster>
        "",
        "<",
    ],
)
def test_invalid_paths(text: str) -> None:
    with pytest.raises(AddressError):
        parse_path(text, smtputf8=True)


_qtext = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@given(st.text(_qtext, min_size=1, max_size=60))
def test_any_printable_local_part_round_trips(local: str) -> None:
    addr = Address(local, "example.com")
    assert parse_address(str(addr), smtputf8=False) == addr
