"""The store's IMAP operations: mailboxes, flags with modseq, expunge records, copy/move,
append with quota, change queries and notification."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import TypeVar

import pytest

from kittiwake.store import AlreadyExists, Directory, MailStore, NotFound
from kittiwake.store.imaptypes import (
    CannotDoThat,
    MailboxHasChildren,
    OverQuota,
    StoreMode,
)
from kittiwake.store.mailboxops import _decode_folder
from kittiwake.store.maildir import split_name
from support.storefakes import FakePasswords, data_dir_with
from support.storefakes import run_store as run

T = TypeVar("T")
ALICE = "alice@example.com"
MSG = b"From: a@example.net\r\nTo: alice@example.com\r\nSubject: hi\r\n\r\nHello\r\n"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return data_dir_with(tmp_path, ALICE)


def folder(data: Path, name: str = "") -> Path:
    base = data / "mail" / "example.com" / "alice"
    return base / name if name else base


def files(path: Path) -> list[str]:
    return sorted(p.parent.name + "/" + p.name for sub in ("new", "cur")
                  for p in (path / sub).iterdir())


# ---------------------------------------------------------------------------- mailboxes


def test_create_makes_folder_parents_and_fresh_uidvalidity(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        h = await imap.create_mailbox(ALICE, "Work/2024/Q1")
        names = [m.name for m in await imap.list_mailboxes(ALICE)]
        assert {"Work", "Work/2024", "Work/2024/Q1"} <= set(names)
        assert names[0] == "INBOX"
        assert (folder(data, ".Work.2024.Q1") / "cur").is_dir()
        assert (folder(data, ".Work.2024.Q1") / "maildirfolder").exists()
        with pytest.raises(AlreadyExists):
            await imap.create_mailbox(ALICE, "Work/2024/Q1")
        with pytest.raises(AlreadyExists):
            await imap.create_mailbox(ALICE, "inbox")
        await imap.delete_mailbox(ALICE, "Work/2024/Q1")
        again = await imap.create_mailbox(ALICE, "Work/2024/Q1")
        assert again.uidvalidity > h.uidvalidity  # RFC 9051 §2.3.1.1

    run(data, go)


def test_delete_refuses_inbox_and_parents_and_removes_files(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        await imap.create_mailbox(ALICE, "a/b")
        with pytest.raises(CannotDoThat):
            await imap.delete_mailbox(ALICE, "INBOX")
        with pytest.raises(MailboxHasChildren):
            await imap.delete_mailbox(ALICE, "a")
        await store.deliver(ALICE, MSG, mailbox="a/b")
        await imap.delete_mailbox(ALICE, "a/b")
        assert not folder(data, ".a.b").exists()
        with pytest.raises(NotFound):
            await imap.delete_mailbox(ALICE, "a/b")
        assert (await imap.quota(ALICE)).used_bytes == 0

    run(data, go)


def test_rename_moves_inferiors_and_keeps_messages(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        await imap.create_mailbox(ALICE, "a/b")
        await store.deliver(ALICE, MSG, mailbox="a/b")
        before = await imap.mailbox(ALICE, "a/b")
        await imap.rename_mailbox(ALICE, "a", "x/y")
        names = {m.name for m in await imap.list_mailboxes(ALICE)}
        assert {"x", "x/y", "x/y/b"} <= names and "a" not in names and "a/b" not in names
        after = await imap.mailbox(ALICE, "x/y/b")
        assert after.id == before.id and after.uidvalidity == before.uidvalidity
        assert len(files(folder(data, ".x.y.b"))) == 1
        with pytest.raises(AlreadyExists):
            await imap.rename_mailbox(ALICE, "x", "Sent")
        with pytest.raises(NotFound):
            await imap.rename_mailbox(ALICE, "nope", "other")

    run(data, go)


def test_rename_inbox_moves_messages_and_leaves_it_empty(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        await store.deliver(ALICE, MSG)
        await store.deliver(ALICE, MSG)
        await imap.rename_mailbox(ALICE, "INBOX", "Old")
        inbox = await imap.status(await imap.mailbox(ALICE, "INBOX"))
        old = await imap.status(await imap.mailbox(ALICE, "Old"))
        assert (inbox.messages, old.messages) == (0, 2)
        assert inbox.uidnext == 3  # UIDs are never reused

    run(data, go)


def test_subscribe_and_discover_walked_in_folders(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        await imap.set_subscribed(ALICE, "Sent", False)
        subs = {m.name: m.subscribed for m in await imap.list_mailboxes(ALICE)}
        assert subs["Sent"] is False and subs["INBOX"] is True
        with pytest.raises(NotFound):
            await imap.set_subscribed(ALICE, "nope", True)
        # A folder copied in from another server, with a message in cur/.
        walked = folder(data, ".Projects.Old%2Edone")
        for sub in ("cur", "new", "tmp"):
            (walked / sub).mkdir(parents=True)
        (walked / "cur" / "1700000000.1.host:2,S").write_bytes(MSG)
        names = {m.name for m in await imap.list_mailboxes(ALICE, discover=True)}
        assert "Projects/Old.done" in names
        st = await imap.status(await imap.mailbox(ALICE, "Projects/Old.done"))
        assert (st.messages, st.unseen) == (1, 0)

    run(data, go)


def test_decode_folder_names() -> None:
    assert _decode_folder(".a.b%2Ec%25") == "a/b.c%"
    assert _decode_folder("cur") is None
    assert _decode_folder(".a..b") is None


# ---------------------------------------------------------------------------- flags


def test_store_flags_modseq_and_file_info(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        for _ in range(3):
            await store.deliver(ALICE, MSG)
        box = await imap.mailbox(ALICE, "INBOX")
        snap = await imap.snapshot(box)
        assert snap.uids == [1, 2, 3]
        start = snap.highestmodseq
        r = await imap.store_flags(box, [1, 2], StoreMode.ADD, ["\\seen", "$Label1"])
        assert [m.uid for m in r.changed] == [1, 2]
        assert r.changed[0].flags == {"\\Seen", "$Label1"}
        assert r.highestmodseq == start + 1 and all(m.modseq == start + 1 for m in r.changed)
        names = files(folder(data))
        assert sum(n.startswith("cur/") and n.endswith(":2,S") for n in names) == 2
        # Unchanged flags: no modseq bump.
        again = await imap.store_flags(box, [1], StoreMode.ADD, ["\\Seen"])
        assert not again.changed and again.highestmodseq == start + 1
        # UNCHANGEDSINCE: uid 1 changed at start+1, so a condition of `start` fails for it.
        cond = await imap.store_flags(box, [1, 3], StoreMode.REPLACE, ["\\Flagged"],
                                      unchanged_since=start)
        assert cond.modified == (1,) and [m.uid for m in cond.changed] == [3]
        removed = await imap.store_flags(box, [1], StoreMode.REMOVE, ["\\Seen"])
        assert removed.changed[0].flags == {"$Label1"}
        ch = await imap.changes(box, start)
        assert {m.uid for m in ch.changed} == {1, 2, 3}
        assert ch.highestmodseq == removed.highestmodseq

    run(data, go)


def test_flags_survive_restart_rescan(data: Path) -> None:
    async def set_flags(store: MailStore) -> None:
        await store.deliver(ALICE, MSG)
        box = await store.imap.mailbox(ALICE, "INBOX")
        await store.imap.store_flags(box, [1], StoreMode.ADD, ["\\Answered", "\\Seen"])

    run(data, set_flags)

    async def read(store: MailStore) -> frozenset[str]:
        rows = await store.list_messages(ALICE)
        return rows[0].flags

    assert run(data, read) == {"\\Answered", "\\Seen"}
    (name,) = files(folder(data))
    assert split_name(name)[1] == "2,RS"


# ---------------------------------------------------------------------------- expunge


def test_expunge_records_vanished_with_modseq(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        for _ in range(4):
            await store.deliver(ALICE, MSG)
        box = await imap.mailbox(ALICE, "INBOX")
        before = (await imap.snapshot(box)).highestmodseq
        assert await imap.expunge(box, [2, 3, 99]) == [2, 3]
        ch = await imap.changes(box, before)
        assert ch.expunged == (2, 3) and ch.highestmodseq == before + 1
        assert not (await imap.changes(box, before + 1)).expunged
        assert (await imap.snapshot(box)).uids == [1, 4]
        assert len(files(folder(data))) == 2

    run(data, go)


def test_rescan_of_vanished_files_is_recorded_as_expunge(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        await store.deliver(ALICE, MSG)
        d = await store.deliver(ALICE, MSG)
        box = await imap.mailbox(ALICE, "INBOX")
        before = (await imap.snapshot(box)).highestmodseq
        os.unlink(d.path)
        await store.rescan(ALICE)
        ch = await imap.changes(box, before)
        assert ch.expunged == (2,)

    run(data, go)


# ---------------------------------------------------------------------------- copy / move


def test_copy_links_files_and_returns_copyuid(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        for _ in range(3):
            await store.deliver(ALICE, MSG, flags=frozenset({"\\Seen"}))
        await store.deliver(ALICE, b"Subject: x\r\n\r\nother\r\n", mailbox="Archive")
        src = await imap.mailbox(ALICE, "INBOX")
        dst = await imap.mailbox(ALICE, "Archive")
        r = await imap.copy(src, [3, 1, 9], dst)
        assert r.source_uids == (1, 3) and r.dest_uids == (2, 3)
        assert r.uidvalidity == dst.uidvalidity
        copied = [p for sub in ("cur", "new") for p in (folder(data, ".Archive") / sub).iterdir()]
        assert len(copied) == 3
        assert any(p.stat().st_nlink == 2 for p in copied)
        other = len(b"Subject: x\r\n\r\nother\r\n")
        assert (await imap.quota(ALICE)).used_bytes == 5 * len(MSG) + other
        rows = await imap.message_data(dst, [2, 3])
        assert all(m.flags == {"\\Seen"} for m in rows)
        bodies = await imap.read_files(dst, rows)
        assert bodies == [MSG, MSG]
        # The source is untouched.
        assert len((await imap.snapshot(src)).uids) == 3

    run(data, go)


def test_move_renames_and_expunges_source(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        for _ in range(3):
            await store.deliver(ALICE, MSG)
        src = await imap.mailbox(ALICE, "INBOX")
        dst = await imap.mailbox(ALICE, "Trash")
        before = (await imap.snapshot(src)).highestmodseq
        used = (await imap.quota(ALICE)).used_bytes
        r = await imap.copy(src, [1, 2], dst, move=True)
        assert r.source_uids == (1, 2) and r.dest_uids == (1, 2)
        assert (await imap.snapshot(src)).uids == [3]
        assert (await imap.changes(src, before)).expunged == (1, 2)
        assert len(files(folder(data, ".Trash"))) == 2 and len(files(folder(data))) == 1
        assert (await imap.quota(ALICE)).used_bytes == used

    run(data, go)


# ---------------------------------------------------------------------------- append, quota


def test_append_with_flags_date_and_quota(data: Path) -> None:
    with Directory(data / "kittiwake.db", passwords=FakePasswords(), durable=False) as d:
        d.set_quota(ALICE, 3 * len(MSG))

    async def go(store: MailStore) -> None:
        imap = store.imap
        r = await imap.append(ALICE, "Drafts", MSG, flags=["\\Draft"], internaldate=1e9)
        box = await imap.mailbox(ALICE, "Drafts")
        assert (r.uid, r.uidvalidity) == (1, box.uidvalidity)
        (m,) = await imap.message_data(box, [1])
        assert m.flags == {"\\Draft"} and m.internaldate == 1e9 and m.structure
        await imap.append(ALICE, "Drafts", MSG)
        assert not await imap.quota_exceeded(ALICE, len(MSG))
        await imap.append(ALICE, "Drafts", MSG)
        assert await imap.quota_exceeded(ALICE, 1)
        with pytest.raises(OverQuota):
            await imap.append(ALICE, "Drafts", MSG)
        with pytest.raises(OverQuota):
            await imap.copy(box, [1], await imap.mailbox(ALICE, "INBOX"))
        with pytest.raises(NotFound):
            await imap.append(ALICE, "Nope", MSG)
        q = await imap.quota(ALICE)
        assert (q.used_bytes, q.limit_bytes) == (3 * len(MSG), 3 * len(MSG))

    run(data, go)


def test_status_counts(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        await store.deliver(ALICE, MSG, flags=frozenset({"\\Seen"}))
        await store.deliver(ALICE, MSG, flags=frozenset({"\\Deleted"}))
        await store.deliver(ALICE, MSG)
        st = await imap.status(await imap.mailbox(ALICE, "INBOX"))
        assert (st.messages, st.unseen, st.deleted, st.size, st.uidnext) == (
            3, 2, 1, 3 * len(MSG), 4)

    run(data, go)


def test_structure_parsed_on_demand_and_cached(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        await store.deliver(ALICE, MSG)
        with sqlite3.connect(data / "kittiwake.db") as conn:
            conn.execute("DELETE FROM structures")
        box = await imap.mailbox(ALICE, "INBOX")
        rows = await imap.message_data(box, [1])
        assert rows[0].structure is None
        (struct,) = await imap.structures(box, rows)
        assert struct is not None and struct["env"]["subject"] == "hi"
        for _ in range(100):  # cached by a background write
            if (await imap.message_data(box, [1]))[0].structure is not None:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("structure was not cached")

    run(data, go)


def test_walk_in_while_running_is_seen_at_select(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        box = await imap.mailbox(ALICE, "INBOX")
        assert not (await imap.snapshot(box)).uids
        (folder(data) / "cur" / "1600000000.x.host:2,FS").write_bytes(MSG)
        (folder(data) / "new" / "1600000001.y.host").write_bytes(MSG)
        os.utime(folder(data) / "cur", ns=(0, 10**18))  # the mtime changed
        snap = await imap.snapshot(box)
        rows = await imap.message_data(box, snap.uids)
        assert [(m.uid, m.flags) for m in rows] == [
            (1, {"\\Flagged", "\\Seen"}), (2, frozenset())]

    run(data, go)


def test_walk_in_takes_size_and_date_from_maildir_names_else_from_stat(data: Path) -> None:
    """A Maildir++ name carries delivery time and `,S=` size (Dovecot writes both): the
    walk-in trusts them, as Dovecot does, instead of a stat() per file; other names are
    stat()ed (mtime as INTERNALDATE, as rescan.py)."""
    async def go(store: MailStore) -> None:
        imap = store.imap
        box = await imap.mailbox(ALICE, "INBOX")
        cur = folder(data) / "cur"
        (cur / f"1600000000.M1P2Q3.host,S={len(MSG)},W=99:2,S").write_bytes(MSG)
        (cur / "plain-name:2,").write_bytes(MSG + b"more")
        os.utime(cur / "plain-name:2,", (1500000000, 1500000000))
        os.utime(cur, ns=(0, 10**18))
        snap = await imap.snapshot(box)
        rows = await imap.message_data(box, snap.uids)
        assert [(m.internaldate, m.size) for m in rows] == [
            (1500000000.0, len(MSG) + 4), (1600000000.0, len(MSG))]

    run(data, go)


@pytest.mark.parametrize(("base", "facts"), [
    ("1546324424.M2P1Q1.host,S=3773", (3773, 1546324424.0)),
    ("1546324424.M2P1Q1.host,S=3773,W=3850", (3773, 1546324424.0)),
    ("1546324424.M2P1Q1.host,W=3850,S=12", (12, 1546324424.0)),
    ("1546324424.M2P1Q1.host", (None, None)),  # no size: stat
    ("15463.M2P1Q1.host,S=3773", (None, None)),  # not a delivery time
    ("abcdefghij.M2P1Q1.host,S=3773", (None, None)),
    ("1546324424.M2P1Q1.host,S=", (None, None)),
    ("1546324424.M2P1Q1.host,S=12x", (None, None)),
    ("1546324424,S=12", (None, None)),  # the size must follow the unique part
])
def test_maildir_name_facts(base: str, facts: tuple[int | None, float | None]) -> None:
    from kittiwake.store.walkin import _from_name

    assert _from_name(base) == facts


# ---------------------------------------------------------------------------- notification


def test_delivery_and_store_wake_subscribers(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        sub = imap.subscribe("Alice@Example.com")
        assert not await sub.wait(0.01)
        await store.deliver(ALICE, MSG)
        assert await sub.wait(1.0)
        sub.clear()
        box = await imap.mailbox(ALICE, "INBOX")
        await imap.store_flags(box, [1], StoreMode.ADD, ["\\Seen"])
        assert sub.pending
        sub.close()
        assert len(imap.notifier) == 0

    run(data, go)


def test_default_quota_applies_to_accounts_without_their_own(data: Path) -> None:
    async def go(store: MailStore) -> None:
        imap = store.imap
        assert not await imap.quota_exceeded(ALICE, 10**9)  # no limit anywhere
        imap.set_default_quota(2 * len(MSG))
        await imap.append(ALICE, "INBOX", MSG)
        assert (await imap.quota(ALICE)).limit_bytes == 2 * len(MSG)
        assert await imap.quota_exceeded(ALICE, len(MSG) + 1)
        with pytest.raises(OverQuota):
            await imap.append(ALICE, "INBOX", MSG + MSG)

    run(data, go)
