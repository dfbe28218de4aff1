"""The store operations POP3 adds (store/pop3ops.py): snapshot, maildrop lock, expunge."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from test_store_mailstore import ALICE, BOB, MESSAGE, data, inbox, run

from kittiwake.store import MailStore, NotFound
from kittiwake.store.pop3ops import LOCK_FILE, lock_maildrop

__all__ = ["data"]  # the fixture, imported for pytest


def state(data: Path) -> tuple[int, int]:
    """(highestmodseq of alice's INBOX, alice's used_bytes)."""
    with sqlite3.connect(data / "kittiwake.db") as conn:
        row = conn.execute(
            "SELECT m.highestmodseq, a.used_bytes FROM mailboxes m JOIN accounts a"
            " ON a.id = m.account_id WHERE a.address = ? AND m.name = 'INBOX'", (ALICE,)
        ).fetchone()
    return int(row[0]), int(row[1])


def files(data: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") for p in (inbox(data) / sub).iterdir())


def test_snapshot_of_an_empty_inbox_has_uidvalidity(data: Path) -> None:
    async def fn(store: MailStore) -> None:
        drop = await store.maildrop(ALICE)
        status = await store.mailbox_status(ALICE)
        assert drop.uidvalidity == status.uidvalidity > 0
        assert drop.messages == ()

    run(fn, data)


def test_snapshot_lists_messages_in_uid_order(data: Path) -> None:
    async def fn(store: MailStore) -> None:
        uids = [(await store.deliver(ALICE, MESSAGE + bytes([65 + n]))).uid for n in range(3)]
        drop = await store.maildrop(ALICE, "inbox")
        assert [m.uid for m in drop.messages] == uids
        assert [m.size for m in drop.messages] == [len(MESSAGE) + 1] * 3

    run(fn, data)


def test_snapshot_of_unknown_account_is_not_found(data: Path) -> None:
    async def fn(store: MailStore) -> None:
        with pytest.raises(NotFound):
            await store.maildrop("nobody@example.com")

    run(fn, data)


def test_lock_is_exclusive_per_account_until_released(data: Path) -> None:
    mail_root = data / "mail"
    first = lock_maildrop(mail_root, ALICE)
    assert first is not None and first.held
    assert lock_maildrop(mail_root, "Alice@Example.COM") is None  # same account, folded
    other = lock_maildrop(mail_root, BOB)
    assert other is not None
    first.release()
    assert not first.held
    again = lock_maildrop(mail_root, ALICE)
    assert again is not None
    again.release()
    other.release()
    assert (inbox(data) / LOCK_FILE).exists()  # never unlinked (see lock_maildrop)


def test_lock_of_account_without_maildir_is_not_found(data: Path) -> None:
    with pytest.raises(NotFound):
        lock_maildrop(data / "mail", "ghost@example.com")


def test_lock_via_store(data: Path) -> None:
    async def fn(store: MailStore) -> None:
        lock = await store.lock_maildrop(ALICE)
        assert lock is not None
        assert await store.lock_maildrop(ALICE) is None
        lock.release()
        lock2 = await store.lock_maildrop(ALICE)
        assert lock2 is not None
        lock2.release()

    run(fn, data)


def test_expunge_removes_rows_and_files_and_counts_as_a_change(data: Path) -> None:
    async def fn(store: MailStore) -> list[int]:
        uids = [(await store.deliver(ALICE, MESSAGE + bytes([65 + n]))).uid for n in range(3)]
        before = state(data)
        removed = await store.expunge(ALICE, "INBOX", [uids[2], uids[0], 999])
        assert removed == [uids[0], uids[2]]
        after = state(data)
        assert after[0] == before[0] + 1
        assert after[1] == before[1] - 2 * (len(MESSAGE) + 1)
        assert [m.uid for m in await store.list_messages(ALICE)] == [uids[1]]
        assert await store.read_message(ALICE, "INBOX", uids[1]) == MESSAGE + b"B"
        assert await store.expunge(ALICE, "INBOX", [uids[0]]) == []  # already gone
        assert await store.expunge(ALICE, "INBOX", []) == []
        assert state(data) == after
        return uids

    uids = run(fn, data)
    assert [p.read_bytes() for p in files(data)] == [MESSAGE + b"B"]

    async def restart(store: MailStore) -> None:
        # The start-up rescan must not walk anything back in.
        assert [m.uid for m in await store.list_messages(ALICE)] == [uids[1]]

    run(restart, data)


def test_expunge_finds_files_moved_to_cur_by_a_maildir_reader(data: Path) -> None:
    async def fn(store: MailStore) -> None:
        delivered = await store.deliver(ALICE, MESSAGE)
        moved = inbox(data) / "cur" / (delivered.path.name + ":2,S")
        delivered.path.rename(moved)
        assert await store.expunge(ALICE, "INBOX", [delivered.uid]) == [delivered.uid]
        assert not moved.exists()

    run(fn, data)


def test_expunge_of_a_row_whose_file_vanished_still_drops_the_row(data: Path) -> None:
    """The state a crash between unlink and COMMIT leaves behind converges."""
    async def fn(store: MailStore) -> None:
        delivered = await store.deliver(ALICE, MESSAGE)
        delivered.path.unlink()
        assert await store.expunge(ALICE, "INBOX", [delivered.uid]) == [delivered.uid]
        assert await store.list_messages(ALICE) == []

    run(fn, data)


def test_expunge_in_unknown_mailbox_is_not_found(data: Path) -> None:
    async def fn(store: MailStore) -> None:
        with pytest.raises(NotFound):
            await store.expunge(ALICE, "Nope", [1])

    run(fn, data)


def test_expunge_of_many_uids_is_chunked(data: Path) -> None:
    async def fn(store: MailStore) -> None:
        uids = [(await store.deliver(ALICE, MESSAGE)).uid for _ in range(3)]
        wanted = list(range(1, 1500)) + uids
        assert await store.expunge(ALICE, "INBOX", wanted) == uids
        assert await store.list_messages(ALICE) == []

    run(fn, data)
