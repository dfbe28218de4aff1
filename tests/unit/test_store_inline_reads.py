"""Reads done on the event loop's thread (MailStore._read_now): the files of a one-message
FETCH are read there only when the page cache holds them (preadv2 RWF_NOWAIT); otherwise
the reader pool does it, with the same bytes either way."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from kittiwake.store import MailStore, StoreSettings, messageops
from kittiwake.store.messageops import folder_of
from support.storefakes import data_dir_with

ALICE = "alice@example.com"
MESSAGE = b"From: a@example.net\r\nSubject: hello\r\n\r\n" + b"line of text\r\n" * 4000


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return data_dir_with(tmp_path, ALICE)


def _evict(path: Path) -> bool:
    """Drop a file from the page cache; False where the file system keeps it (tmpfs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            os.preadv(fd, [bytearray(16)], 0, os.RWF_NOWAIT)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(fd)


def test_one_message_fetch_reads_cached_files_inline_and_others_on_the_pool(data: Path) -> None:
    async def main() -> None:
        async with MailStore(StoreSettings(data, fsync=False, hostname="t")) as store:
            imap = store.imap
            await store.deliver(ALICE, MESSAGE)
            box = await imap.mailbox(ALICE, "INBOX")
            threads: list[str] = []
            real = messageops.read_files

            def spy(folder: Path, rows: list[messageops.MessageData]) -> list[bytes | None]:
                threads.append(threading.current_thread().name)
                return real(folder, rows)

            messageops.read_files = spy  # type: ignore[assignment]
            try:
                rows, raws = await imap.message_files(box, [1], structure=False,
                                                      budget=1 << 20)
                assert raws == [MESSAGE] and rows[0].uid == 1
                assert threads == []  # in the page cache: read on the loop's thread
                folder = await imap._read(lambda conn: folder_of(
                    conn, store.settings.mail_root, box.id))
                (path,) = [p for sub in ("new", "cur") for p in (folder / sub).iterdir()]
                if not _evict(path):
                    pytest.skip("this file system keeps files in memory")
                assert messageops.read_files_cached(folder, rows) is None
                _evict(path)  # (the miss above may have started a read-ahead)
                rows, raws = await imap.message_files(box, [1], structure=False,
                                                      budget=1 << 20)
                assert raws == [MESSAGE]
                assert threads and threads[0] != threading.current_thread().name
            finally:
                messageops.read_files = real  # type: ignore[assignment]

    asyncio.run(main())
