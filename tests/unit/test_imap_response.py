"""IMAP responses: status responses and codes, the string encoder's choices, data
response builders (with RFC 9051 §7 examples), and round trips through our parser and
through IMAPClient's response parser."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from kittiwake.imap import builders as b
from kittiwake.imap import response as r
from kittiwake.imap.lexer import Cursor
from kittiwake.imap.response import Continuation, Data, Status, Tagged, Untagged
from kittiwake.imap.types import (
    Attr,
    BinarySection,
    BinarySize,
    BodySection,
    Partial,
    Section,
    SequenceSet,
)
from kittiwake.message.structure import format_bodystructure, format_envelope, parse_structure

# --------------------------------------------------------------------------- status responses


@pytest.mark.parametrize(("response", "wire"), [
    (Tagged("a1", Status.OK, "LOGIN completed"), b"a1 OK LOGIN completed\r\n"),
    (Tagged("A142", Status.OK, "SELECT completed", r.READ_WRITE),
     b"A142 OK [READ-WRITE] SELECT completed\r\n"),
    (Tagged("a", Status.NO, "no such mailbox", r.TRYCREATE), b"a NO [TRYCREATE] no such mailbox\r\n"),
    (Tagged("a", Status.BAD, ""), b"a BAD completed\r\n"),
    (Untagged(Status.OK, "UIDs valid", r.uidvalidity(3857529045)),
     b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"),
    (Untagged(Status.OK, "Predicted next UID", r.uidnext(4392)),
     b"* OK [UIDNEXT 4392] Predicted next UID\r\n"),
    (Untagged(Status.OK, "Limited", r.permanentflags(["\\Deleted", "\\Seen"])),
     b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"),
    (Untagged(Status.OK, "x", r.permanentflags([], keywords=False)),
     b"* OK [PERMANENTFLAGS ()] x\r\n"),
    (Untagged(Status.OK, "Highest", r.highestmodseq(715194045007)),
     b"* OK [HIGHESTMODSEQ 715194045007] Highest\r\n"),
    (Untagged(Status.OK, "Previous mailbox is now closed", r.CLOSED),
     b"* OK [CLOSED] Previous mailbox is now closed\r\n"),
    (Untagged(Status.OK, "ready", r.capability(["IMAP4rev2", "IMAP4rev1", "AUTH=PLAIN"])),
     b"* OK [CAPABILITY IMAP4rev2 IMAP4rev1 AUTH=PLAIN] ready\r\n"),
    (Untagged(Status.PREAUTH, "welcome"), b"* PREAUTH welcome\r\n"),
    (Untagged(Status.BYE, "Autologout; idle for too long"),
     b"* BYE Autologout; idle for too long\r\n"),
    (Untagged(Status.NO, "Disk is 98% full", r.ALERT), b"* NO [ALERT] Disk is 98% full\r\n"),
    (Tagged("A003", Status.OK, "APPEND completed", r.appenduid(38505, [3955])),
     b"A003 OK [APPENDUID 38505 3955] APPEND completed\r\n"),
    (Tagged("A004", Status.OK, "Done", r.copyuid(38505, [304, 319, 320], [3956, 3957, 3958])),
     b"A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n"),
    (Tagged("d", Status.OK, "Conditional STORE failed", r.modified([7, 9, 10, 11])),
     b"d OK [MODIFIED 7,9:11] Conditional STORE failed\r\n"),
    (Tagged("A", Status.NO, "no", r.badcharset()), b"A NO [BADCHARSET (UTF-8 US-ASCII)] no\r\n"),
    (Tagged("A", Status.NO, "quota", r.OVERQUOTA), b"A NO [OVERQUOTA] quota\r\n"),
    (Continuation(), b"+ Ready\r\n"),
    (Continuation("idling"), b"+ idling\r\n"),
    (Continuation(data=b"\x00abc"), b"+ AGFiYw==\r\n"),
    (Continuation(data=b""), b"+ \r\n"),
    (Data(b"23 EXISTS"), b"* 23 EXISTS\r\n"),
])
def test_status_responses(response: r.Response, wire: bytes) -> None:
    assert response.to_bytes() == wire
    assert r.to_bytes(response) == wire


def test_codes_from_rfc_5530_and_friends_are_atoms() -> None:
    for code in (r.UNAVAILABLE, r.AUTHENTICATIONFAILED, r.AUTHORIZATIONFAILED, r.EXPIRED,
                 r.PRIVACYREQUIRED, r.CONTACTADMIN, r.NOPERM, r.INUSE, r.EXPUNGEISSUED,
                 r.CORRUPTION, r.SERVERBUG, r.CLIENTBUG, r.CANNOT, r.LIMIT, r.NONEXISTENT,
                 r.ALREADYEXISTS, r.NOMODSEQ, r.TOOBIG, r.HASCHILDREN, r.COMPRESSIONACTIVE,
                 r.UNKNOWN_CTE, r.USEATTR, r.NOTSAVED, r.UIDNOTSTICKY, r.PARSE, r.READ_ONLY):
        assert re.fullmatch(r"[A-Z-]+", str(code))


def test_response_text_cannot_break_the_line() -> None:
    wire = Tagged("a", Status.NO, "bad\r\n* OK [ALERT] injected\x00").to_bytes()
    assert wire.count(b"\r\n") == 1 and b"\x00" not in wire
    assert Untagged(Status.OK, "[not a code]").to_bytes() == b"* OK (not a code]\r\n"
    assert Tagged("a", Status.OK, "Grüße").to_bytes() == b"a OK Gr??e\r\n"


# --------------------------------------------------------------------------- strings


@pytest.mark.parametrize(("value", "utf8", "wire"), [
    ("plain", False, b'"plain"'),
    ("", False, b'""'),
    ('say "hi" \\o/', False, b'"say \\"hi\\" \\\\o/"'),
    ("Grüße", False, b"{7}\r\nGr\xc3\xbc\xc3\x9fe"),  # rev1: 8-bit needs a literal
    ("Grüße", True, b'"Gr\xc3\xbc\xc3\x9fe"'),  # rev2 / UTF8=ACCEPT: quoted UTF-8
    (b"\xff\xfe", True, b"{2}\r\n\xff\xfe"),  # not UTF-8: literal even in UTF-8 mode
    ("two\r\nlines", True, b"{10}\r\ntwo\r\nlines"),
    ("bare\rcr", False, b"{7}\r\nbare\rcr"),
    ("nul\x00dropped", False, b'"nuldropped"'),
    ("x" * r.QUOTED_MAX, False, b'"' + b"x" * r.QUOTED_MAX + b'"'),
    ("x" * (r.QUOTED_MAX + 1), False, b"{1025}\r\n" + b"x" * (r.QUOTED_MAX + 1)),
])
def test_string_encoding(value: str | bytes, utf8: bool, wire: bytes) -> None:
    assert r.string(value, utf8=utf8) == wire


@pytest.mark.parametrize(("value", "wire"), [
    ("INBOX", b"INBOX"), ("a]b", b"a]b"), ("NIL", b'"NIL"'), ("nil", b'"nil"'),
    ("a b", b'"a b"'), ("", b'""'), ("*", b'"*"'), ("%", b'"%"'), ("{1}", b'"{1}"'),
])
def test_astring(value: str, wire: bytes) -> None:
    assert r.astring(value) == wire


def test_nstring_and_literals() -> None:
    assert r.nstring(None) == b"NIL"
    assert r.nstring("x") == b'"x"'
    assert r.literal(b"abc") == b"{3}\r\nabc"
    assert r.literal(b"a\x00c", binary=True) == b"~{3}\r\na\x00c"


@pytest.mark.parametrize(("name", "utf8", "wire"), [
    ("INBOX", False, b"INBOX"),
    ("inbox", True, b"INBOX"),
    ("Entwürfe", False, b'"Entw&APw-rfe"'),
    ("Entwürfe", True, b'"Entw\xc3\xbcrfe"'),
    ("~peter/mail/台北/日本語", False, b'"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'),
    ("A&B", False, b'"A&-B"'),
    ("A&B", True, b'"A&B"'),
])
def test_mailbox_name_encoding(name: str, utf8: bool, wire: bytes) -> None:
    assert r.mailbox_name(name, utf8=utf8) == wire


def _read_back(wire: bytes, utf8: bool, what: str = "astring") -> object:
    """Parse one value from ``wire`` with the command grammar's own reader."""
    lines, literals = [], []
    rest = wire
    while (m := re.search(rb"(~?\{\d+\})\r\n", rest)) is not None:
        lines.append(rest[:m.end(1)])
        n = int(m.group(1).strip(b"~{}"))
        literals.append(rest[m.end():m.end() + n])
        rest = rest[m.end() + n:]
    lines.append(rest)
    cur = Cursor(lines, literals, utf8=utf8)
    value = cur.mailbox() if what == "mailbox" else cur.astring()
    cur.end()
    return value


