"""Rescan: walk-in of foreign Maildir files, crash leftovers, vanished files, tmp/."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from kittiwake.store import Directory, MailStore, StoreSettings
from support.storefakes import FakePasswords

T = TypeVar("T")
ALICE = "alice@example.com"
MESSAGE = b"Subject: walk-in\r\n\r\nbody\r\n"


def run(fn: Callable[[MailStore], Awaitable[T]], data: Path) -> T:
    async def main() -> T:
        async with MailStore(
            StoreSettings(data), parse_structure=lambda raw: {"n": len(raw)}
        ) as store:
            return await fn(store)

    return asyncio.run(main())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    with Directory(tmp_path / "kittiwake.db", passwords=FakePasswords()) as d:
        d.add_domain("example.com")
        d.add_account(ALICE, "pw")
    return tmp_path


def drop(path: Path, content: bytes, mtime: float) -> None:
    path.write_bytes(content)
    os.utime(path, (mtime, mtime))


def maildir(data: Path) -> Path:
    return data / "mail" / "example.com" / "alice"


def test_hand_dropped_files_get_uids_in_mtime_order_and_flags_from_info(data: Path) -> None:
    async def go(store: MailStore) -> None:
        root = maildir(data)
        drop(root / "cur" / "200.M1P1Q1.other:2,FS", MESSAGE + b"b", 200.0)
        drop(root / "new" / "100.M1P1Q1.other", MESSAGE + b"a", 100.0)
        result = await store.rescan(ALICE)
        assert (result.added, result.removed) == (2, 0)
        msgs = await store.list_messages(ALICE, "INBOX")
        assert [(m.uid, m.filename, m.flags, m.internaldate) for m in msgs] == [
            (1, "100.M1P1Q1.other", frozenset(), 100.0),
            (2, "200.M1P1Q1.other", {"\\Flagged", "\\Seen"}, 200.0),
        ]
        assert await store.read_message(ALICE, "INBOX", 2) == MESSAGE + b"b"
        assert (await store.rescan(ALICE)).added == 0  # idempotent
        assert (await store.deliver(ALICE, MESSAGE)).uid == 3

    run(go, data)


def test_flags_changed_by_another_maildir_reader_are_adopted(data: Path) -> None:
    async def go(store: MailStore) -> None:
        d = await store.deliver(ALICE, MESSAGE, flags=frozenset({"\\Seen", "$Work"}))
        d.path.rename(d.path.with_name(d.path.name.replace(":2,S", ":2,RS")))
        assert (await store.rescan(ALICE)).reflagged == 1
        (row,) = await store.list_messages(ALICE, "INBOX")
        assert row.flags == {"\\Seen", "\\Answered", "$Work"}
        assert row.modseq > 2

    run(go, data)


def test_file_renamed_into_place_before_a_crash_is_picked_up_at_start(data: Path) -> None:
    # What a crash between rename and COMMIT leaves: a durable file in new/ and no row.
    drop(maildir(data) / "new" / "123.M4P5Q6.host,S=26", MESSAGE, 123.0)

    async def go(store: MailStore) -> list[int]:
        return [m.uid for m in await store.list_messages(ALICE, "INBOX")]

    assert run(go, data) == [1]


def test_tmp_files_are_never_mail_and_stale_ones_are_removed_at_start(data: Path) -> None:
    tmp = maildir(data) / "tmp"
    drop(tmp / "young", MESSAGE, os.path.getmtime(tmp))
    drop(tmp / "stale", MESSAGE, 1000.0)

    async def go(store: MailStore) -> int:
        return len(await store.list_messages(ALICE, "INBOX"))

    assert run(go, data) == 0
    assert sorted(os.listdir(tmp)) == ["young"]


def test_index_row_whose_file_vanished_is_dropped(data: Path) -> None:
    async def go(store: MailStore) -> None:
        first = await store.deliver(ALICE, MESSAGE)
        await store.deliver(ALICE, MESSAGE)
        before = (await store.mailbox_status(ALICE, "INBOX")).highestmodseq
        first.path.unlink()
        result = await store.rescan(ALICE)
        assert (result.added, result.removed) == (0, 1)
        assert [m.uid for m in await store.list_messages(ALICE, "INBOX")] == [2]
        status = await store.mailbox_status(ALICE, "INBOX")
        assert status.exists == 1 and status.uidnext == 3 and status.highestmodseq > before

    run(go, data)


def test_missing_folder_is_not_mistaken_for_an_empty_one(data: Path) -> None:
    async def first(store: MailStore) -> None:
        await store.deliver(ALICE, MESSAGE, mailbox="Archive")

    run(first, data)
    archive = maildir(data) / ".Archive"
    archive.rename(archive.with_name(".Gone"))

    async def second(store: MailStore) -> int:
        return len(await store.list_messages(ALICE, "Archive"))

    assert run(second, data) == 1


def test_rescan_during_deliveries_never_indexes_a_file_twice(data: Path) -> None:
    async def go(store: MailStore) -> None:
        deliveries = [store.deliver(ALICE, MESSAGE + b"%d" % i) for i in range(100)]
        rescans = [store.rescan(ALICE) for _ in range(20)]
        results = await asyncio.gather(*deliveries, *rescans)
        assert all(r.added == 0 for r in results[100:])  # type: ignore[union-attr]
        msgs = await store.list_messages(ALICE, "INBOX")
        assert [m.uid for m in msgs] == list(range(1, 101))
        assert store.stats.failures == 0

    run(go, data)
