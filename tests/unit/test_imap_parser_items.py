"""FETCH items and sections, STORE, and SEARCH keys: the parts of the grammar with the
most structure (RFC 9051 §6.4.4-§6.4.6; RFC 3516; RFC 7162)."""

from __future__ import annotations

from datetime import date

import pytest
from test_imap_parser import bad, parse, seq

from kittiwake.imap import commands as c
from kittiwake.imap.types import (
    STAR,
    Attr,
    BinarySection,
    BinarySize,
    BodySection,
    Partial,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
    Section,
    SequenceSet,
    StoreMode,
)

# --------------------------------------------------------------------------- FETCH


@pytest.mark.parametrize(("items", "expected"), [
    (b"ALL", (Attr.FLAGS, Attr.INTERNALDATE, Attr.RFC822_SIZE, Attr.ENVELOPE)),
    (b"fast", (Attr.FLAGS, Attr.INTERNALDATE, Attr.RFC822_SIZE)),
    (b"FULL", (Attr.FLAGS, Attr.INTERNALDATE, Attr.RFC822_SIZE, Attr.ENVELOPE, Attr.BODY)),
    (b"(ENVELOPE BODYSTRUCTURE BODY UID MODSEQ RFC822 RFC822.HEADER RFC822.TEXT)",
     (Attr.ENVELOPE, Attr.BODYSTRUCTURE, Attr.BODY, Attr.UID, Attr.MODSEQ, Attr.RFC822,
      Attr.RFC822_HEADER, Attr.RFC822_TEXT)),
    (b"(FLAGS FLAGS)", (Attr.FLAGS,)),
    (b"BODY[]", (BodySection(Section()),)),
    (b"BODY.PEEK[]<0.2048>", (BodySection(Section(), Partial(0, 2048), peek=True),)),
    (b"BODY[TEXT]", (BodySection(Section((), "TEXT")),)),
    (b"BODY[HEADER]", (BodySection(Section((), "HEADER")),)),
    (b"body[header.fields.not (x-spam \"List-Id\")]",
     (BodySection(Section((), "HEADER.FIELDS.NOT", ("x-spam", "List-Id"))),)),
    (b"BODY[1]", (BodySection(Section((1,))),)),
    (b"BODY[4.2.2.1]", (BodySection(Section((4, 2, 2, 1))),)),
    (b"BODY[3.MIME]", (BodySection(Section((3,), "MIME")),)),
    (b"BODY[4.2.HEADER]", (BodySection(Section((4, 2), "HEADER")),)),
    (b"BODY[4.2.TEXT]<10.20>", (BodySection(Section((4, 2), "TEXT"), Partial(10, 20)),)),
    (b"BINARY[]", (BinarySection(),)),
    (b"BINARY.SIZE[]", (BinarySize(),)),
])
def test_fetch_items(items: bytes, expected: tuple[object, ...]) -> None:
    result = parse(b"a FETCH 1 " + items)
    assert isinstance(result, c.Fetch)
    assert result.items == expected


@pytest.mark.parametrize("items", [
    b"BODY.PEEK", b"BINARY", b"BODY[MIME]", b"BODY[HEADER.FIELDS]", b"BODY[HEADER.FIELDS ()]",
    b"BODY[0]", b"BODY[1.]", b"BODY[.1]", b"BODY[1.FOO]", b"BODY[1", b"BODY[]<0>",
    b"BODY[]<0.0>", b"BINARY[TEXT]", b"BINARY.SIZE[1]<0.1>", b"(ALL)", b"(FLAGS", b"()",
    b"FLAGS BODY", b"BOGUS", b"(FLAGS) (CHANGEDSINCE)", b"(FLAGS) (FOO 1)", b"(FLAGS) ()",
])
def test_bad_fetch_items(items: bytes) -> None:
    bad(b"a FETCH 1 " + items)


