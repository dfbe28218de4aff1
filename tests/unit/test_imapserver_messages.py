"""FETCH, STORE, SEARCH, COPY, MOVE, APPEND, EXPUNGE, CLOSE through a real session."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from test_imapserver_wire import Env, message, run

ATTACHMENT = bytes(range(256)) * 4
MULTIPART = (
    b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.org>\r\n"
    b"To: alice@example.com, Carol <carol@example.com>\r\n"
    b"Cc: dave@example.com\r\n"
    b"Subject: =?utf-8?b?UmVwb3J0IMOcYmVyc2ljaHQ=?=\r\n"
    b"Date: Tue, 5 Mar 2024 09:15:00 +0100\r\n"
    b"Message-ID: <multi@example.org>\r\n"
    b"X-Tag: green\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="BOUND"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--BOUND\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln, the quarterly numbers\r\n"
    b"--BOUND\r\n"
    b"Content-Type: application/octet-stream; name=data.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=data.bin\r\n"
    b"\r\n"
    + base64.encodebytes(ATTACHMENT).replace(b"\n", b"\r\n")
    + b"--BOUND--\r\n"
)


def literal_after(out: bytes, name: bytes) -> bytes:
    """The literal following `name {n}` in a FETCH response."""
    m = re.search(re.escape(name) + rb" ~?\{(\d+)\}\r\n", out)
    assert m, (name, out[:400])
    return out[m.end() : m.end() + int(m.group(1))]


def test_fetch_every_item_of_a_multipart_message(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        await env.deliver(MULTIPART)
        c = await env.connect()
        await c.login()
        await c.cmd("SELECT INBOX")
        out = await c.cmd("FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY "
                          "BODYSTRUCTURE MODSEQ)")
        assert b"UID 1 FLAGS ()" in out and b"RFC822.SIZE %d" % len(MULTIPART) in out
        assert re.search(rb'INTERNALDATE "[ \d]\d-\w{3}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"', out)
        assert b'ENVELOPE ("Tue, 5 Mar 2024 09:15:00 +0100" "=?utf-8?b?UmVwb3J0IMOcYmVyc2ljaHQ=?="' in out
        assert b'(("Carol" NIL "carol" "example.com"))' not in out  # two To addresses
        assert b'((NIL NIL "alice" "example.com")("Carol" NIL "carol" "example.com"))' in out
        assert b'BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE"' in out
        assert b'"MIXED" ("BOUNDARY" "BOUND") NIL NIL NIL)' in out
        assert b'BODY (("TEXT" "PLAIN"' in out and re.search(rb"MODSEQ \(\d+\)", out)
        whole = await c.cmd("FETCH 1 BODY.PEEK[]")
        assert literal_after(whole, b"BODY[]") == MULTIPART
        header = literal_after(await c.cmd("FETCH 1 BODY.PEEK[HEADER]"), b"BODY[HEADER]")
        assert header == MULTIPART[: MULTIPART.index(b"\r\n\r\n") + 4]
        text = literal_after(await c.cmd("FETCH 1 BODY.PEEK[TEXT]"), b"BODY[TEXT]")
        assert text == MULTIPART[MULTIPART.index(b"\r\n\r\n") + 4 :]
        fields = await c.cmd("FETCH 1 BODY.PEEK[HEADER.FIELDS (X-TAG cc)]")
        assert literal_after(fields, b"BODY[HEADER.FIELDS (X-TAG cc)]") == (
            b"Cc: dave@example.com\r\nX-Tag: green\r\n\r\n")
        nots = await c.cmd("FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (Subject From To Cc Date "
                           "Message-ID MIME-Version Content-Type)]")
        assert b"X-Tag: green\r\n\r\n" in nots
        part1 = literal_after(await c.cmd("FETCH 1 BODY.PEEK[1]"), b"BODY[1]")
        assert part1 == b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln, the quarterly numbers"
        mime = literal_after(await c.cmd("FETCH 1 BODY.PEEK[2.MIME]"), b"BODY[2.MIME]")
        assert mime.startswith(b"Content-Type: application/octet-stream") and mime.endswith(
            b"\r\n\r\n")
        partial = await c.cmd("FETCH 1 BODY.PEEK[]<6.10>")
        assert literal_after(partial, b"BODY[]<6>") == MULTIPART[6:16]
        binary = await c.cmd("FETCH 1 BINARY.PEEK[2]")
        assert literal_after(binary, b"BINARY[2]") == ATTACHMENT
        assert b"BINARY[2] ~{1024}" in binary  # NUL octets need a literal8
        sizes = await c.cmd("FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[2])")
        qp = "Grüße aus Köln, the quarterly numbers".encode()
        assert b"BINARY.SIZE[1] %d" % len(qp) in sizes and b"BINARY.SIZE[2] 1024" in sizes
        decoded = literal_after(await c.cmd("FETCH 1 BINARY.PEEK[1]"), b"BINARY[1]")
        assert decoded == qp
        assert b"BODY[9] NIL" in await c.cmd("FETCH 1 BODY.PEEK[9]")
        rfc = await c.cmd("FETCH 1 (RFC822.HEADER RFC822.SIZE)")
        assert literal_after(rfc, b"RFC822.HEADER") == header
        assert b"\\Seen" not in await c.cmd("FETCH 1 FLAGS")  # nothing so far set it
        seen = await c.cmd("FETCH 1 RFC822.TEXT")
        assert literal_after(seen, b"RFC822.TEXT") == text and b"FLAGS (\\Seen)" in seen

    run(tmp_path, go)


def test_body_sets_seen_but_not_in_examine_or_peek(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        for n in (1, 2):
            await env.deliver(message(n))
        c = await env.connect()
        await c.login()
        await c.cmd("EXAMINE INBOX")
        out = await c.cmd("FETCH 1 BODY[]")
        assert b"\\Seen" not in out
        assert b"NO [READ-ONLY]" in await c.cmd("STORE 1 +FLAGS (\\Seen)")
        await c.cmd("SELECT INBOX")
        out = await c.cmd("FETCH 2 (BODY[TEXT])")
        assert b"FLAGS (\\Seen)" in out
        out = await c.cmd("UID FETCH 1 (BODY.PEEK[TEXT])")
        assert b"UID 1" in out and b"\\Seen" not in out

    run(tmp_path, go)


def test_store_modes_silent_and_unchangedsince(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        for n in (1, 2, 3):
            await env.deliver(message(n))
        c = await env.connect()
        await c.login()
        await c.cmd("SELECT INBOX")
        out = await c.cmd("STORE 1:2 +FLAGS (\\Flagged $Important)")
        assert b"* 1 FETCH (FLAGS (\\Flagged $Important))" in out
        assert b"* FLAGS (" in out and b"$Important" in out.split(b"* FLAGS")[1]
        assert b"FETCH" not in await c.cmd("STORE 1 -FLAGS.SILENT (\\Flagged)")
        out = await c.cmd("UID STORE 3 FLAGS (\\Answered)")
        assert b"* 3 FETCH (UID 3 FLAGS (\\Answered))" in out
        m = re.search(rb"MODSEQ \((\d+)\)", await c.cmd("FETCH 1 MODSEQ"))
        assert m  # message 1 changed after 2, before 3
        out = await c.cmd(f"STORE 1:3 (UNCHANGEDSINCE {int(m.group(1))}) +FLAGS (\\Seen)")
        assert b"OK [MODIFIED 3]" in out
        assert re.search(rb"\* 1 FETCH \(FLAGS \(\\Seen \$Important\) MODSEQ \(\d+\)\)", out)

    run(tmp_path, go)


def test_search_keys_esearch_save_and_charset(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        await env.deliver(message(1, subject="Lunch plans"), flags=frozenset({"\\Seen"}))
        await env.deliver(MULTIPART)
        await env.deliver(message(3, body="nothing to see"), internaldate=1_000_000_000.0)
        c = await env.connect()
        await c.login()
        await c.cmd("SELECT INBOX")

        async def hits(criteria: str, uid: bool = False) -> list[int]:
            out = await c.cmd(("UID SEARCH " if uid else "SEARCH ") + criteria)
            m = re.search(rb"\* SEARCH([ \d]*)", out)
            assert m, out
            return [int(x) for x in m.group(1).split()]

        assert await hits("ALL") == [1, 2, 3]
        assert await hits("SEEN") == [1] and await hits("UNSEEN") == [2, 3]
        assert await hits("SUBJECT lunch") == [1]
        assert await hits("SUBJECT bersicht") == [2]  # RFC 2047 decoded (base64 on the wire)
        c.feed("s1 SEARCH CHARSET UTF-8 FROM {5+}\r\njörg\r\n".encode())
        assert b"* SEARCH 2\r\n" in await c.read_until(rb"^s1 OK[^\r\n]*\r\n")
        assert await hits("TO carol") == [2] and await hits("CC dave") == [2]
        c.feed("s2 SEARCH CHARSET UTF-8 BODY {5+}\r\nköln\r\n".encode())
        # quoted-printable and UTF-8 decoded
        assert b"* SEARCH 2\r\n" in await c.read_until(rb"^s2 OK[^\r\n]*\r\n")
        assert await hits("TEXT green") == [2]  # a header is part of TEXT ...
        assert await hits("BODY green") == []  # ... not of BODY
        assert await hits('HEADER X-Tag ""') == [2]
        assert await hits("LARGER 1000") == [2] and await hits("SMALLER 1000") == [1, 3]
        assert await hits("BEFORE 1-Jan-2002") == [3] and await hits("SINCE 1-Jan-2020") == [1, 2]
        assert await hits("SENTON 5-Mar-2024") == [2] and await hits("SENTBEFORE 2-Jan-2024") == [1, 3]
        assert await hits("OR SEEN LARGER 1000") == [1, 2]
        assert await hits("NOT (SEEN) UNSEEN") == [2, 3]
        assert await hits("2:3 UID 1:2") == [2]
        assert await hits("UID 2:*", uid=True) == [2, 3]
        assert await hits("NEW") == [] and await hits("OLD") == [1, 2, 3]
        assert await hits("KEYWORD $Junk") == []
        out = await c.cmd("SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")
        assert b'* ESEARCH (TAG "a' in out and b"MIN 2 MAX 3 ALL 2:3 COUNT 2" in out
        out = await c.cmd("UID SEARCH RETURN () ALL")
        assert b"UID ALL 1:3" in out
        assert b"ESEARCH" not in await c.cmd("UID SEARCH RETURN (SAVE) SMALLER 1000")
        out = await c.cmd("UID FETCH $ (UID)")
        assert b"UID 1" in out and b"UID 3" in out and b"UID 2)" not in out
        assert b"NO [BADCHARSET" in await c.cmd("SEARCH CHARSET X-NOPE FROM x")
        assert await hits("CHARSET UTF-8 SUBJECT lunch") == [1]
        m = re.search(rb"\* SEARCH 1 2 3 \(MODSEQ (\d+)\)", await c.cmd("SEARCH MODSEQ 1"))
        assert m

    run(tmp_path, go)


def test_copy_move_and_trycreate(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        for n in (1, 2, 3):
            await env.deliver(message(n))
        c = await env.connect()
        await c.login()
        await c.cmd("SELECT INBOX")
        out = await c.cmd("COPY 1:2 Archive")
        assert re.search(rb"OK \[COPYUID \d+ 1:2 1:2\]", out)
        assert b"NO [TRYCREATE]" in await c.cmd("COPY 1 Nowhere")
        out = await c.cmd("MOVE 2 Trash")
        assert re.search(rb"\* OK \[COPYUID \d+ 2 1\]", out) and b"* 2 EXPUNGE" in out
        out = await c.cmd("UID MOVE 3 Trash")
        assert re.search(rb"\* OK \[COPYUID \d+ 3 2\]", out) and b"* 2 EXPUNGE" in out
        assert b"* STATUS \"Trash\" (MESSAGES 2)" in await c.cmd("STATUS Trash (MESSAGES)")
        await c.cmd("SELECT Archive")
        body = await c.cmd("FETCH 2 BODY.PEEK[]")
        assert literal_after(body, b"BODY[]") == message(2)
        out = await c.cmd("MOVE 1 Archive")  # into itself: a new UID
        assert re.search(rb"COPYUID \d+ 1 3", out) and b"* 1 EXPUNGE" in out

    run(tmp_path, go)


def test_append_expunge_close_unselect(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        await c.cmd("SELECT INBOX")
        out = b""
        for n in (1, 2, 3, 4):
            msg = message(n)
            c.feed(b'p%d APPEND INBOX (\\Seen) "05-Mar-2024 09:15:00 +0100" {%d+}\r\n'
                   % (n, len(msg)) + msg + b"\r\n")
            out = await c.read_until(rb"^p%d [^\r\n]*\r\n" % n)
            assert re.search(rb"OK \[APPENDUID \d+ %d\]" % n, out)
        assert b"* 4 EXISTS" in out  # RFC 9051 §6.3.12: new mail in the selected mailbox
        date = await c.cmd("FETCH 1 (INTERNALDATE FLAGS)")
        assert b"FLAGS (\\Seen)" in date and (b"05-Mar-2024 08:15:00 +0000" in date
                                                or b"Mar-2024" in date)
        await c.cmd("STORE 1:3 +FLAGS.SILENT (\\Deleted)")
        out = await c.cmd("UID EXPUNGE 2:3")
        assert out.count(b"EXPUNGE\r\n") == 2 and b"* 3 EXPUNGE" in out and b"* 2 EXPUNGE" in out
        out = await c.cmd("EXPUNGE")
        assert b"* 1 EXPUNGE" in out
        await c.cmd("STORE 1 +FLAGS (\\Deleted)")
        assert b"OK" in await c.cmd("UNSELECT")
        await c.cmd("SELECT INBOX")
        assert b"OK" in await c.cmd("CLOSE")
        out = await c.cmd("SELECT INBOX")
        assert b"* 0 EXISTS" in out
        c.feed(b"q1 APPEND Nowhere {3+}\r\nabc\r\n")
        assert b"q1 NO [TRYCREATE]" in await c.read_until(rb"^q1 [^\r\n]*\r\n")

    run(tmp_path, go)


def test_fast_path_answers_equal_the_general_path(tmp_path: Path) -> None:
    """Before the indexer has run, ENVELOPE etc. come from parsing; after, from its cache
    through fastfetch.py: the octets must be the same."""
    items = ("(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY MODSEQ "
             "RFC822.HEADER BODY.PEEK[HEADER.FIELDS (From Subject X-Tag)] "
             "BODY.PEEK[HEADER.FIELDS.NOT (Subject)]<5.40> BODY.PEEK[HEADER])")

    async def go(env: Env) -> None:
        await env.deliver(MULTIPART, flags=frozenset({"\\Seen", "$Work"}))
        await env.deliver(message(2))
        c = await env.connect()
        await c.login()
        await c.cmd("SELECT INBOX")
        before = await c.cmd("FETCH 1:2 " + items)
        common = "(BODY.PEEK[HEADER.FIELDS (from SUBJECT Date cc)])"  # imap_header.common
        before_common = await c.cmd("FETCH 1:2 " + common)
        env.store.imap.start_indexer()
        assert await env.store.imap.indexer.idle(30)
        assert len(await env.store.imap.cached(c.session.selected.handle, [1, 2])) == 2  # type: ignore[union-attr]
        after = await c.cmd("FETCH 1:2 " + items)
        after_common = await c.cmd("FETCH 1:2 " + common)
        await env.store.imap.stop_indexer()
        strip = re.compile(rb"^a\d+ ", re.MULTILINE)
        assert strip.sub(b"", before) == strip.sub(b"", after)
        assert strip.sub(b"", before_common) == strip.sub(b"", after_common)
        assert b"Cc: dave@example.com" in after_common
        assert b"ENVELOPE" in after and b"X-Tag: green" in after

    run(tmp_path, go)


def test_envelope_of_walked_in_messages_is_parsed_on_demand(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        import os

        inbox = tmp_path / "mail" / "example.com" / "alice"
        (inbox / "cur" / "1600000000.walk.host:2,S").write_bytes(MULTIPART)
        os.utime(inbox / "cur", ns=(0, 10**18))
        c = await env.connect()
        await c.login()
        assert b"* 1 EXISTS" in await c.cmd("SELECT INBOX")
        out = await c.cmd("FETCH 1 (FLAGS ENVELOPE BODYSTRUCTURE)")
        assert b"FLAGS (\\Seen)" in out and b'"MIXED"' in out and b" OK " in out

    run(tmp_path, go)


HEADERS = [
    b"From: a@b\r\nSubject: one\r\n two\r\nX-Tag: 1\r\nfrom : again\r\n\r\nbody",
    b"Subject: lf only\nX-A: 1\n\tcontinued\nDate: x\n\nbody\n",
    b"garbage line\r\nSubject: after garbage\r\n continued\r\nTo:\r\n\r\n",
    b"Subject: no blank line at all",
    b"\r\nSubject: not a header: body starts at once\r\n",
    b"X-Weird-Name!#: v\r\nSUBJECT:caps\r\n\r\n",
]


def reference_fields(header: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    """The definition: kittiwake.message.headers' field scanner."""
    from kittiwake.message.headers import iter_field_spans

    wanted = {n.lower() for n in names}
    kept = [header[s:e] for name, s, e in iter_field_spans(header)
            if (name in wanted) != exclude]
    return b"".join(kept) + b"\r\n"


def test_header_fields_filter_matches_the_field_scanner() -> None:
    from kittiwake.imapserver.fetching import _header_fields

    for header in HEADERS:
        for names in (("Subject",), ("from", "X-TAG"), ("date", "x-a"), ("To",),
                      ("X-Weird-Name!#",), ("Nope",)):
            for exclude in (False, True):
                assert _header_fields(header, names, exclude) == reference_fields(
                    header, names, exclude), (header, names, exclude)
