"""The IMAP command parser, table-driven from the client lines of the RFC 9051 §6 examples
(and those of the extensions we offer), then the grammar's corners one by one."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from kittiwake.imap import commands as c
from kittiwake.imap.commands import State
from kittiwake.imap.events import ParseError, SendContinuation
from kittiwake.imap.framing import Framer, FramingLimits
from kittiwake.imap.parser import ParseContext, parse_command
from kittiwake.imap.types import (
    STAR,
    Attr,
    BinarySection,
    BinarySize,
    BodySection,
    Partial,
    QResync,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchModSeq,
    SearchNot,
    SearchSet,
    SearchText,
    Section,
    SequenceSet,
    StoreMode,
)

AUTH = State.AUTHENTICATED
SEL = State.SELECTED
NOT_AUTH = State.NOT_AUTHENTICATED


def parse(wire: bytes, state: State = SEL, *, utf8: bool = False,
          enabled: frozenset[str] = frozenset(), **limits: int) -> c.Command | ParseError:
    """Frame ``wire`` + CRLF (one command) and parse it."""
    wire += b"\r\n"
    framer = Framer(FramingLimits())
    framer.buf += wire
    while True:
        out = framer.next(state)
        if isinstance(out, SendContinuation):
            continue
        assert out is not None, "incomplete command"
        if isinstance(out, ParseError):
            return out
        assert not framer.buf, "more than one command"
        ctx = ParseContext(state, utf8, enabled, **limits)
        return parse_command(out.lines, out.literals, ctx)


def bad(wire: bytes, state: State = SEL, **kw: object) -> ParseError:
    result = parse(wire, state, **kw)  # type: ignore[arg-type]
    assert isinstance(result, ParseError), result
    return result


def seq(*ranges: tuple[int, int]) -> SequenceSet:
    return SequenceSet(tuple(ranges))


PST = timezone(timedelta(hours=-8))
MESSAGE = (b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
           b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
           b"Subject: afternoon meeting\r\n"
           b"To: mooch@owatagu.siam.edu.example\r\n"
           b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
           b"\r\n"
           b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n")
MOSCOW = "Москва".encode()

# (client line(s), state, expected command) — RFC 9051 §6 examples first.
RFC_EXAMPLES: list[tuple[bytes, State, c.Command]] = [
    # §6.1 any state
    (b"abcd CAPABILITY", NOT_AUTH, c.Capability("abcd")),
    (b"a002 NOOP", SEL, c.Noop("a002")),
    (b"a047 NOOP", AUTH, c.Noop("a047")),
    (b"A023 LOGOUT", SEL, c.Logout("A023")),
    # §6.2 not authenticated
    (b"a002 STARTTLS", NOT_AUTH, c.StartTls("a002")),
    (b"A001 AUTHENTICATE GSSAPI", NOT_AUTH, c.Authenticate("A001", "GSSAPI")),
    (b"a004 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=", NOT_AUTH,
     c.Authenticate("a004", "PLAIN", b"test\x00test\x00test")),
    (b"a001 LOGIN SMITH SESAME", NOT_AUTH, c.Login("a001", "SMITH", "SESAME")),
    # §6.3 authenticated
    (b"t2 ENABLE CONDSTORE X-GOOD-IDEA", AUTH, c.Enable("t2", ("CONDSTORE", "X-GOOD-IDEA"))),
    (b"A142 SELECT INBOX", AUTH, c.Select("A142", "INBOX")),
    (b"A932 EXAMINE blurdybloop", AUTH, c.Examine("A932", "blurdybloop")),
    (b"A003 CREATE owatagusiam/", AUTH, c.Create("A003", "owatagusiam/")),
    (b"A004 CREATE owatagusiam/blurdybloop", AUTH, c.Create("A004", "owatagusiam/blurdybloop")),
    (b"A683 DELETE blurdybloop", AUTH, c.Delete("A683", "blurdybloop")),
    (b"A685 DELETE foo/bar", AUTH, c.Delete("A685", "foo/bar")),
    (b'A682 LIST "" *', AUTH, c.List("A682", "", ("*",))),
    (b'A86 LIST "" %', AUTH, c.List("A86", "", ("%",))),
    (b"A683 RENAME blurdybloop sarasoop", AUTH, c.Rename("A683", "blurdybloop", "sarasoop")),
    (b"A684 RENAME foo zowie", AUTH, c.Rename("A684", "foo", "zowie")),
    (b"A002 SUBSCRIBE #news.comp.mail.mime", AUTH,
     c.Subscribe("A002", "#news.comp.mail.mime")),
    (b"A002 UNSUBSCRIBE #news.comp.mail.mime", AUTH,
     c.Unsubscribe("A002", "#news.comp.mail.mime")),
    (b'A101 LIST "" ""', AUTH, c.List("A101", "", ("",))),
    (b'A102 LIST #news.comp.mail.misc ""', AUTH, c.List("A102", "#news.comp.mail.misc", ("",))),
    (b'A103 LIST /usr/staff/jones ""', AUTH, c.List("A103", "/usr/staff/jones", ("",))),
    (b"A202 LIST ~/Mail/ %", AUTH, c.List("A202", "~/Mail/", ("%",))),
    (b'A02 LIST (SUBSCRIBED) "" "*"', AUTH,
     c.List("A02", "", ("*",), frozenset({"SUBSCRIBED"}), extended=True)),
    (b'A03 LIST () "" "%" RETURN (CHILDREN)', AUTH,
     c.List("A03", "", ("%",), return_options=frozenset({"CHILDREN"}), extended=True)),
    (b'A04 LIST (REMOTE) "" "%" RETURN (CHILDREN)', AUTH,
     c.List("A04", "", ("%",), frozenset({"REMOTE"}), frozenset({"CHILDREN"}), extended=True)),
    (b'A05 LIST (REMOTE SUBSCRIBED) "" "*"', AUTH,
     c.List("A05", "", ("*",), frozenset({"REMOTE", "SUBSCRIBED"}), extended=True)),
    (b'A07 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"', AUTH,
     c.List("A07", "", ("%",), frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}), extended=True)),
    (b'A10 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)', AUTH,
     c.List("A10", "", ("%",), frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
            frozenset({"CHILDREN"}), extended=True)),
    (b'A11 LIST "" ("INBOX" "Drafts" "Sent/%")', AUTH,
     c.List("A11", "", ("INBOX", "Drafts", "Sent/%"), extended=True)),
    (b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))', AUTH,
     c.List("A01", "", ("%",), return_options=frozenset({"STATUS"}),
            status_items=("MESSAGES", "UNSEEN"), extended=True)),
    (b'A001 NAMESPACE', AUTH, c.Namespace("A001")),
    (b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)", AUTH,
     c.Status("A042", "blurdybloop", ("UIDNEXT", "MESSAGES"))),
    (b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(MESSAGE) + MESSAGE, AUTH,
     c.Append("A003", "saved-messages", MESSAGE, ("\\Seen",))),
    (b"A003 APPEND saved-messages (\\Seen) {%d+}\r\n" % len(MESSAGE) + MESSAGE, AUTH,
     c.Append("A003", "saved-messages", MESSAGE, ("\\Seen",))),
    (b"A001 IDLE", SEL, c.Idle("A001")),
    # §6.4 selected
    (b"A341 CLOSE", SEL, c.Close("A341")),
    (b"A342 UNSELECT", SEL, c.Unselect("A342")),
    (b"A202 EXPUNGE", SEL, c.Expunge("A202")),
    (b'A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"', SEL,
     c.Search("A282", SearchAnd((SearchFlag("\\Flagged"), SearchDate("SINCE", date(1994, 2, 1)),
                                 SearchNot(SearchText("FROM", "Smith")))),
              returns=frozenset({"MIN", "COUNT"}))),
    (b'A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"', SEL,
     c.Search("A283", SearchAnd((SearchFlag("\\Flagged"), SearchDate("SINCE", date(1994, 2, 1)),
                                 SearchNot(SearchText("FROM", "Smith")))),
              returns=frozenset())),
    (b'A284 SEARCH TEXT "string not in mailbox"', SEL,
     c.Search("A284", SearchText("TEXT", "string not in mailbox"))),
    (b"A285 SEARCH CHARSET UTF-8 TEXT {12}\r\n" + MOSCOW, SEL,
     c.Search("A285", SearchText("TEXT", "Москва"), charset="UTF-8")),
    (b"A286 SEARCH CHARSET UTF-8 TEXT {12+}\r\n" + MOSCOW, SEL,
     c.Search("A286", SearchText("TEXT", "Москва"), charset="UTF-8")),
    (b'A282 SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"', SEL,
     c.Search("A282", SearchAnd((SearchFlag("\\Flagged"), SearchDate("SINCE", date(1994, 2, 1)),
                                 SearchNot(SearchText("FROM", "Smith")))),
              returns=frozenset({"SAVE"}))),
    (b"A283 FETCH $ (UID INTERNALDATE FLAGS RFC822.SIZE)", SEL,
     c.Fetch("A283", SequenceSet(saved=True),
             (Attr.UID, Attr.INTERNALDATE, Attr.FLAGS, Attr.RFC822_SIZE))),
    (b'A301 SEARCH RETURN (SAVE) SINCE 1-Jan-2004 NOT FROM "Smith" UID 443:557', SEL,
     c.Search("A301", SearchAnd((SearchDate("SINCE", date(2004, 1, 1)),
                                 SearchNot(SearchText("FROM", "Smith")),
                                 SearchSet(seq((443, 557)), uid=True))),
              returns=frozenset({"SAVE"}))),
    (b'A302 COPY $ "Other Messages"', SEL,
     c.Copy("A302", SequenceSet(saved=True), "Other Messages")),
    (b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])", SEL,
     c.Fetch("A654", seq((2, 4)),
             (Attr.FLAGS, BodySection(Section((), "HEADER.FIELDS", ("DATE", "FROM")))))),
    (b"A003 STORE 2:4 +FLAGS (\\Deleted)", SEL,
     c.Store("A003", seq((2, 4)), StoreMode.ADD, ("\\Deleted",))),
    (b"A003 COPY 2:4 MEETING", SEL, c.Copy("A003", seq((2, 4)), "MEETING")),
    (b"a UID MOVE 42:69 foo", SEL, c.Move("a", seq((42, 69)), "foo", uid=True)),
    (b"A999 UID FETCH 4827313:4828442 FLAGS", SEL,
     c.Fetch("A999", seq((4827313, 4828442)), (Attr.FLAGS,), uid=True)),
    (b"A003 UID EXPUNGE 3000:3002", SEL, c.Expunge("A003", seq((3000, 3002)))),
    # RFC 2971 ID
    (b'a023 ID ("name" "sodr" "version" "19.34" "vendor" "Pink Floyd Music Limited")', AUTH,
     c.Id("a023", (("name", "sodr"), ("version", "19.34"),
                   ("vendor", "Pink Floyd Music Limited")))),
    (b"a042 ID NIL", NOT_AUTH, c.Id("a042", None)),
    # RFC 4959 SASL-IR
    (b"a01 AUTHENTICATE EXTERNAL =", NOT_AUTH, c.Authenticate("a01", "EXTERNAL", b"")),
    # RFC 4978 COMPRESS
    (b"a COMPRESS DEFLATE", AUTH, c.Compress("a", "DEFLATE")),
    # RFC 6154 SPECIAL-USE
    (b't1 CREATE "Important Messages" (USE (\\Important))', AUTH,
     c.Create("t1", "Important Messages", ("\\Important",))),
    (b'a1 CREATE MySpecialArchive (USE (\\Archive))', AUTH,
     c.Create("a1", "MySpecialArchive", ("\\Archive",))),
    (b't3 LIST (SPECIAL-USE) "" "*"', AUTH,
     c.List("t3", "", ("*",), frozenset({"SPECIAL-USE"}), extended=True)),
    (b't1 LIST "" "%" RETURN (SPECIAL-USE)', AUTH,
     c.List("t1", "", ("%",), return_options=frozenset({"SPECIAL-USE"}), extended=True)),
    # RFC 7162 CONDSTORE / QRESYNC
    (b"a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)", SEL,
     c.Store("a103", seq((6, 6), (4, 4), (8, 8)), StoreMode.ADD, ("\\Deleted",), True, True,
             12121230045)),
    (b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)", SEL,
     c.Fetch("s100", seq((1, STAR)), (Attr.FLAGS,), uid=True, changed_since=12345)),
    (b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338', SEL,
     c.Search("a", SearchModSeq(620162338, "/flags/\\draft", "ALL"))),
    (b"a1 SELECT INBOX (CONDSTORE)", AUTH, c.Select("a1", "INBOX", condstore=True)),
    # RFC 9208 QUOTA
    (b'G0001 GETQUOTA "!partition/sda4"', AUTH, c.GetQuota("G0001", "!partition/sda4")),
    (b"G0002 GETQUOTAROOT INBOX", AUTH, c.GetQuotaRoot("G0002", "INBOX")),
    (b'S0000 SETQUOTA "#user/alice" (STORAGE 510)', AUTH,
     c.SetQuota("S0000", "#user/alice", (("STORAGE", 510),))),
    # RFC 3516 BINARY
    (b"t4 FETCH 1 (BINARY[1]<0.10> BINARY.PEEK[2] BINARY.SIZE[2])", SEL,
     c.Fetch("t4", seq((1, 1)), (BinarySection((1,), Partial(0, 10)),
                                 BinarySection((2,), peek=True), BinarySize((2,))))),
]


@pytest.mark.parametrize(("wire", "state", "expected"), RFC_EXAMPLES,
                         ids=[w[:40].decode("ascii", "replace") for w, _, _ in RFC_EXAMPLES])
def test_rfc_examples_parse(wire: bytes, state: State, expected: c.Command) -> None:
    assert parse(wire, state) == expected


QRESYNC = frozenset({"QRESYNC", "CONDSTORE"})


@pytest.mark.parametrize(("wire", "expected"), [
    (b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
     QResync(67890007, 20050715194045000, seq((41, 41), (43, 211), (214, 541)))),
    (b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000 "
     b"15000,22500,27000)))",
     QResync(67890007, 90060115194045000, seq((1, 29997)), seq((5000, 5000), (7500, 7500),
             (9000, 9000)), seq((15000, 15000), (22500, 22500), (27000, 27000)))),
    (b"A01 SELECT INBOX (QRESYNC (1 2))", QResync(1, 2)),
    (b"A01 SELECT INBOX (QRESYNC (1 2 (3 4)))", QResync(1, 2, None, seq((3, 3)), seq((4, 4)))),
])
def test_select_qresync(wire: bytes, expected: QResync) -> None:
    result = parse(wire, AUTH, enabled=QRESYNC)
    assert isinstance(result, c.Select)
    assert result.qresync == expected


def test_qresync_needs_enable_and_no_star() -> None:
    assert "not enabled" in bad(b"A SELECT INBOX (QRESYNC (1 2))", AUTH).text
    bad(b"A SELECT INBOX (QRESYNC (1 2 1:*))", AUTH, enabled=QRESYNC)
    bad(b"A SELECT INBOX (FOO)", AUTH)
    bad(b"A SELECT INBOX (CONDSTORE CONDSTORE)", AUTH)


def test_vanished_rules() -> None:
    ok = parse(b"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)", enabled=QRESYNC)
    assert isinstance(ok, c.Fetch) and ok.vanished and ok.changed_since == 12345
    bad(b"s100 FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)", enabled=QRESYNC)
    bad(b"s100 UID FETCH 300:500 (FLAGS) (VANISHED)", enabled=QRESYNC)
    bad(b"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    bad(b"s100 UID FETCH 1 (FLAGS) (CHANGEDSINCE 0)")


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize(("wire", "username", "password"), [
    (b"a LOGIN user pass", "user", "pass"),
    (b'a LOGIN "us er" "p\\"a\\\\ss"', "us er", 'p"a\\ss'),
    (b"a LOGIN {4}\r\nuser {4+}\r\npass", "user", "pass"),
    (b'a LOGIN "j\xc3\xb6rg" "\xe2\x82\xac"', "jörg", "€"),
    (b"a LOGIN user]x pass", "user]x", "pass"),  # ASTRING-CHAR includes "]"
    (b'a LOGIN "" ""', "", ""),
    (b"a LOGIN {0}\r\n {0}\r\n", "", ""),
])
def test_login_strings(wire: bytes, username: str, password: str) -> None:
    assert parse(wire, NOT_AUTH) == c.Login("a", username, password)


@pytest.mark.parametrize("wire", [
    b'a LOGIN "unterminated',
    b'a LOGIN "bad\\escape" x',
    b"a LOGIN user",
    b"a LOGIN  user pass",
    b"a LOGIN user pass extra",
    b"a LOGIN (user) pass",
    b'a LOGIN "\xff" pass',  # not UTF-8
    b"a LOGIN {3}\r\na\x00b pass",  # NUL in a literal
    b"a LOGIN ~{3}\r\nabc pass",  # literal8 outside APPEND
    b"a LOGIN {3} x",  # a literal marker must end the line
])
def test_login_malformed_is_tagged_bad(wire: bytes) -> None:
    assert bad(wire, NOT_AUTH).tag == "a"


@pytest.mark.parametrize(("wire", "tag"), [
    (b"", None),
    (b"+tag NOOP", None),  # "+" cannot start a tag (RFC 9051 tag)
    (b"(x NOOP", None),
    (b"a", "a"),
    (b"a ", "a"),
    (b"a\tNOOP", "a"),
    (b"* NOOP", None),
    (b"a NOOP extra", "a"),
])
def test_tags(wire: bytes, tag: str | None) -> None:
    err = bad(wire)
    assert err.tag == tag
    assert err.response.to_bytes().startswith((tag or "*").encode() + b" BAD")


def test_unknown_command_and_wrong_state() -> None:
    assert bad(b"a FROBNICATE").text == "unknown command"
    assert "not allowed" in bad(b"a FETCH 1 FLAGS", AUTH).text
    assert "not allowed" in bad(b"a SELECT INBOX", NOT_AUTH).text
    assert "not allowed" in bad(b"a LOGIN u p", AUTH).text
    assert "not allowed" in bad(b"a ENABLE IMAP4rev2", SEL).text
    assert parse(b"a noop") == c.Noop("a")  # command names are case-insensitive
    assert parse(b"a uid fetch 1 flags") == c.Fetch("a", seq((1, 1)), (Attr.FLAGS,), uid=True)
    assert bad(b"a UID FROB 1").tag == "a"


@pytest.mark.parametrize(("text", "expected"), [
    ("1", ((1, 1),)), ("1:5", ((1, 5),)), ("5:1", ((5, 1),)), ("*", ((STAR, STAR),)),
    ("1:*", ((1, STAR),)), ("*:3", ((STAR, 3),)), ("1,3:4,7:*", ((1, 1), (3, 4), (7, STAR))),
    ("4294967295", ((4294967295, 4294967295),)),
])
def test_sequence_sets(text: str, expected: tuple[tuple[int, int], ...]) -> None:
    result = parse(b"a FETCH " + text.encode() + b" FLAGS")
    assert isinstance(result, c.Fetch)
    assert result.sequence_set == SequenceSet(expected)
    assert str(result.sequence_set) == text


@pytest.mark.parametrize("text", [b"0", b"1:0", b"4294967296", b"1,,2", b",1", b"1:",
                                  b":1", b"1:2:3", b"$1", b"1$", b"a"])
def test_bad_sequence_sets(text: bytes) -> None:
    bad(b"a FETCH " + text + b" FLAGS")


def test_sequence_set_range_limit() -> None:
    many = b",".join(b"%d" % n for n in range(1, 102))
    assert isinstance(parse(b"a FETCH " + many + b" FLAGS", max_ranges=101), c.Fetch)
    err = bad(b"a FETCH " + many + b" FLAGS", max_ranges=100)
    assert err.code is not None and err.code.name == "LIMIT"


# --------------------------------------------------------------------------- mailboxes


@pytest.mark.parametrize(("wire", "utf8", "name"), [
    (b"a SELECT Entw&APw-rfe", False, "Entwürfe"),
    (b'a SELECT "~peter/mail/&U,BTFw-/&ZeVnLIqe-"', False, "~peter/mail/台北/日本語"),
    (b"a SELECT A&-B", False, "A&B"),
    (b"a SELECT inbox", False, "INBOX"),
    (b'a SELECT "InBoX"', True, "INBOX"),
    (b'a SELECT "Entw\xc3\xbcrfe"', True, "Entwürfe"),
    (b"a SELECT A&-B", True, "A&-B"),  # in UTF-8 mode "&" is just a character
    (b"a SELECT {9}\r\nEntw\xc3\xbcrfe", True, "Entwürfe"),
])
def test_mailbox_names(wire: bytes, utf8: bool, name: str) -> None:
    result = parse(wire, AUTH, utf8=utf8)
    assert isinstance(result, c.Select)
    assert result.mailbox == name


@pytest.mark.parametrize(("wire", "utf8"), [
    (b'a SELECT "Entw\xc3\xbcrfe"', False),  # 8-bit in a rev1 name
    (b"a SELECT A&B", False),  # unterminated shift
    (b"a SELECT &AGE-", False),  # "a" must not be encoded
    (b"a SELECT &Jjo", False),
    (b"a SELECT &Jj!-", False),
    (b'a SELECT "\xff"', True),
    (b"a SELECT {3}\r\na\rb", True),  # control character
])
def test_bad_mailbox_names(wire: bytes, utf8: bool) -> None:
    bad(wire, AUTH, utf8=utf8)


def test_list_patterns_keep_case_and_decode() -> None:
    result = parse(b"a LIST Inbox/ Entw&APw-rfe*", AUTH)
    assert result == c.List("a", "Inbox/", ("Entwürfe*",))
    assert parse(b'a LSUB "#news." "comp.mail.*"', AUTH) == c.Lsub("a", "#news.",
                                                                    "comp.mail.*")


@pytest.mark.parametrize("wire", [
    b'a LIST (RECURSIVEMATCH) "" %',  # RFC 5258 §3.1: needs a base option
    b'a LIST (REMOTE RECURSIVEMATCH) "" %',
    b'a LIST (FOO) "" %',
    b'a LIST "" % RETURN (FOO)',
    b'a LIST "" % RETURN (STATUS ())',
    b'a LIST "" % RETURN (STATUS (FOO))',
    b'a LIST "" % FOO (CHILDREN)',
    b'a LIST "" ()',
    b"a LIST ",
])
def test_bad_list(wire: bytes) -> None:
    bad(wire, AUTH)


# --------------------------------------------------------------------------- APPEND


def test_append_with_date_and_flags() -> None:
    wire = b'a APPEND Drafts (\\Draft $MDNSent \\seen) "07-Feb-1994 21:52:25 -0800" {5}\r\nhello'
    assert parse(wire, AUTH) == c.Append("a", "Drafts", b"hello", ("\\Draft", "$MDNSent",
                                                                    "\\Seen"),
                                         datetime(1994, 2, 7, 21, 52, 25, tzinfo=PST))


@pytest.mark.parametrize("day", [b" 7", b"07", b"7"])
def test_append_date_day_forms(day: bytes) -> None:
    result = parse(b'a APPEND x "' + day + b'-Feb-1994 21:52:25 +0130" {1}\r\nx', AUTH)
    assert isinstance(result, c.Append)
    assert result.internal_date == datetime(1994, 2, 7, 21, 52, 25,
                                            tzinfo=timezone(timedelta(hours=1, minutes=30)))


def test_append_binary_and_utf8() -> None:
    result = parse(b"a APPEND x ~{3}\r\na\x00b", AUTH)
    assert isinstance(result, c.Append) and result.binary and result.message == b"a\x00b"
    result = parse(b"a APPEND x UTF8 (~{3+}\r\nabc)", AUTH)
    assert isinstance(result, c.Append) and result.utf8 and result.message == b"abc"
    result = parse(b"a APPEND x () {0}\r\n", AUTH)
    assert result == c.Append("a", "x", b"")


@pytest.mark.parametrize("wire", [
    b"a APPEND x",
    b"a APPEND x hello",
    b'a APPEND x "hello"',
    b"a APPEND x (\\Recent) {1}\r\nx",  # \Recent cannot be set by a client
    b"a APPEND x (\\Bogus) {1}\r\nx",
    b'a APPEND x "31-Feb-1994 21:52:25 -0800" {1}\r\nx',
    b'a APPEND x "07-Feb-1994 25:52:25 -0800" {1}\r\nx',
    b'a APPEND x "07-Foo-1994 21:52:25 -0800" {1}\r\nx',
    b'a APPEND x "07-Feb-1994 21:52:25 -0860" {1}\r\nx',
    b"a APPEND x {1}\r\nx {1}\r\ny",  # MULTIAPPEND is not offered
    b"a APPEND x {3}\r\na\x00b",  # NUL needs a literal8
])
def test_bad_append(wire: bytes) -> None:
    bad(wire, AUTH)


# --------------------------------------------------------------------------- the rest


@pytest.mark.parametrize(("wire", "state", "expected"), [
    (b"a STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ RECENT)",
     AUTH, c.Status("a", "INBOX", ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED",
                                   "SIZE", "HIGHESTMODSEQ", "RECENT"))),
    (b"a ENABLE IMAP4rev2 UTF8=ACCEPT", AUTH, c.Enable("a", ("IMAP4rev2", "UTF8=ACCEPT"))),
    (b"a SETQUOTA \"\" ()", AUTH, c.SetQuota("a", "", ())),
    (b"a ID ()", AUTH, c.Id("a", ())),
    (b'a ID ("name" NIL)', AUTH, c.Id("a", (("name", None),))),
    (b"a CHECK", SEL, c.Check("a")),
    (b"a COPY 1:* {5}\r\nTrash", SEL, c.Copy("a", seq((1, STAR)), "Trash")),
    (b'a MOVE 2 "Junk"', SEL, c.Move("a", seq((2, 2)), "Junk")),
    (b"a UID COPY 1 x", SEL, c.Copy("a", seq((1, 1)), "x", uid=True)),
    (b"a UID SEARCH ALL", SEL, c.Search("a", SearchAll(), uid=True)),
    (b"a UID STORE 1 FLAGS ()", SEL, c.Store("a", seq((1, 1)), StoreMode.REPLACE, (), uid=True)),
    (b"a EXAMINE INBOX (CONDSTORE)", AUTH, c.Examine("a", "INBOX", condstore=True)),
    (b'a RENAME "a b" {3}\r\nc d', AUTH, c.Rename("a", "a b", "c d")),
])
def test_other_commands(wire: bytes, state: State, expected: c.Command) -> None:
    assert parse(wire, state) == expected


@pytest.mark.parametrize(("wire", "state"), [
    (b"a STATUS INBOX ()", AUTH), (b"a STATUS INBOX (FOO)", AUTH), (b"a STATUS INBOX", AUTH),
    (b"a ENABLE", AUTH), (b"a ID", AUTH), (b"a ID NILX", AUTH), (b'a ID ("name")', AUTH), (b"a ID (name x)", AUTH),
    (b"a SETQUOTA x (STORAGE)", AUTH), (b"a SETQUOTA x (STORAGE -1)", AUTH),
    (b"a CREATE x (FOO)", AUTH), (b"a CREATE x (USE (Drafts))", AUTH),
    (b"a AUTHENTICATE PLAIN abc", NOT_AUTH), (b"a AUTHENTICATE PLAIN ====", NOT_AUTH),
    (b"a AUTHENTICATE", NOT_AUTH), (b"a RENAME x", AUTH), (b"a UID EXPUNGE", SEL),
    (b"a UID EXPUNGE *:x", SEL), (b"a COPY 1", SEL), (b"a IDLE now", AUTH),
    (b"a COMPRESS", AUTH), (b"a CAPABILITY x", AUTH),
])
def test_other_malformed(wire: bytes, state: State) -> None:
    assert bad(wire, state).tag == "a"


def test_sasl_ir_can_be_turned_off() -> None:
    assert bad(b"a AUTHENTICATE PLAIN AA==", NOT_AUTH, sasl_ir=False).text.startswith("SASL-IR")


def test_passwords_and_messages_stay_out_of_repr() -> None:
    assert "SESAME" not in repr(parse(b"a LOGIN u SESAME", NOT_AUTH))
    assert "secret" not in repr(parse(b"a APPEND x {6}\r\nsecret", AUTH))


def test_missing_and_intersected_ranges() -> None:
    from kittiwake.imap.types import intersect_ranges, missing_ranges

    assert missing_ranges([1, 4, 5, 9], 10) == [(2, 3), (6, 8), (10, 10)]
    assert missing_ranges([], 3) == [(1, 3)]
    assert missing_ranges([1, 2, 3], 3) == []
    assert missing_ranges([2, 7], 5) == [(1, 1), (3, 5)]
    assert intersect_ranges([(2, 3), (6, 8), (10, 10)], [(1, 6), (8, 20)]) == [
        (2, 3), (6, 6), (8, 8), (10, 10)]
    assert intersect_ranges([(1, 5)], []) == []
