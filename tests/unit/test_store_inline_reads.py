"""Reads done on the event loop's thread (MailStore._read_now): the files of a one-message
FETCH are read there only when the page cache holds them (preadv2 RWF_NOWAIT); otherwise
the reader pool does it, with the same bytes either way."""

from __future__ import annotations

import asyncio
import os
import threading
import time
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


def _on_tmpfs(path: Path) -> bool:
    """Whether `path` lives on a file system that keeps files in memory (no page cache
    to drop)."""
    best, kind = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount, fstype = fields[4], fields[fields.index("-") + 1]
        if str(path).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fstype
    return kind in ("tmpfs", "ramfs")


def _evict(path: Path) -> None:
    """Drop a file from the page cache.  (Not checked with a read: a RWF_NOWAIT miss
    starts a read-ahead that would put it back.)"""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_one_message_fetch_reads_cached_files_inline_and_others_on_the_pool(
        data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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

            monkeypatch.setattr(messageops, "read_files", spy)
            rows, raws = await imap.message_files(box, [1], structure=False, budget=1 << 20)
            assert raws == [MESSAGE] and rows[0].uid == 1
            assert threads == []  # in the page cache: read on the loop's thread
            # A file that would make the loop wait for the disk is read on a pool thread.
            monkeypatch.setattr(messageops, "read_files_cached", lambda folder, rows: None)
            rows, raws = await imap.message_files(box, [1], structure=False, budget=1 << 20)
            assert raws == [MESSAGE]
            assert threads and threads[0] != threading.current_thread().name
            monkeypatch.undo()
            # And the kernel does say "would block" for a file that is not cached.
            folder = await imap._read(lambda conn: folder_of(
                conn, store.settings.mail_root, box.id))
            (path,) = [p for sub in ("new", "cur") for p in (folder / sub).iterdir()]
            if _on_tmpfs(path):
                pytest.skip("this file system keeps files in memory")
            # DONTNEED is advice: a page under writeback or just read back by the kernel
            # may stay.  Evicted again before each try, the file is soon seen uncached.
            for _ in range(20):
                _evict(path)
                if messageops.read_files_cached(folder, rows) is None:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("a file dropped from the page cache was read inline")

    asyncio.run(main())