@pytest.mark.parametrize("utf8", [False, True])
@pytest.mark.parametrize("value", ["", "x", "a b", 'q"\\', "Grüße", "x\r\ny", "NIL",
                                   "x" * 2000, "日本語"])
def test_strings_round_trip_through_the_parser(value: str, utf8: bool) -> None:
    assert _read_back(r.astring(value, utf8=utf8), utf8) == value.encode()
    assert _read_back(r.string(value, utf8=utf8), utf8) == value.encode()


@pytest.mark.parametrize("utf8", [False, True])
@pytest.mark.parametrize("name", ["INBOX", "Sent", "Entwürfe", "A&B", "&-", "台北/日本語",
                                  "a b/c", "😀"])
def test_mailbox_names_round_trip(name: str, utf8: bool) -> None:
    assert _read_back(r.mailbox_name(name, utf8=utf8), utf8, "mailbox") == name


# --------------------------------------------------------------------------- data responses


PDT = timezone(timedelta(hours=-7))


@pytest.mark.parametrize(("data", "wire"), [
    (b.capability_data(["IMAP4rev2", "STARTTLS", "AUTH=GSSAPI", "LOGINDISABLED"]),
     b"* CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI LOGINDISABLED\r\n"),
    (b.enabled_data(["CONDSTORE"]), b"* ENABLED CONDSTORE\r\n"),
    (b.enabled_data([]), b"* ENABLED\r\n"),
    (b.exists_data(23), b"* 23 EXISTS\r\n"),
    (b.recent_data(5), b"* 5 RECENT\r\n"),
    (b.expunge_data(3), b"* 3 EXPUNGE\r\n"),
    (b.vanished_data([41, 43, 44, 45]), b"* VANISHED 41,43:45\r\n"),
    (b.vanished_data(SequenceSet(((300, 310), (405, 405))), earlier=True),
     b"* VANISHED (EARLIER) 300:310,405\r\n"),
    (b.flags_data(["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]),
     b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"),
    (b.search_data([2, 3, 6]), b"* SEARCH 2 3 6\r\n"),
    (b.search_data([]), b"* SEARCH\r\n"),
    (b.search_data([2, 5, 6], modseq=917162500), b"* SEARCH 2 5 6 (MODSEQ 917162500)\r\n"),
    (b.search_data([], modseq=917162500), b"* SEARCH\r\n"),
    (b.esearch_data("A282", min=2, count=3), b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n'),
    (b.esearch_data("A283", all=[2, 10, 11]), b'* ESEARCH (TAG "A283") ALL 2,10:11\r\n'),
    (b.esearch_data("A284", count=0), b'* ESEARCH (TAG "A284") COUNT 0\r\n'),
    (b.esearch_data("A285", uid=True, min=7, max=3800), b'* ESEARCH (TAG "A285") UID MIN 7 MAX 3800\r\n'),
    (b.esearch_data("A286", all=[]), b'* ESEARCH (TAG "A286")\r\n'),
    (b.esearch_data(None, uid=True, all=SequenceSet(((1, 5),)), modseq=12),
     b"* ESEARCH UID ALL 1:5 MODSEQ 12\r\n"),
    (b.list_data("blurdybloop", "/", ["\\HasNoChildren"]),
     b'* LIST (\\HasNoChildren) "/" "blurdybloop"\r\n'),
    (b.list_data("", "/", ["\\Noselect"]), b'* LIST (\\Noselect) "/" ""\r\n'),
    (b.list_data("INBOX", None, []), b"* LIST () NIL INBOX\r\n"),
    (b.list_data("Foo", "/", ["\\NonExistent"], childinfo=["SUBSCRIBED"]),
     b'* LIST (\\NonExistent) "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))\r\n'),
    (b.list_data("Entwürfe", "/", ["\\Drafts"]), b'* LIST (\\Drafts) "/" "Entw&APw-rfe"\r\n'),
    (b.list_data("Entwürfe", "/", [], utf8=True, oldname="Drafts"),
     b'* LIST () "/" "Entw\xc3\xbcrfe" ("OLDNAME" ("Drafts"))\r\n'),
    (b.list_data("Sent", ".", ["\\Sent"], command="LSUB"), b'* LSUB (\\Sent) "." "Sent"\r\n'),
    (b.status_data("blurdybloop", {"MESSAGES": 231, "UIDNEXT": 44292}),
     b'* STATUS "blurdybloop" (MESSAGES 231 UIDNEXT 44292)\r\n'),
    (b.status_data("INBOX", [("SIZE", 10)]), b"* STATUS INBOX (SIZE 10)\r\n"),
    (b.namespace_data([("", "/")]), b'* NAMESPACE (("" "/")) NIL NIL\r\n'),
    (b.namespace_data([("", "/")], [("~", "/")], [("#shared/", "/"), ("#public/", "/")]),
     b'* NAMESPACE (("" "/")) (("~" "/")) (("#shared/" "/")("#public/" "/"))\r\n'),
    (b.quota_data("", [("STORAGE", 10, 512)]), b'* QUOTA "" (STORAGE 10 512)\r\n'),
    (b.quotaroot_data("INBOX", [""]), b'* QUOTAROOT INBOX ""\r\n'),
    (b.quotaroot_data("comp.mail.mime", []), b'* QUOTAROOT "comp.mail.mime"\r\n'),
    (b.id_data({"name": "Cyrus", "version": "1.5", "os": None}),
     b'* ID ("name" "Cyrus" "version" "1.5" "os" NIL)\r\n'),
    (b.id_data(None), b"* ID NIL\r\n"),
])
def test_data_responses(data: Data, wire: bytes) -> None:
    assert data.to_bytes() == wire


def test_sequence_set_compression() -> None:
    assert b.sequence_set([1, 2, 3, 4, 5, 7, 9, 10, 11, 12]) == "1:5,7,9:12"
    assert b.sequence_set([12, 1, 3, 2, 2]) == "1:3,12"
    assert b.sequence_set([]) == ""
    assert r.compress_ordered([5, 6, 7, 1, 2]) == "5:7,1:2"


def test_internaldate_format() -> None:
    assert b.format_internaldate(datetime(1996, 7, 17, 2, 44, 25, tzinfo=PDT)) == \
        '"17-Jul-1996 02:44:25 -0700"'
    assert b.format_internaldate(datetime(2024, 1, 5, 0, 0, 0, tzinfo=timezone(
        timedelta(hours=5, minutes=30)))) == '" 5-Jan-2024 00:00:00 +0530"'
    when = datetime(2001, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-9, minutes=-30)))
    cur = Cursor([b.format_internaldate(when).encode()], [])
    assert cur.date_time() == when


RAW = (b"From: Terry Gray <gray@cac.washington.edu>\r\n"
       b"Subject: IMAP4rev2 WG mtg summary and minutes\r\n"
       b"Content-Type: text/plain\r\n\r\nhello\r\n")


def test_fetch_response_builder() -> None:
    struct = parse_structure(RAW)
    fetch = (b.FetchResponse(12)
             .flags(["\\Seen"])
             .internaldate(datetime(1996, 7, 17, 2, 44, 25, tzinfo=PDT))
             .rfc822_size(4286)
             .uid(4827313)
             .modseq(12121231000))
    assert fetch.to_bytes() == (b'* 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 '
                                b'-0700" RFC822.SIZE 4286 UID 4827313 MODSEQ (12121231000))\r\n')
    fetch = b.FetchResponse(1).envelope(format_envelope(struct))
    assert fetch.to_bytes().startswith(b'* 1 FETCH (ENVELOPE (NIL "IMAP4rev2 WG mtg summary')
    fetch = b.FetchResponse(1).bodystructure(format_bodystructure(struct))
    assert fetch.to_bytes().startswith(b'* 1 FETCH (BODYSTRUCTURE ("TEXT" "PLAIN"')


def test_fetch_sections_are_literals_and_binary_uses_literal8_only_for_nul() -> None:
    section = BodySection(Section((), "HEADER.FIELDS", ("DATE", "FROM")))
    fetch = b.FetchResponse(2).section(section, b"From: x\r\n\r\n")
    assert fetch.to_bytes() == b"* 2 FETCH (BODY[HEADER.FIELDS (DATE FROM)] {11}\r\nFrom: x\r\n\r\n)\r\n"
    partial = BodySection(Section(), Partial(100, 5), peek=True)
    assert b.FetchResponse(3).section(partial, b"abcde").to_bytes() == \
        b"* 3 FETCH (BODY[]<100> {5}\r\nabcde)\r\n"
    assert b.FetchResponse(3).section(BodySection(Section((9,))), None).to_bytes() == \
        b"* 3 FETCH (BODY[9] NIL)\r\n"
    assert b.FetchResponse(4).rfc822(Attr.RFC822_HEADER, b"a\x00b").to_bytes() == \
        b"* 4 FETCH (RFC822.HEADER {3}\r\na\x80b)\r\n"
    assert b.FetchResponse(5).binary(BinarySection((1,)), b"a\x00b").to_bytes() == \
        b"* 5 FETCH (BINARY[1] ~{3}\r\na\x00b)\r\n"
    assert b.FetchResponse(5).binary(BinarySection((1,)), b"abc").to_bytes() == \
        b"* 5 FETCH (BINARY[1] {3}\r\nabc)\r\n"
    assert b.FetchResponse(5).binary_size(BinarySize((1,)), 2000).to_bytes() == \
        b"* 5 FETCH (BINARY.SIZE[1] 2000)\r\n"


# --------------------------------------------------------------------------- IMAPClient


def _imaplib_form(wire: bytes) -> list[bytes | tuple[bytes, bytes]]:
    """Split an untagged response the way imaplib hands it to IMAPClient: each literal as
    a (text-up-to-and-including-{n}, data) tuple, then the text after it; imaplib files
    ``* 7 FETCH (...)`` under FETCH and passes on ``7 (...)``."""
    body = wire.removeprefix(b"* ").removesuffix(b"\r\n").replace(b" FETCH ", b" ", 1)
    items: list[bytes | tuple[bytes, bytes]] = []
    while (m := re.search(rb"~?\{(\d+)\}\r\n", body)) is not None:
        n = int(m.group(1))
        items.append((body[:m.end() - 2], body[m.end():m.end() + n]))
        body = body[m.end() + n:]
    items.append(body)
    return items


def test_fetch_response_parses_in_imapclient() -> None:
    parser = pytest.importorskip("imapclient.response_parser")
    struct = parse_structure(RAW)
    fetch = (b.FetchResponse(7)
             .uid(42)
             .flags(["\\Seen", "$Forwarded"])
             .internaldate(datetime(1996, 7, 17, 2, 44, 25, tzinfo=PDT))
             .rfc822_size(len(RAW))
             .envelope(format_envelope(struct))
             .section(BodySection(Section(), None, True), RAW)
             .section(BodySection(Section((), "TEXT")), b"hello\r\n"))
    parsed = parser.parse_fetch_response(_imaplib_form(fetch.to_bytes()), normalise_times=False)
    msg = parsed[42]
    assert msg[b"SEQ"] == 7
    assert msg[b"FLAGS"] == (b"\\Seen", b"$Forwarded")
    assert msg[b"RFC822.SIZE"] == len(RAW)
    assert msg[b"BODY[]"] == RAW
    assert msg[b"BODY[TEXT]"] == b"hello\r\n"
    assert msg[b"ENVELOPE"].subject == b"IMAP4rev2 WG mtg summary and minutes"
    assert msg[b"INTERNALDATE"] == datetime(1996, 7, 17, 2, 44, 25, tzinfo=PDT)


def test_list_and_status_parse_in_imapclient() -> None:
    parser = pytest.importorskip("imapclient.response_parser")
    items = parser.parse_response([b.list_data("a b", "/", ["\\HasNoChildren"]).to_bytes()
                                   .removeprefix(b"* LIST ").removesuffix(b"\r\n")])
    assert items == ((b"\\HasNoChildren",), b"/", b"a b")
    status = b.status_data("x y", {"MESSAGES": 3, "UNSEEN": 1}).to_bytes()
    items = parser.parse_response([status.removeprefix(b"* STATUS ").removesuffix(b"\r\n")])
    assert items == (b"x y", (b"MESSAGES", 3, b"UNSEEN", 1))
