"""A real IMAP Session over an in-memory transport, against a real MailStore in a temp dir:
protocol tests in milliseconds, no sockets.  The harness for tests/unit/test_imapserver*.py,
with the greeting and login tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kittiwake.credentials import AuthThrottle
from kittiwake.imapserver.server import ImapServer, ImapServerSettings, ListenerSpec
from kittiwake.imapserver.session import Session
from kittiwake.store import Directory, MailStore, StoreSettings

T = TypeVar("T")
ALICE = "alice@example.com"
BOB = "bob@example.com"
PASSWORD = "pw"


class Passwords:
    def hash(self, password: str) -> str:
        return "fake$" + password

    def verify(self, stored: str, password: str) -> bool:
        return stored == "fake$" + password

    def scram(self, password: str) -> str:
        from kittiwake import credentials

        return credentials.derive_scram_sha256(password).to_text()


class FakeTransport(asyncio.Transport):
    def __init__(self, protocol: Session) -> None:
        super().__init__()
        self.protocol = protocol
        self.data = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.1", 40000), "sockname": ("127.0.0.1", 143)}.get(
            name, default)


@dataclass
class Client:
    """One connection: `await c.cmd("SELECT INBOX")` sends a tagged command and returns
    the response lines (literals inline) up to and including its tagged completion."""

    session: Session
    transport: FakeTransport
    pos: int = 0
    n: int = 0
    log: list[bytes] = field(default_factory=list)

    def feed(self, data: bytes) -> None:
        self.session.data_received(data)

    async def read_until(self, pattern: bytes, timeout: float = 5.0) -> bytes:
        rx = re.compile(pattern, re.MULTILINE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            chunk = bytes(self.transport.data[self.pos :])
            m = rx.search(chunk)
            if m:  # patterns end with CRLF
                end = m.end()
                out = chunk[:end]
                self.pos += end
                self.log.append(out)
                return out
            if loop.time() > deadline:
                raise AssertionError(f"timeout waiting for {pattern!r}; got {chunk!r}")
            await asyncio.sleep(0.005)

    async def cmd(self, text: str | bytes, timeout: float = 5.0) -> bytes:
        self.n += 1
        tag = f"a{self.n}"
        line = text.encode() if isinstance(text, str) else text
        self.feed(tag.encode() + b" " + line + b"\r\n")
        return await self.read_until(rb"^" + tag.encode() + rb" (OK|NO|BAD)[^\r\n]*\r\n", timeout)

    async def login(self, user: str = ALICE) -> bytes:
        return await self.cmd(f"LOGIN {user} {PASSWORD}")


@dataclass
class Env:
    root: Path
    store: MailStore
    directory: Directory
    server: ImapServer

    async def connect(self, *, tls: bool = True) -> Client:
        listener = self.server.listeners[0 if tls else 1]
        session = Session(listener)
        transport = FakeTransport(session)
        session.connection_made(transport)
        client = Client(session, transport)
        await client.read_until(rb"^\* OK [^\r\n]*\r\n")
        return client

    async def deliver(self, content: bytes, account: str = ALICE, **kw: Any) -> int:
        return (await self.store.deliver(account, content, **kw)).uid


def message(n: int, *, subject: str | None = None, body: str = "Hello world") -> bytes:
    return (f"From: Bob Sender <bob@example.net>\r\nTo: alice@example.com\r\n"
            f"Subject: {subject or f'message {n}'}\r\nDate: Mon, 1 Jan 2024 10:00:0{n % 10} +0000\r\n"
            f"Message-ID: <{n}@example.net>\r\n\r\n{body} {n}\r\n").encode()


def run(tmp: Path, fn: Callable[[Env], Awaitable[T]], **settings: Any) -> T:
    async def main() -> T:
        directory = Directory(tmp / "kittiwake.db", passwords=Passwords(), durable=False)
        directory.add_domain("example.com")
        directory.add_account(ALICE, PASSWORD)
        directory.add_account(BOB, PASSWORD)
        store = MailStore(StoreSettings(tmp, fsync=False, hostname="unit"))
        await store.start()
        from kittiwake.inbound import DirectoryCredentials

        server = ImapServer(
            ImapServerSettings(**settings),
            [ListenerSpec("imaps", "127.0.0.1", 0, "implicit"),
             ListenerSpec("imap", "127.0.0.1", 0, "starttls")],
            store.imap, DirectoryCredentials(directory), None,
            throttle=AuthThrottle(base_delay=0.0, max_delay=0.0))
        env = Env(tmp, store, directory, server)
        try:
            return await asyncio.wait_for(fn(env), 60)
        finally:
            for s in list(server.sessions):
                s.close(None)
            await asyncio.sleep(0)
            await store.close()
            directory.close()

    return asyncio.run(main())


# ---------------------------------------------------------------------------- tests


def test_greeting_advertises_starttls_and_logindisabled_before_tls(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        plain = await env.connect(tls=False)
        greeting = plain.log[0]
        assert b"LOGINDISABLED" in greeting and b"AUTH=SCRAM-SHA-256" in greeting
        assert b"AUTH=PLAIN" not in greeting
        reply = await plain.login()
        assert b"NO [PRIVACYREQUIRED]" in reply
        tls = await env.connect()
        assert b"LOGINDISABLED" not in tls.log[0] and b"AUTH=PLAIN" in tls.log[0]

    run(tmp_path, go)


def test_login_success_failure_and_capabilities_after(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        bad = await c.cmd("LOGIN alice@example.com wrong")
        assert b"NO [AUTHENTICATIONFAILED]" in bad
        good = await c.login()
        assert b"OK [CAPABILITY IMAP4rev2" in good and b"MOVE" in good and b"QRESYNC" in good
        again = await c.login()
        assert b" BAD " in again  # LOGIN is not valid once authenticated

    run(tmp_path, go, auth_max_failures=50)
