"""Stand-ins shared by the store's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from kittiwake.store import Directory, MailStore, StoreSettings

T = TypeVar("T")


class FakePasswords:
    """Instant stand-in for argon2id/SCRAM: the directory only stores what it is given."""

    def hash(self, password: str) -> str:
        return "fake$" + password

    def verify(self, stored: str, password: str) -> bool:
        return stored == "fake$" + password

    def scram(self, password: str) -> str:
        return "SCRAM-SHA-256$fake$" + password


def data_dir_with(tmp_path: Path, *accounts: str) -> Path:
    """A data directory whose directory holds these accounts (and their domains)."""
    with Directory(tmp_path / "kittiwake.db", passwords=FakePasswords(), durable=False) as d:
        for address in accounts:
            domain = address.rpartition("@")[2]
            if not d.is_local_domain(domain):
                d.add_domain(domain)
            d.add_account(address, "pw")
    return tmp_path


def run_store(data: Path, fn: Callable[[MailStore], Awaitable[T]]) -> T:
    """Run `fn` against a started store on `data` (no fsync: tests)."""

    async def main() -> T:
        async with MailStore(StoreSettings(data, fsync=False, hostname="t")) as store:
            return await fn(store)

    return asyncio.run(main())
