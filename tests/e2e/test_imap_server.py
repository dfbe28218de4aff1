"""IMAP end to end with Python's imaplib: a real ImapServer on loopback (plaintext +
STARTTLS and implicit TLS, certificates from trustme), the real store and directory
(argon2id passwords), mail delivered through MailStore.deliver.

The server runs in-process on its own event-loop thread (the lead wires it into
`kittiwake serve`); the other IMAP e2e modules import `ImapEnv`/`imap_env` from here.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import imaplib
import re
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from kittiwake import credentials
from kittiwake.credentials import Argon2Settings, AuthThrottle
from kittiwake.imapserver.server import ImapServer, ImapServerSettings, ListenerSpec
from kittiwake.inbound import DirectoryCredentials
from kittiwake.store import Directory, MailStore, StoreSettings
from kittiwake.tlsconfig import server_context

T = TypeVar("T")
ALICE = "alice@example.com"
BOB = "bob@example.com"
PASSWORD = "correct horse"
CHEAP = Argon2Settings(time_cost=1, memory_cost=1024, parallelism=1)


class CheapArgon2:
    """Real argon2id and SCRAM records, with test-sized costs."""

    def hash(self, password: str) -> str:
        return credentials.hash_password(password, settings=CHEAP)

    def verify(self, stored: str, password: str) -> bool:
        return credentials.verify_password(stored, password)

    def scram(self, password: str) -> str:
        return credentials.derive_scram_sha256(password).to_text()


def message(n: int, *, subject: str | None = None, extra: bytes = b"") -> bytes:
    return (f"From: Bob Sender <bob@example.net>\r\nTo: {ALICE}\r\n"
            f"Subject: {subject or f'message {n}'}\r\n"
            f"Date: Wed, 6 Mar 2024 12:0{n % 10}:00 +0000\r\n"
            f"Message-ID: <{n}.{time.monotonic_ns()}@example.net>\r\n\r\n").encode() + (
        b"Hello\r\n.leading dot\r\n\r\n" + extra + f"line {n}\r\n".encode())


MIME = (
    b"From: Carol <carol@example.org>\r\nTo: alice@example.com\r\nSubject: with attachment\r\n"
    b"Date: Thu, 7 Mar 2024 08:00:00 +0000\r\nMessage-ID: <mime@example.org>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=xyz\r\n\r\n"
    b"--xyz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the attached file.\r\n"
    b"--xyz\r\nContent-Type: application/pdf; name=r.pdf\r\nContent-Transfer-Encoding: base64\r\n"
    b"\r\nJVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoK\r\n--xyz--\r\n"
)


@dataclass
class ImapEnv:
    root: Path
    loop: asyncio.AbstractEventLoop
    store: MailStore
    directory: Directory
    server: ImapServer
    ca_pem: Path
    client_ctx: ssl.SSLContext
    ports: dict[str, int] = field(default_factory=dict)
    thread: threading.Thread | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def deliver(self, content: bytes, account: str = ALICE, mailbox: str = "INBOX",
                flags: frozenset[str] = frozenset()) -> int:
        return self.call(self.store.deliver(account, content, mailbox=mailbox, flags=flags)).uid

    def maildir(self, account: str = ALICE, folder: str = "") -> Path:
        local, domain = account.split("@")
        base = self.root / "mail" / domain / local
        return base / folder if folder else base

    def plain(self) -> imaplib.IMAP4:
        """Port 143 style: plaintext, then STARTTLS and LOGIN."""
        client = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=10)
        client.starttls(self.client_ctx)
        client.login(ALICE, PASSWORD)
        return client

    def tls(self, user: str = ALICE) -> imaplib.IMAP4_SSL:
        """Port 993 style: implicit TLS."""
        client = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=self.client_ctx,
                                   timeout=10)
        client.login(user, PASSWORD)
        return client

    def stop(self) -> None:
        self.call(self.server.shutdown())
        self.call(self.store.imap.stop_indexer())
        self.call(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)
        self.directory.close()


def start_env(root: Path, **settings: Any) -> ImapEnv:
    directory = Directory(root / "kittiwake.db", passwords=CheapArgon2(), durable=False)
    directory.add_domain("example.com")
    for account in (ALICE, BOB):
        directory.add_account(account, PASSWORD)
    ca = trustme.CA()
    ca_pem = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    leaf = root / "server.pem"
    # A common name too: mbsync 1.4 insists on one and compares it with the host string.
    ca.issue_cert("localhost", "127.0.0.1", common_name="127.0.0.1"
                  ).private_key_and_cert_chain_pem.write_to_path(str(leaf))
    client_ctx = ssl.create_default_context(cafile=str(ca_pem))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="imap-e2e-loop", daemon=True)
    thread.start()
    store = MailStore(StoreSettings(root, fsync=False, hostname="e2e.test"))
    server = ImapServer(
        ImapServerSettings(hostname="localhost", **settings),
        [ListenerSpec("imap", "127.0.0.1", 0, "starttls"),
         ListenerSpec("imaps", "127.0.0.1", 0, "implicit")],
        store.imap, DirectoryCredentials(directory), server_context(leaf, leaf),
        throttle=AuthThrottle(base_delay=0.0, max_delay=0.0))
    env = ImapEnv(root, loop, store, directory, server, ca_pem, client_ctx, thread=thread)
    env.call(store.start())
    env.call(server.start())
    env.loop.call_soon_threadsafe(store.imap.start_indexer)  # as `kittiwake serve` does
    plain_port, tls_port = server.bound_ports()
    env.ports = {"imap": plain_port, "imaps": tls_port}
    return env


@pytest.fixture
def imap_env(tmp_path: Path) -> Iterator[ImapEnv]:
    env = start_env(tmp_path)
    try:
        yield env
    finally:
        env.stop()


def fetch_one(client: imaplib.IMAP4, num: str, item: str, *, uid: bool = False) -> bytes:
    typ, data = client.uid("FETCH", num, item) if uid else client.fetch(num, item)
    assert typ == "OK", data
    for part in data:
        if isinstance(part, tuple):
            return part[1]
    raise AssertionError(f"no literal in {data!r}")


# ---------------------------------------------------------------------------- tests


def test_login_refused_before_starttls_then_works_on_both_ports(imap_env: ImapEnv) -> None:
    raw = imaplib.IMAP4("127.0.0.1", imap_env.ports["imap"], timeout=10)
    assert "LOGINDISABLED" in raw.capabilities and "STARTTLS" in raw.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        raw.login(ALICE, PASSWORD)
    raw.starttls(imap_env.client_ctx)
    assert raw.login(ALICE, PASSWORD)[0] == "OK"
    raw.logout()
    tls = imap_env.tls()
    assert "AUTH=PLAIN" in tls.capabilities
    assert tls.noop()[0] == "OK"
    tls.logout()
    with pytest.raises(imaplib.IMAP4.error):
        imap_env.tls().login(ALICE, "wrong")


def test_authenticate_plain_over_tls(imap_env: ImapEnv) -> None:
    client = imaplib.IMAP4_SSL("127.0.0.1", imap_env.ports["imaps"],
                               ssl_context=imap_env.client_ctx, timeout=10)
    typ, _ = client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode())
    assert typ == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_list_select_and_fetch_every_item_byte_for_byte(imap_env: ImapEnv) -> None:
    sent = [message(1), MIME, message(3, extra=b"\xc3\xa4 8-bit text\r\n")]
    for content in sent:
        imap_env.deliver(content)
    c = imap_env.plain()
    typ, boxes = c.list()
    names = b"\n".join(b for b in boxes if isinstance(b, bytes))
    for name in (b"INBOX", b"Sent", b"Drafts", b"Junk", b"Trash", b"Archive"):
        assert name in names
    assert b"\\Sent" in names and b"\\Trash" in names
    typ, data = c.select("INBOX")
    assert typ == "OK" and data[-1] == b"3"  # imaplib also keeps MOVE's "5 EXPUNGE"
    for n, content in enumerate(sent, 1):
        assert fetch_one(c, str(n), "(BODY.PEEK[])") == content
        assert fetch_one(c, str(n), "(RFC822)") == content
    typ, data = c.fetch("2", "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE UID "
                             "MODSEQ BINARY.SIZE[2] BODY.PEEK[HEADER.FIELDS (Subject)])")
    assert typ == "OK"
    head = data[0][0] if isinstance(data[0], tuple) else data[0]
    assert b"RFC822.SIZE %d" % len(MIME) in head and b"\\Seen" in head  # set by RFC822
    assert b'"with attachment"' in head and b'"APPLICATION" "PDF"' in head
    assert b"BINARY.SIZE[2] 27" in head and b"UID 2" in head
    parsed = email.message_from_bytes(fetch_one(c, "2", "(BODY.PEEK[])"),
                                      policy=email.policy.default)
    assert parsed["Subject"] == "with attachment"
    assert fetch_one(c, "2", "(BINARY.PEEK[2])").startswith(b"%PDF-1.4")
    assert fetch_one(c, "2", "(BODY.PEEK[1])") == b"See the attached file."
    assert fetch_one(c, "3", "(BODY.PEEK[TEXT]<0.5>)") == b"Hello"
    c.logout()


def test_search_store_copy_move_append_expunge(imap_env: ImapEnv) -> None:
    for n in range(1, 6):
        imap_env.deliver(message(n, subject="invoice" if n % 2 else "chat"))
    c = imap_env.tls()
    c.select("INBOX")
    assert c.search(None, "SUBJECT", "invoice") == ("OK", [b"1 3 5"])
    assert c.uid("SEARCH", "BODY", "leading") == ("OK", [b"1 2 3 4 5"])
    typ, data = c.store("1:2", "+FLAGS", r"(\Flagged)")
    assert typ == "OK" and len(data) == 2
    assert c.search(None, "FLAGGED") == ("OK", [b"1 2"])
    typ, data = c.copy("1:2", "Archive")
    assert typ == "OK" and b"COPYUID" in data[0]
    typ, data = c.uid("MOVE", "5", "Trash")
    assert typ == "OK"
    assert c.status("Trash", "(MESSAGES)") == ("OK", [b'"Trash" (MESSAGES 1)'])
    draft = message(9)
    typ, data = c.append("Drafts", r"(\Draft \Seen)", imaplib.Time2Internaldate(time.time()),
                         draft)
    assert typ == "OK" and b"APPENDUID" in data[0]
    c.store("3", "+FLAGS", r"(\Deleted)")
    typ, data = c.expunge()
    assert typ == "OK" and data[-1] == b"3"  # imaplib also keeps MOVE's "5 EXPUNGE"
    assert c.search(None, "ALL") == ("OK", [b"1 2 3"])
    c.select("Drafts")
    assert fetch_one(c, "1", "(BODY.PEEK[])") == draft
    typ, flags = c.fetch("1", "(FLAGS)")
    assert b"\\Draft" in flags[0] and b"\\Seen" in flags[0]
    c.select("Archive", readonly=True)
    assert c.search(None, "ALL") == ("OK", [b"1 2"])
    c.logout()
    # What the server did is what the Maildir shows to other tools.
    trash = imap_env.maildir(folder=".Trash")
    assert len(list((trash / "new").iterdir()) + list((trash / "cur").iterdir())) == 1


def test_idle_with_imaplib(imap_env: ImapEnv) -> None:
    c = imap_env.tls()
    c.select("INBOX")
    tag = c._new_tag().decode()
    c.send(f"{tag} IDLE\r\n".encode())
    assert c.readline().startswith(b"+")
    start = time.monotonic()
    imap_env.deliver(message(1))
    line = c.readline()
    assert line == b"* 1 EXISTS\r\n" and time.monotonic() - start < 1.0
    c.send(b"DONE\r\n")
    assert c.readline().startswith(tag.encode() + b" OK")
    c.logout()


def test_many_messages_and_large_message(imap_env: ImapEnv) -> None:
    big = message(0, extra=b"x" * 78 + b"\r\n") * 1  # headers once
    big = big + (b"y" * 998 + b"\r\n") * 3000  # ~3 MB
    imap_env.deliver(big)
    for n in range(1, 301):
        imap_env.deliver(message(n))
    c = imap_env.tls()
    c.select("INBOX")
    typ, data = c.fetch("1:*", "(UID FLAGS RFC822.SIZE)")
    assert typ == "OK" and len(data) == 301
    assert fetch_one(c, "1", "(BODY.PEEK[])") == big
    typ, data = c.uid("SEARCH", "SMALLER", "1000")
    assert len(data[0].split()) == 300
    assert re.match(rb"\d+", data[0])
    c.logout()
