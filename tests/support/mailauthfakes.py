"""Stand-ins for unit tests of kittiwake.mailauth: a TXT-only `Resolver`, a pyspf lookup
table, and a message factory. (End-to-end tests use a real NSD instead.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kittiwake.dns import DnsStatus, DnsTemporaryError, MxResult

TEMPFAIL = object()  # a TXT value meaning "this lookup fails temporarily"


class FakeResolver:
    """`kittiwake.dns.Resolver` answering TXT from a dict (name → list of texts)."""

    def __init__(self, txt: Mapping[str, Any] | None = None) -> None:
        self.records: dict[str, Any] = {k.lower(): v for k, v in (txt or {}).items()}
        self.queries: list[str] = []

    def add(self, name: str, *texts: str) -> None:
        self.records.setdefault(name.lower(), []).extend(texts)

    async def txt(self, name: str) -> list[str]:
        self.queries.append(name.lower())
        value = self.records.get(name.lower().rstrip("."), [])
        if value is TEMPFAIL:
            raise DnsTemporaryError(f"{name}: timeout")
        return list(value)

    async def mx(self, domain: str) -> MxResult:
        return MxResult((), DnsStatus.NXDOMAIN)

    async def addresses(self, host: str) -> list[str]:
        return []


class SpfTable:
    """A pyspf lookup function over a dict: (name, type) → list of values."""

    def __init__(self, data: Mapping[tuple[str, str], list[Any]]) -> None:
        self.data = {(n.lower(), t): v for (n, t), v in data.items()}
        self.queries: list[tuple[str, str]] = []

    def __call__(self, name: str, qtype: str, timeout: float) -> list[Any]:
        key = (name.lower().rstrip("."), qtype)
        self.queries.append(key)
        values = self.data.get(key, [])
        if values is TEMPFAIL:
            import spf

            raise spf.TempError("DNS timeout")
        if qtype in ("TXT", "SPF"):
            return [((key[0], qtype), (v.encode(),)) for v in values]
        return [((key[0], qtype), v) for v in values]


def message(*, from_: str = "Alice <alice@a.test>", to: str = "bob@b.test",
            subject: str = "Hello", extra: str = "", body: str = "Hi Bob,\r\nsee you.\r\n"
            ) -> bytes:
    head = (f"From: {from_}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m1@a.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" + extra)
    return (head + "\r\n" + body).encode("utf-8")