def test_section_echo_form() -> None:
    item = BodySection(Section((1, 2), "HEADER.FIELDS", ("FROM", "x y")), Partial(5, 10))
    assert item.response_name == 'BODY[1.2.HEADER.FIELDS (FROM "x y")]<5>'
    assert BinarySection((1,), Partial(0, 1)).response_name == "BINARY[1]<0>"
    assert BinarySize((2, 1)).response_name == "BINARY.SIZE[2.1]"


# --------------------------------------------------------------------------- STORE


@pytest.mark.parametrize(("wire", "mode", "flags", "silent"), [
    (b"a STORE 1 FLAGS (\\Seen)", StoreMode.REPLACE, ("\\Seen",), False),
    (b"a STORE 1 -FLAGS.SILENT \\Seen \\Flagged", StoreMode.REMOVE, ("\\Seen", "\\Flagged"),
     True),
    (b"a STORE 1 +flags.silent ($Forwarded)", StoreMode.ADD, ("$Forwarded",), True),
    (b"a STORE 1 FLAGS ()", StoreMode.REPLACE, (), False),
])
def test_store(wire: bytes, mode: StoreMode, flags: tuple[str, ...], silent: bool) -> None:
    assert parse(wire) == c.Store("a", seq((1, 1)), mode, flags, silent)


@pytest.mark.parametrize("wire", [
    b"a STORE 1 FLAGS", b"a STORE 1 XFLAGS (\\Seen)", b"a STORE 1 +FLAGS (\\Recent)",
    b"a STORE 1 FLAGS.LOUD (\\Seen)", b"a STORE 1 (UNCHANGEDSINCE) FLAGS (\\Seen)",
    b"a STORE 1 (FOO 1) FLAGS (\\Seen)", b"a STORE 1 +FLAGS (\\Seen",
])
def test_bad_store(wire: bytes) -> None:
    bad(wire)


# --------------------------------------------------------------------------- SEARCH


def _criteria(wire: bytes) -> object:
    result = parse(b"a SEARCH " + wire)
    assert isinstance(result, c.Search), result
    return result.criteria


@pytest.mark.parametrize(("wire", "expected"), [
    (b"ALL", SearchAll()),
    (b"ANSWERED", SearchFlag("\\Answered")), (b"UNANSWERED", SearchFlag("\\Answered", False)),
    (b"DELETED", SearchFlag("\\Deleted")), (b"UNDELETED", SearchFlag("\\Deleted", False)),
    (b"DRAFT", SearchFlag("\\Draft")), (b"UNDRAFT", SearchFlag("\\Draft", False)),
    (b"FLAGGED", SearchFlag("\\Flagged")), (b"UNFLAGGED", SearchFlag("\\Flagged", False)),
    (b"SEEN", SearchFlag("\\Seen")), (b"UNSEEN", SearchFlag("\\Seen", False)),
    (b"RECENT", SearchFlag("\\Recent")), (b"OLD", SearchFlag("\\Recent", False)),
    (b"NEW", SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False)))),
    (b"KEYWORD $Junk", SearchFlag("$Junk")), (b"UNKEYWORD foo", SearchFlag("foo", False)),
    (b"BCC x", SearchText("BCC", "x")), (b"BODY x", SearchText("BODY", "x")),
    (b"CC x", SearchText("CC", "x")), (b"FROM x", SearchText("FROM", "x")),
    (b'SUBJECT "a b"', SearchText("SUBJECT", "a b")), (b"TEXT x", SearchText("TEXT", "x")),
    (b"TO {1}\r\nx", SearchText("TO", "x")),
    (b'HEADER List-Id ""', SearchHeader("List-Id", "")),
    (b"BEFORE 1-Feb-1994", SearchDate("BEFORE", date(1994, 2, 1))),
    (b'ON "01-Feb-1994"', SearchDate("ON", date(1994, 2, 1))),
    (b"SINCE 29-feb-2024", SearchDate("SINCE", date(2024, 2, 29))),
    (b"SENTBEFORE 1-Feb-1994", SearchDate("SENTBEFORE", date(1994, 2, 1))),
    (b"SENTON 1-Feb-1994", SearchDate("SENTON", date(1994, 2, 1))),
    (b"SENTSINCE 1-Feb-1994", SearchDate("SENTSINCE", date(1994, 2, 1))),
    (b"LARGER 9223372036854775807", SearchSize(True, 2**63 - 1)),
    (b"SMALLER 0", SearchSize(False, 0)),
    (b"UID 1:*", SearchSet(seq((1, STAR)), uid=True)),
    (b"UID $", SearchSet(SequenceSet(saved=True), uid=True)),
    (b"2,4:*", SearchSet(seq((2, 2), (4, STAR)))),
    (b"$", SearchSet(SequenceSet(saved=True))),
    (b"NOT SEEN", SearchNot(SearchFlag("\\Seen"))),
    (b"OR SEEN FLAGGED", SearchOr(SearchFlag("\\Seen"), SearchFlag("\\Flagged"))),
    (b"OR (SEEN FLAGGED) NOT (DELETED)",
     SearchOr(SearchAnd((SearchFlag("\\Seen"), SearchFlag("\\Flagged"))),
              SearchNot(SearchFlag("\\Deleted")))),
    (b"OR OR FROM a FROM b FROM c",
     SearchOr(SearchOr(SearchText("FROM", "a"), SearchText("FROM", "b")),
              SearchText("FROM", "c"))),
    (b"((((SEEN))))", SearchFlag("\\Seen")),
    (b"MODSEQ 0", SearchModSeq(0)),
    (b'MODSEQ "/flags/\\\\Seen" priv 5', SearchModSeq(5, "/flags/\\Seen", "PRIV")),
])
def test_search_keys(wire: bytes, expected: object) -> None:
    assert _criteria(wire) == expected


