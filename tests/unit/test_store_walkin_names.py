"""Folders walked in from Dovecot keep their real names: Dovecot (without the UTF8 option
in mail_location) writes folder names on disk in IMAP modified UTF-7 (RFC 3501 §5.1.3),
Kittiwake writes UTF-8, so `discover` must translate or users see "Entw&APw-rfe"."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pytest

from kittiwake.store import MailStore
from kittiwake.store.mailboxops import _from_mutf7
from support.storefakes import data_dir_with
from support.storefakes import run_store as run

T = TypeVar("T")
ALICE = "alice@example.com"
MSG = b"From: a@example.net\r\nTo: alice@example.com\r\nSubject: hi\r\n\r\nHello\r\n"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return data_dir_with(tmp_path, ALICE)


def account(data: Path) -> Path:
    return data / "mail" / "example.com" / "alice"


def copy_in(data: Path, dirname: str, messages: int = 1) -> Path:
    """A Maildir++ folder as a migration copies it in, with messages in cur/."""
    path = account(data) / dirname
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    (path / "maildirfolder").touch()
    for i in range(messages):
        (path / "cur" / f"170000000{i}.M1P1Q{i}.dovecot,S={len(MSG)}:2,S").write_bytes(MSG)
    return path


def on_disk(data: Path) -> set[str]:
    return {p.name for p in account(data).iterdir() if p.name.startswith(".")}


async def names(store: MailStore) -> set[str]:
    return {m.name for m in await store.imap.list_mailboxes(ALICE, discover=True)}


async def uids(store: MailStore, name: str) -> list[int]:
    box = await store.imap.mailbox(ALICE, name)
    return (await store.imap.snapshot(box)).uids


def test_dovecot_names_are_adopted_decoded_with_their_mail(data: Path) -> None:
    copy_in(data, ".Entw&APw-rfe", messages=2)
    copy_in(data, ".&ZeVnLIqe-")
    copy_in(data, ".Gel&APY-schte Elemente")
    copy_in(data, ".Archiv")
    copy_in(data, ".Archiv.Entw&APw-rfe", messages=3)

    async def go(store: MailStore) -> None:
        found = await names(store)
        assert {"Entwürfe", "日本語", "Gelöschte Elemente", "Archiv",
                "Archiv/Entwürfe"} <= found
        assert not any("&" in n for n in found)
        assert await uids(store, "Entwürfe") == [1, 2]
        assert await uids(store, "日本語") == [1]
        assert await uids(store, "Archiv/Entwürfe") == [1, 2, 3]
        box = await store.imap.mailbox(ALICE, "Gelöschte Elemente")
        st = await store.imap.status(box)
        assert (st.messages, st.unseen) == (1, 0)  # the :2,S flag came along
        _, raws = await store.imap.message_files(box, [1], structure=False, budget=1 << 20)
        assert raws == [MSG]

    run(data, go)
    disk = on_disk(data)
    assert {".Entwürfe", ".日本語", ".Gelöschte Elemente", ".Archiv",
            ".Archiv.Entwürfe"} <= disk
    assert not any("&" in d for d in disk)


def test_decoded_superior_keeps_its_inferiors(data: Path) -> None:
    copy_in(data, ".&ZeVnLIqe-")
    copy_in(data, ".&ZeVnLIqe-.Entw&APw-rfe")

    async def go(store: MailStore) -> None:
        assert {"日本語", "日本語/Entwürfe"} <= await names(store)
        assert await uids(store, "日本語/Entwürfe") == [1]

    run(data, go)
    assert {".日本語", ".日本語.Entwürfe"} <= on_disk(data)


def test_names_with_a_bare_ampersand_stay_as_they_are(data: Path) -> None:
    copy_in(data, ".R&D")  # no shift: not modified UTF-7
    copy_in(data, ".Q&A.Entw&APw-rfe")  # only the valid part is decoded
    copy_in(data, ".Tom &Jerry-")  # "&Jerry-" is not canonical base64 for anything

    async def go(store: MailStore) -> None:
        found = await names(store)
        assert {"R&D", "Q&A/Entwürfe", "Tom &Jerry-"} <= found
        assert await uids(store, "R&D") == [1]

    run(data, go)
    assert {".R&D", ".Q&A.Entwürfe", ".Tom &Jerry-"} <= on_disk(data)


def test_escaped_ampersand_is_dovecots_spelling_of_a_literal_one(data: Path) -> None:
    copy_in(data, ".R&-D")

    async def go(store: MailStore) -> None:
        found = await names(store)
        assert "R&D" in found and "R&-D" not in found
        assert await uids(store, "R&D") == [1]

    run(data, go)
    assert ".R&D" in on_disk(data) and ".R&-D" not in on_disk(data)


def test_existing_target_is_never_overwritten(data: Path) -> None:
    dovecot = copy_in(data, ".Entw&APw-rfe", messages=2)
    ours = copy_in(data, ".Entwürfe", messages=1)

    async def go(store: MailStore) -> None:
        found = await names(store)
        assert "Entwürfe" in found and "Entw&APw-rfe" not in found
        assert await uids(store, "Entwürfe") == [1]  # only the folder that was there

    run(data, go)
    assert len(list((dovecot / "cur").iterdir())) == 2  # left alone for a person to merge
    assert len(list((ours / "cur").iterdir())) == 1


def test_target_held_by_an_existing_mailbox_is_not_taken(data: Path) -> None:
    async def create(store: MailStore) -> None:
        await store.imap.create_mailbox(ALICE, "Entwürfe")

    run(data, create)
    dovecot = copy_in(data, ".Entw&APw-rfe")

    async def go(store: MailStore) -> None:
        assert "Entw&APw-rfe" not in await names(store)
        assert await uids(store, "Entwürfe") == []

    run(data, go)
    assert dovecot.is_dir()


def test_plain_names_are_unchanged(data: Path) -> None:
    copy_in(data, ".Projects.Old%2Edone")
    copy_in(data, ".Entwürfe")  # already UTF-8, as Dovecot writes it with the UTF8 option

    async def go(store: MailStore) -> None:
        assert {"Projects/Old.done", "Entwürfe"} <= await names(store)
        assert await uids(store, "Projects/Old.done") == [1]

    run(data, go)
    assert {".Projects.Old%2Edone", ".Entwürfe"} <= on_disk(data)


def test_existing_row_with_an_mutf7_looking_name_is_left_alone(data: Path) -> None:
    # A UTF8=ACCEPT client may name a mailbox "Entw&APw-rfe" on purpose.
    async def go(store: MailStore) -> None:
        await store.imap.create_mailbox(ALICE, "Entw&APw-rfe")
        found = await names(store)
        assert "Entw&APw-rfe" in found and "Entwürfe" not in found

    run(data, go)
    assert ".Entw&APw-rfe" in on_disk(data)


def test_from_mutf7() -> None:
    assert _from_mutf7("Entw&APw-rfe") == "Entwürfe"
    assert _from_mutf7("a/&ZeVnLIqe-") == "a/日本語"
    assert _from_mutf7("R&-D") == "R&D"
    assert _from_mutf7("R&D") is None
    assert _from_mutf7("Sent") is None
    assert _from_mutf7("&AAE-") is None  # decodes to a control character
    assert _from_mutf7("&AGE-") is None  # printable ASCII in a shift is not canonical
