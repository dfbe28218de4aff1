"""The background indexer, the IMAP response cache and the full-text index: answers from
the index are identical to a scan of the files."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from kittiwake.message.bodystructure import format_bodystructure, format_envelope
from kittiwake.message.structure import parse_structure
from kittiwake.store import MailStore, StoreSettings, fts, indexer
from kittiwake.store import search as content
from kittiwake.store.imaptypes import MailboxHandle
from kittiwake.store.messageops import folder_of
from support.storefakes import data_dir_with

T = TypeVar("T")
ALICE = "alice@example.com"


def corpus() -> list[bytes]:
    words = ["invoice", "Grüße", "naïve café", "Quarterly REPORT", "zebra", "x"]
    out = []
    for n in range(40):
        w = words[n % len(words)]
        if n % 4 == 0:  # quoted-printable UTF-8
            body = w.encode().replace(b"\xc3\xbc", b"=C3=BC").replace(b"\xc3\x9f", b"=C3=9F")
            msg = (f"From: Sender {n} <s{n}@example.net>\r\nTo: alice@example.com\r\n"
                   f"Subject: note {n} {w if n % 3 else ''}\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode() + body + (
                       b" and more text\r\n")
        elif n % 4 == 1:  # base64 HTML in an alternative
            html = base64.encodebytes(f"<p>{w} in html</p>".encode()).replace(b"\n", b"\r\n")
            msg = (f"From: =?utf-8?q?J=C3=B6rg_{n}?= <j{n}@example.org>\r\nTo: alice@example.com\r\n"
                   f"Subject: =?utf-8?b?{base64.b64encode(f'Betreff {w}'.encode()).decode()}?=\r\n"
                   'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
                   "--b\r\nContent-Type: text/plain\r\n\r\nplain part\r\n"
                   "--b\r\nContent-Type: text/html; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: base64\r\n\r\n").encode() + html + b"--b--\r\n"
        else:
            msg = (f"From: plain{n}@example.com\r\nTo: bob@example.com\r\nCc: carol@x.test\r\n"
                   f"Subject: plain {n}\r\n\r\n{w}\r\n  folded   text {n}\r\n").encode()
        out.append(msg)
    return out


QUERIES: list[content.TextQuery] = [
    content.BodyMatch("invoice"), content.BodyMatch("INVOICE"), content.BodyMatch("grüße"),
    content.BodyMatch("café"), content.BodyMatch("in html"), content.BodyMatch("plain part"),
    content.BodyMatch("folded text"), content.BodyMatch("x"), content.BodyMatch("ze"),
    content.BodyMatch("note", with_headers=True), content.BodyMatch("subject: plain",
                                                                    with_headers=True),
    content.HeaderMatch("from", "jörg"), content.HeaderMatch("from", "example.net"),
    content.HeaderMatch("subject", "betreff"), content.HeaderMatch("cc", "carol"),
    content.HeaderMatch("to", "bob"), content.HeaderMatch("subject", "note 1"),
    content.HeaderMatch("x-none", ""), content.HeaderMatch("subject", ""),
]


async def scanned(store: MailStore, box: MailboxHandle, uids: list[int]) -> list[set[int]]:
    """What a scan of the files answers to QUERIES: what the index must answer too."""
    imap = store.imap
    rows = await imap.message_data(box, uids, structure=False)
    folder = await imap._read(lambda conn: folder_of(conn, store.settings.mail_root, box.id))
    return content.scan(folder, rows, QUERIES)


def run(data: Path, fn: Callable[[MailStore], Awaitable[T]]) -> T:
    async def main() -> T:
        async with MailStore(StoreSettings(data, fsync=False, hostname="t")) as store:
            store.imap.start_indexer()
            try:
                return await fn(store)
            finally:
                await store.imap.stop_indexer()

    return asyncio.run(main())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return data_dir_with(tmp_path, ALICE)


def test_index_answers_equal_a_scan(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        for msg in corpus():
            await store.deliver(ALICE, msg)
        assert await imap.indexer.idle(30)
        box = await imap.mailbox(ALICE, "INBOX")
        rows = await imap.message_data(box, list(range(1, 41)), structure=False)
        assert len(await imap.cached(box, [r.uid for r in rows])) == 40
        count = await imap._read(lambda c: c.execute("SELECT COUNT(*) FROM fts").fetchone()[0])
        assert count == 40  # the answers below really come from the index
        folder = await imap._read(lambda conn: folder_of(conn, store.settings.mail_root,
                                                         box.id))
        expected = content.scan(folder, rows, QUERIES)
        got = await imap.search(box, [r.uid for r in rows], QUERIES)
        assert got == expected
        assert all(expected[i] for i in (0, 2, 3, 4, 11, 13)), expected
        # Expunged messages stay in the contentless index but are never reported.
        await imap.expunge(box, [1, 2])
        rows = await imap.message_data(box, list(range(1, 41)), structure=False)
        assert await imap.search(box, [r.uid for r in rows], QUERIES) == content.scan(
            folder, rows, QUERIES)

    run(data, go)


def test_cache_holds_formatted_structures_and_header(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        msg = corpus()[1]
        await store.deliver(ALICE, msg)
        assert await imap.indexer.idle(30)
        box = await imap.mailbox(ALICE, "INBOX")
        entry = (await imap.cached(box, [1]))[1]
        struct = parse_structure(msg)
        assert entry.envelope == format_envelope(struct)
        assert entry.bodystructure == format_bodystructure(struct)
        assert entry.header == msg[: msg.index(b"\r\n\r\n") + 4]
        assert entry.ascii

    run(data, go)


def test_walked_in_messages_are_indexed_without_a_parsed_structure(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        inbox = data / "mail" / "example.com" / "alice"
        for n, msg in enumerate(corpus()[:10]):
            (inbox / "cur" / f"16000000{n:02d}.walk.host:2,S").write_bytes(msg)
        os.utime(inbox / "cur", ns=(0, 10**18))
        box = await imap.mailbox(ALICE, "INBOX")
        snap = await imap.snapshot(box)
        assert len(snap.uids) == 10
        rows = await imap.message_data(box, [1])
        assert rows[0].structure is None  # not read at SELECT
        imap.kick_indexer()
        assert await imap.indexer.idle(30)
        assert (await imap.message_data(box, [1]))[0].structure is not None
        assert len(await imap.cached(box, list(range(1, 11)))) == 10

    run(data, go)


def test_search_is_right_for_messages_a_fetch_cached_ahead_of_the_indexer(data: Path) -> None:
    """A session's FETCH fills the response cache before the indexer reaches the messages
    (fill_cache); they are not in the full-text index yet, so SEARCH must scan them."""

    async def go(store: MailStore) -> None:
        imap = store.imap
        await imap._write(fts.ensure)
        inbox = data / "mail" / "example.com" / "alice"
        for n, msg in enumerate(corpus()[:12]):
            (inbox / "cur" / f"16000000{n:02d}.walk.host:2,S").write_bytes(msg)
        os.utime(inbox / "cur", ns=(0, 10**18))
        box = await imap.mailbox(ALICE, "INBOX")
        uids = list((await imap.snapshot(box)).uids)
        async with contextlib.aclosing(imap.fill_cache(box, uids, header=False)) as chunks:
            filled = [p.uid async for chunk in chunks for p in chunk]
        assert filled == uids
        await imap._write(lambda conn: None)  # the background cache write has landed
        assert len(await imap.fast_rows(box, uids, structures=True, header=None)) == 12
        expected = await scanned(store, box, uids)
        assert expected[0]  # "invoice" is there to be found
        assert await imap.search(box, uids, QUERIES) == expected

    async def main() -> None:
        async with MailStore(StoreSettings(data, fsync=False, hostname="t")) as store:
            try:
                await go(store)  # no indexer: nothing reaches the full-text index
            finally:
                await store.imap.stop_indexer()

    asyncio.run(main())


async def _compacted(store: MailStore, rows: int, timeout: float = 30.0) -> None:
    """Wait for the index to be compacted down to `rows` rows."""
    imap = store.imap
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    count = -1
    while loop.time() < deadline:
        imap.kick_indexer()
        count = await imap._read(lambda c: c.execute("SELECT COUNT(*) FROM fts").fetchone()[0])
        if count == rows and not await imap._read(fts.rebuilding):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the index still has {count} rows")


def test_full_text_index_is_compacted_once_mostly_dead(data: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Contentless FTS5 rows cannot be deleted (SQLite < 3.43): once expunged messages
    outnumber live ones the index is rebuilt, and answers stay those of a scan."""
    monkeypatch.setattr(fts, "COMPACT_MIN_DEAD", 0)
    monkeypatch.setattr(indexer, "COMPACT_CHECK", 0.0)

    async def go(store: MailStore) -> None:
        imap = store.imap
        for msg in corpus():
            await store.deliver(ALICE, msg)
        assert await imap.indexer.idle(30)
        box = await imap.mailbox(ALICE, "INBOX")
        await imap.expunge(box, list(range(1, 31)))
        await _compacted(store, 10)
        uids = list(range(31, 41))
        assert await imap.search(box, uids, QUERIES) == await scanned(store, box, uids)

    run(data, go)


def test_messages_indexed_during_a_compaction_are_in_the_new_index(
        data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fts, "COMPACT_MIN_DEAD", 0)

    async def go(store: MailStore) -> None:
        imap = store.imap
        mail = corpus()
        for msg in mail[:20]:
            await store.deliver(ALICE, msg)
        assert await imap.indexer.idle(30)
        box = await imap.mailbox(ALICE, "INBOX")
        await imap.expunge(box, list(range(1, 16)))
        assert await imap._write(fts.start_compaction)
        # Searches keep using the old index while the copy is built.
        uids = list(range(16, 21))
        assert await imap.search(box, uids, QUERIES) == await scanned(store, box, uids)
        for msg in mail[20:30]:
            await store.deliver(ALICE, msg)
        await _compacted(store, 15)
        uids = list(range(16, 31))
        assert await imap.search(box, uids, QUERIES) == await scanned(store, box, uids)

    run(data, go)