@pytest.mark.parametrize("wire", [
    b"", b"FOO", b"FROM", b"OR SEEN", b"NOT", b"(SEEN", b"SEEN)", b"()", b"BEFORE 30-Feb-2001",
    b"BEFORE 1-Foo-2001", b"BEFORE 1-Feb-01", b"LARGER x", b"LARGER -1", b"KEYWORD \\Seen",
    b"UID", b"MODSEQ \"/flags/x\" bogus 1", b"MODSEQ", b"CHARSET", b"SEEN  DELETED",
    b"RETURN (MIN)", b"HEADER x",
])
def test_bad_search(wire: bytes) -> None:
    bad(b"a SEARCH " + wire)


def test_search_return_and_charset() -> None:
    result = parse(b"a UID SEARCH RETURN (MIN MAX ALL COUNT SAVE) CHARSET us-ascii ALL")
    assert result == c.Search("a", SearchAll(), True, "US-ASCII",
                              frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"}))
    bad(b"a SEARCH RETURN (PARTIAL) ALL")
    latin = parse(b"a SEARCH CHARSET ISO-8859-1 TEXT {3}\r\n\xe9t\xe9")
    assert isinstance(latin, c.Search) and latin.criteria == SearchText("TEXT", "été")
    unknown = parse(b"a SEARCH CHARSET X-NOPE TEXT foo")
    assert isinstance(unknown, c.Search)
    assert unknown.charset == "X-NOPE" and not unknown.charset_known
    bad(b'a SEARCH TEXT "\xff"')  # UTF-8 is the default charset


def test_search_nesting_limit() -> None:
    deep = b"NOT " * 10 + b"SEEN"
    assert isinstance(parse(b"a SEARCH " + deep, max_nesting=10), c.Search)
    err = bad(b"a SEARCH NOT " + deep, max_nesting=10)
    assert err.code is not None and err.code.name == "LIMIT"
    parens = b"(" * 11 + b"SEEN" + b")" * 11
    bad(b"a SEARCH " + parens, max_nesting=10)
    ors = b"OR SEEN " * 11 + b"SEEN"
    bad(b"a SEARCH " + ors, max_nesting=10)
    # The default limit holds against a line of 64 KiB of NOTs: no RecursionError.
    bad(b"a SEARCH " + b"NOT " * 16000 + b"SEEN")
