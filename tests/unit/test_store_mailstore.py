"""MailStore: durable delivery with group commit, the index, restart and rescan."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from kittiwake.store import (
    DeliveryRequest,
    Directory,
    MailStore,
    NotFound,
    StoreSettings,
)
from kittiwake.store.maildir import split_name
from support.storefakes import FakePasswords

T = TypeVar("T")
ALICE = "alice@example.com"
BOB = "bob@example.com"
MESSAGE = b"From: a@example.net\r\nTo: alice@example.com\r\nSubject: hi\r\n\r\nHello\r\n.dot\r\n"


def fake_structure(raw: bytes) -> dict[str, object]:
    return {"type": "text", "size": len(raw)}


def run(fn: Callable[[MailStore], Awaitable[T]], data: Path, **kw: object) -> T:
    """Start a store on `data`, run `fn`, always close — one 'process lifetime'."""

    async def main() -> T:
        store = MailStore(StoreSettings(data, **kw), parse_structure=fake_structure)  # type: ignore[arg-type]
        await store.start()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    with Directory(tmp_path / "kittiwake.db", passwords=FakePasswords()) as d:
        d.add_domain("example.com")
        d.add_account(ALICE, "pw")
        d.add_account(BOB, "pw")
    return tmp_path


def inbox(data: Path, user: str = "alice") -> Path:
    return data / "mail" / "example.com" / user


def rows(data: Path) -> list[tuple[int, str, str, int]]:
    with sqlite3.connect(data / "kittiwake.db") as conn:
        return conn.execute(
            "SELECT uid, filename, flags, size FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
            " WHERE b.name = 'INBOX' AND b.account_id = 1 ORDER BY uid"
        ).fetchall()


def test_deliver_writes_exact_bytes_into_new_and_indexes_increasing_uids(data: Path) -> None:
    async def go(store: MailStore) -> None:
        first = await store.deliver("Alice@Example.com", MESSAGE)
        second = await store.deliver(ALICE, MESSAGE + b"2")
        assert (first.uid, second.uid) == (1, 2)
        assert first.account == ALICE and first.mailbox == "INBOX"
        assert first.path.parent == inbox(data) / "new"
        assert first.path.read_bytes() == MESSAGE  # CRLF kept, nothing added
        assert first.path.name.endswith(f",S={len(MESSAGE)}")
        assert await store.read_message(ALICE, "inbox", 2) == MESSAGE + b"2"
        listed = await store.list_messages(ALICE, "INBOX")
        assert [(m.uid, m.size, m.modseq) for m in listed] == [
            (1, len(MESSAGE), 2),
            (2, len(MESSAGE) + 1, 3),
        ]
        status = await store.mailbox_status(ALICE, "INBOX")
        assert (status.exists, status.uidnext, status.highestmodseq) == (2, 3, 3)
        assert status.uidvalidity > 0

    run(go, data)
    assert os.listdir(inbox(data) / "tmp") == []
    with sqlite3.connect(data / "kittiwake.db") as conn:
        structure, used = conn.execute(
            "SELECT structure, used_bytes FROM structures, accounts WHERE uid = 1 AND accounts.id = 1"
        ).fetchone()
    assert json.loads(structure) == {"type": "text", "size": len(MESSAGE)}
    assert used == 2 * len(MESSAGE) + 1


def test_deliver_with_flags_goes_to_cur_with_info(data: Path) -> None:
    async def go(store: MailStore) -> None:
        d = await store.deliver(
            ALICE,
            MESSAGE,
            mailbox="Sent",
            flags=frozenset({"\\Seen", "$Sent"}),
            internaldate=1_600_000_000.0,
        )
        assert d.path.parent == inbox(data) / ".Sent" / "cur"
        assert split_name(d.path.name)[1] == "2,S"
        assert d.path.stat().st_mtime == 1_600_000_000.0
        (row,) = await store.list_messages(ALICE, "Sent")
        assert row.flags == {"\\Seen", "$Sent"} and row.internaldate == 1_600_000_000.0
        assert await store.read_message(ALICE, "Sent", row.uid) == MESSAGE

    run(go, data)


def test_mailboxes_have_special_use(data: Path) -> None:
    async def go(store: MailStore) -> None:
        boxes = {b.name: b.special_use for b in await store.mailboxes(ALICE)}
        assert boxes == {
            "INBOX": None,
            "Sent": "\\Sent",
            "Drafts": "\\Drafts",
            "Junk": "\\Junk",
            "Trash": "\\Trash",
            "Archive": "\\Archive",
        }
        assert (await store.mailboxes(ALICE))[0].name == "INBOX"

    run(go, data)


def test_concurrent_deliveries_share_commits_and_directory_fsyncs(data: Path) -> None:
    n = 200

    async def go(store: MailStore) -> list[int]:
        done = await asyncio.gather(*(store.deliver(ALICE, MESSAGE + b"%d" % i) for i in range(n)))
        stats = store.stats
        assert stats.messages == n and stats.file_fsyncs == n
        assert stats.commits < n / 4 and stats.dir_fsyncs < n / 4, stats
        assert stats.batches == stats.commits
        for i, d in enumerate(done):
            assert d.path.read_bytes() == MESSAGE + b"%d" % i
        return sorted(d.uid for d in done)

    assert run(go, data) == list(range(1, n + 1))
    assert len(os.listdir(inbox(data) / "new")) == n
    assert len(rows(data)) == n


def test_deliver_many_is_atomic(data: Path) -> None:
    async def go(store: MailStore) -> None:
        both = await store.deliver_many(
            [DeliveryRequest(ALICE, MESSAGE), DeliveryRequest(BOB, MESSAGE)]
        )
        assert [d.account for d in both] == [ALICE, BOB]
        with pytest.raises(NotFound):
            await store.deliver_many(
                [DeliveryRequest(ALICE, MESSAGE), DeliveryRequest(BOB, MESSAGE, mailbox="Nope")]
            )
        with pytest.raises(NotFound):
            await store.deliver("ghost@example.com", MESSAGE)
        assert store.stats.failures == 3

    run(go, data)
    assert len(rows(data)) == 1
    assert len(os.listdir(inbox(data) / "new")) == 1  # the failed group left no file behind


def test_a_broken_structure_parser_does_not_refuse_mail(data: Path) -> None:
    def broken(raw: bytes) -> object:
        raise RuntimeError("parser bug")

    async def main() -> None:
        async with MailStore(StoreSettings(data), parse_structure=broken) as store:
            assert (await store.deliver(ALICE, MESSAGE)).uid == 1

    asyncio.run(main())


def test_real_structure_parser_output_is_cached(data: Path) -> None:
    structure = pytest.importorskip("kittiwake.message.structure")

    async def main() -> None:
        async with MailStore(
            StoreSettings(data), parse_structure=structure.parse_structure
        ) as store:
            await store.deliver(ALICE, MESSAGE)

    asyncio.run(main())
    with sqlite3.connect(data / "kittiwake.db") as conn:
        (text,) = conn.execute("SELECT structure FROM structures").fetchone()
    assert json.loads(text) == json.loads(json.dumps(structure.parse_structure(MESSAGE)))


def test_restart_sees_everything_and_uids_continue(data: Path) -> None:
    async def first(store: MailStore) -> None:
        await asyncio.gather(*(store.deliver(ALICE, MESSAGE) for _ in range(5)))

    async def second(store: MailStore) -> int:
        assert [m.uid for m in await store.list_messages(ALICE, "INBOX")] == [1, 2, 3, 4, 5]
        assert await store.read_message(ALICE, "INBOX", 5) == MESSAGE
        return (await store.deliver(ALICE, MESSAGE)).uid

    run(first, data)
    assert run(second, data) == 6


def test_closed_store_refuses_work(data: Path) -> None:
    async def main() -> None:
        store = MailStore(StoreSettings(data))
        with pytest.raises(Exception, match="not started"):
            await store.deliver(ALICE, MESSAGE)

    asyncio.run(main())


def test_io_failure_reaches_the_caller_and_leaves_no_row_or_file(data: Path) -> None:
    shutil.rmtree(inbox(data) / ".Junk")

    async def go(store: MailStore) -> None:
        with pytest.raises(OSError):
            await store.deliver_many(
                [DeliveryRequest(ALICE, MESSAGE), DeliveryRequest(ALICE, MESSAGE, mailbox="Junk")]
            )
        assert await store.list_messages(ALICE, "INBOX") == []
        assert (await store.deliver(ALICE, MESSAGE)).uid == 1  # the store carries on

    run(go, data)
    assert len(os.listdir(inbox(data) / "new")) == 1
    assert os.listdir(inbox(data) / "tmp") == []
