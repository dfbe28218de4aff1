"""POP3 end to end with Python's poplib: a real Pop3Server on loopback, real TLS (trustme),
the real store and directory (argon2id passwords), mail delivered through MailStore.deliver.

The server runs in-process on its own event loop thread (the lead wires it into
`kittiwake serve`); the other POP3 e2e modules import the `pop3` fixture and helpers from here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import poplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from kittiwake import credentials
from kittiwake.credentials import Argon2Settings, AuthThrottle
from kittiwake.inbound import DirectoryCredentials
from kittiwake.pop3.server import ServerSettings
from kittiwake.pop3server.server import ListenerSpec, Pop3Server, Pop3ServerSettings
from kittiwake.store import DeliveryRequest, Directory, MailStore, MessageRow, StoreSettings
from kittiwake.store.pop3ops import Maildrop, MaildropLock
from kittiwake.tlsconfig import server_context

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
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


def message(n: int, extra: bytes = b"") -> bytes:
    """A CRLF message with dot lines and a line that is only a dot, as SMTP stores them."""
    return (f"From: sender@example.net\r\nTo: {ALICE}\r\nSubject: message {n}\r\n"
            f"Message-ID: <{n}.{time.monotonic_ns()}@example.net>\r\n\r\n").encode() + (
        b"Hello\r\n.leading dot\r\n..two\r\n.\r\n" + extra + f"line {n}\r\n".encode())


@dataclass
class Pop3Env:
    root: Path
    loop: asyncio.AbstractEventLoop
    store: MailStore
    directory: Directory
    server: Pop3Server
    ca_pem: Path
    client_ctx: ssl.SSLContext
    ports: dict[str, int] = field(default_factory=dict)
    thread: threading.Thread | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def deliver(self, content: bytes, account: str = ALICE) -> int:
        return self.call(self.store.deliver(account, content)).uid

    def rows(self, account: str = ALICE) -> list[MessageRow]:
        return self.call(self.store.list_messages(account))

    def maildrop(self, account: str = ALICE) -> Maildrop:
        return self.call(self.store.maildrop(account))

    def files(self, account: str = ALICE) -> list[Path]:
        local, domain = account.split("@")
        inbox = self.root / "mail" / domain / local
        return sorted(p for sub in ("new", "cur") for p in (inbox / sub).iterdir())

    def highestmodseq(self, account: str = ALICE) -> int:
        with sqlite3.connect(self.root / "kittiwake.db") as conn:
            row = conn.execute(
                "SELECT m.highestmodseq FROM mailboxes m JOIN accounts a ON a.id = m.account_id"
                " WHERE a.address = ? AND m.name = 'INBOX'", (account,)).fetchone()
        return int(row[0])

    def plain(self, *, login: bool = False) -> poplib.POP3:
        """Port 110 style: plain, then STLS."""
        client = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=10)
        if login:
            client.stls(self.client_ctx)
            client.user(ALICE)
            client.pass_(PASSWORD)
        return client

    def tls(self, *, login: bool = True, user: str = ALICE) -> poplib.POP3_SSL:
        """Port 995 style: implicit TLS."""
        client = poplib.POP3_SSL("127.0.0.1", self.ports["pop3s"], timeout=10,
                                 context=self.client_ctx)
        if login:
            client.user(user)
            client.pass_(PASSWORD)
        return client


def start_env(root: Path, *, core: ServerSettings | None = None,
              throttle: AuthThrottle | None = None, **limits: Any) -> Pop3Env:
    directory = Directory(root / "kittiwake.db", passwords=CheapArgon2(), durable=False)
    directory.add_domain("example.com")
    for account in (ALICE, BOB):
        directory.add_account(account, PASSWORD)
    ca = trustme.CA()
    ca_pem = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    leaf = root / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1", common_name="localhost").private_key_and_cert_chain_pem.write_to_path(
        str(leaf))
    client_ctx = ssl.create_default_context(cafile=str(ca_pem))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="pop3-e2e-loop", daemon=True)
    thread.start()
    store = MailStore(StoreSettings(root, fsync=False, hostname="e2e.test"))
    settings = Pop3ServerSettings(core=core or ServerSettings(hostname="pop.test"), **limits)
    server = Pop3Server(
        settings,
        [ListenerSpec("pop3", "127.0.0.1", 0, "starttls"),
         ListenerSpec("pop3s", "127.0.0.1", 0, "implicit")],
        store, DirectoryCredentials(directory), server_context(leaf, leaf), throttle=throttle)
    env = Pop3Env(root, loop, store, directory, server, ca_pem, client_ctx, thread=thread)
    env.call(store.start())
    env.call(server.start())
    for lst in server.listeners:
        assert lst.asyncio_server is not None
        env.ports[lst.kind] = lst.asyncio_server.sockets[0].getsockname()[1]
    return env


def stop_env(env: Pop3Env) -> None:
    try:
        env.call(env.server.shutdown())
        env.call(env.store.close())
    finally:
        env.loop.call_soon_threadsafe(env.loop.stop)
        if env.thread is not None:
            env.thread.join(10)
        env.loop.close()
        env.directory.close()


@pytest.fixture
def pop3(tmp_path: Path) -> Iterator[Pop3Env]:
    env = start_env(tmp_path)
    try:
        yield env
    finally:
        stop_env(env)


def retrieved(lines: Sequence[bytes]) -> bytes:
    """poplib hands back unstuffed lines without CRLF; CRLF content rebuilds exactly."""
    return b"".join(line + b"\r\n" for line in lines)


def login_when_free(env: Pop3Env, deadline: float = 5.0) -> poplib.POP3_SSL:
    """Log in, retrying while the server is still releasing a dropped session's lock."""
    end = time.monotonic() + deadline
    while True:
        client = env.tls(login=False)
        client.user(ALICE)
        try:
            client.pass_(PASSWORD)
            return client
        except poplib.error_proto as e:
            client.close()
            if b"[IN-USE]" not in e.args[0] or time.monotonic() > end:
                raise
            time.sleep(0.05)


# --- capabilities, TLS and login ------------------------------------------------------------


def test_capa_before_and_after_stls(pop3: Pop3Env) -> None:
    client = pop3.plain()
    assert client.getwelcome().startswith(b"+OK pop.test ")
    caps = client.capa()
    assert "STLS" in caps and "USER" not in caps
    assert caps["SASL"] == ["SCRAM-SHA-256"]
    for name in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"):
        assert name in caps
    client.stls(pop3.client_ctx)
    caps = client.capa()
    assert "STLS" not in caps and "USER" in caps
    assert caps["SASL"] == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
    client.quit()


def test_command_sent_right_after_the_stls_handshake_is_answered(pop3: Pop3Env) -> None:
    """Regression: a client's first command can reach the session before the coroutine
    that awaited the handshake resumes; it must be read, not dropped (curl hit this)."""
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", pop3.ports["pop3"]), timeout=5) as raw:
            f = raw.makefile("rb")
            assert f.readline().startswith(b"+OK")
            raw.sendall(b"STLS\r\n")
            assert f.readline() == b"+OK Begin TLS negotiation\r\n"
            with pop3.client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"CAPA\r\n")  # in the same flight as the client's Finished
                assert tls.makefile("rb").readline() == b"+OK Capability list follows\r\n"


def test_user_pass_before_tls_is_refused_with_auth_code(pop3: Pop3Env) -> None:
    client = pop3.plain()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.user(ALICE)
    client.quit()


def test_stls_then_user_pass_and_byte_exact_retr(pop3: Pop3Env) -> None:
    contents = [message(n) for n in range(3)]
    for c in contents:
        pop3.deliver(c)
    client = pop3.plain(login=True)
    assert client.stat() == (3, sum(len(c) for c in contents))
    _, listing, _ = client.list()
    assert listing == [f"{n} {len(c)}".encode() for n, c in enumerate(contents, 1)]
    for n, c in enumerate(contents, 1):
        resp, lines, _ = client.retr(n)
        assert resp == f"+OK {len(c)} octets".encode()
        assert retrieved(lines) == c
    client.quit()


def test_implicit_tls_login_uidl_and_top(pop3: Pop3Env) -> None:
    uids = [pop3.deliver(message(n)) for n in range(2)]
    uidvalidity = pop3.maildrop().uidvalidity
    client = pop3.tls()
    _, listing, _ = client.uidl()
    assert listing == [f"{n} {uidvalidity}.{uid}".encode() for n, uid in enumerate(uids, 1)]
    assert client.uidl(2) == f"+OK 2 {uidvalidity}.{uids[1]}".encode()
    _, lines, _ = client.top(1, 2)
    header, _, rest = retrieved(lines).partition(b"\r\n\r\n")
    assert header.startswith(b"From: sender@example.net")
    assert rest == b"Hello\r\n.leading dot\r\n"
    client.quit()


def test_auth_plain_with_initial_response(pop3: Pop3Env) -> None:
    pop3.deliver(message(1))
    client = pop3.tls(login=False)
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert client._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK maildrop has 1 messages")
    assert client.stat()[0] == 1
    client.quit()


def test_auth_plain_wrong_password_and_unknown_user_look_alike(pop3: Pop3Env) -> None:
    client = pop3.tls(login=False)
    answers = []
    for user, password in ((ALICE, "wrong"), ("nobody@example.com", PASSWORD)):
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        with pytest.raises(poplib.error_proto) as info:
            client._shortcmd(f"AUTH PLAIN {token}")
        answers.append(info.value.args[0])
    assert answers == [b"-ERR [AUTH] Authentication failed"] * 2
    client.close()


def scram_proof(password: str, client_first_bare: str, server_first: str,
                without_proof: str) -> tuple[str, bytes]:
    """RFC 5802 §3 client computations: (base64 ClientProof, expected ServerSignature)."""
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return (base64.b64encode(proof).decode(),
            hmac.digest(server_key, auth_message, "sha256"))


def test_auth_scram_sha_256_on_the_plain_port_without_tls(pop3: Pop3Env) -> None:
    """SCRAM never reveals the password, so it is offered before STLS (RFC 5034 §4); the
    server's final message comes as a "+" challenge that the client answers empty."""
    pop3.deliver(message(1))
    client = pop3.plain()
    first_bare = f"n={ALICE},r=clientnonce123"
    resp = client._shortcmd("AUTH SCRAM-SHA-256 " + base64.b64encode(
        ("n,," + first_bare).encode()).decode())
    assert resp.startswith(b"+ ")
    server_first = base64.b64decode(resp[2:]).decode()
    nonce = dict(a.split("=", 1) for a in server_first.split(","))["r"]
    without_proof = f"c=biws,r={nonce}"
    proof, expected = scram_proof(PASSWORD, first_bare, server_first, without_proof)
    resp = client._shortcmd(base64.b64encode(f"{without_proof},p={proof}".encode()).decode())
    assert resp.startswith(b"+ ")
    assert base64.b64decode(resp[2:]) == b"v=" + base64.b64encode(expected)
    assert client._shortcmd("").startswith(b"+OK maildrop has 1 messages")
    assert client.stat()[0] == 1
    client.quit()


def test_shutdown_closes_idle_sessions_with_a_temporary_error(tmp_path: Path) -> None:
    env = start_env(tmp_path)
    try:
        env.deliver(message(1))
        client = env.tls()
        client.dele(1)
        env.call(env.server.shutdown())
        assert client.file.readline() == b"-ERR [SYS/TEMP] Server shutting down\r\n"
        assert len(env.rows()) == 1  # no QUIT, no UPDATE
    finally:
        stop_env(env)


def test_uidl_is_stable_across_sessions(pop3: Pop3Env) -> None:
    for n in range(3):
        pop3.deliver(message(n))
    first = pop3.tls()
    before = first.uidl()[1]
    first.dele(2)
    first.quit()
    pop3.deliver(message(9))
    second = pop3.tls()
    after = second.uidl()[1]
    second.quit()
    ids_before = [line.split()[1] for line in before]
    ids_after = [line.split()[1] for line in after]
    assert ids_after[:2] == [ids_before[0], ids_before[2]]
    assert len(ids_after) == 3 and ids_after[2] not in ids_before


# --- deletion semantics (RFC 1939 §6) ---------------------------------------------------------


def test_dele_and_quit_removes_rows_and_files_durably(pop3: Pop3Env) -> None:
    contents = [message(n) for n in range(3)]
    uids = [pop3.deliver(c) for c in contents]
    modseq = pop3.highestmodseq()
    client = pop3.tls()
    client.dele(1)
    client.dele(3)
    assert client.stat() == (1, len(contents[1]))
    assert [r.uid for r in pop3.rows()] == uids  # nothing happens before QUIT
    assert client.quit() == b"+OK Kittiwake POP3 server signing off"
    assert [r.uid for r in pop3.rows()] == [uids[1]]
    assert len(pop3.files()) == 1
    assert pop3.files()[0].read_bytes() == contents[1]
    # An IMAP session sees the removal as an expunge: HIGHESTMODSEQ moved on.
    assert pop3.highestmodseq() > modseq
    account = pop3.directory.account(ALICE)
    assert account is not None and account.used_bytes == len(contents[1])


def test_dele_then_rset_keeps_everything(pop3: Pop3Env) -> None:
    uids = [pop3.deliver(message(n)) for n in range(2)]
    client = pop3.tls()
    client.dele(1)
    client.dele(2)
    assert client.rset().startswith(b"+OK maildrop has 2 messages")
    client.quit()
    assert [r.uid for r in pop3.rows()] == uids
    assert len(pop3.files()) == 2


def test_dropped_connection_deletes_nothing(pop3: Pop3Env) -> None:
    uids = [pop3.deliver(message(n)) for n in range(2)]
    client = pop3.tls()
    client.dele(1)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.sock.close()
    again = login_when_free(pop3)
    assert again.stat()[0] == 2
    again.quit()
    assert [r.uid for r in pop3.rows()] == uids


def test_second_session_gets_in_use_until_the_first_ends(pop3: Pop3Env) -> None:
    pop3.deliver(message(1))
    first = pop3.tls()
    second = pop3.tls(login=False)
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[IN-USE\]"):
        second.pass_(PASSWORD)
    other = pop3.tls(user=BOB)  # another account's maildrop is not affected
    other.quit()
    first.quit()
    second.user(ALICE)
    assert second.pass_(PASSWORD).startswith(b"+OK")
    second.quit()


LOCKER = """
import sys, time
from pathlib import Path
from kittiwake.store.pop3ops import lock_maildrop
lock = lock_maildrop(Path(sys.argv[1]), sys.argv[2])
print("locked" if lock else "busy", flush=True)
sys.stdin.read()
"""


def test_lock_holds_across_processes(pop3: Pop3Env) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(pop3.root / "mail"), ALICE],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        client = pop3.tls(login=False)
        client.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"IN-USE"):
            client.pass_(PASSWORD)
        client.close()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    login_when_free(pop3).quit()  # the kernel released the dead holder's lock


def test_retr_of_message_expunged_elsewhere_is_an_error_not_a_crash(pop3: Pop3Env) -> None:
    uids = [pop3.deliver(message(n)) for n in range(2)]
    client = pop3.tls()
    pop3.call(pop3.store.expunge(ALICE, "INBOX", [uids[0]]))  # e.g. an IMAP EXPUNGE
    with pytest.raises(poplib.error_proto, match="removed by another session"):
        client.retr(1)
    assert retrieved(client.retr(2)[1]) == pop3.call(
        pop3.store.read_message(ALICE, "INBOX", uids[1]))
    client.dele(1)
    client.quit()
    assert [r.uid for r in pop3.rows()] == [uids[1]]


# --- failures, limits and timeouts ---------------------------------------------------------------


class FailingExpunge:
    """The real store, except that deletion fails (disk error)."""

    def __init__(self, store: MailStore) -> None:
        self._store = store

    async def lock_maildrop(self, account: str) -> MaildropLock | None:
        return await self._store.lock_maildrop(account)

    async def maildrop(self, account: str, mailbox: str = "INBOX") -> Maildrop:
        return await self._store.maildrop(account, mailbox)

    async def read_message(self, account: str, mailbox: str, uid: int) -> bytes:
        return await self._store.read_message(account, mailbox, uid)

    async def expunge(self, account: str, mailbox: str, uids: Sequence[int]) -> list[int]:
        raise OSError("disk on fire")


def test_failed_update_is_a_temporary_error_and_keeps_mail(pop3: Pop3Env) -> None:
    uids = [pop3.deliver(message(1))]
    pop3.server.store = FailingExpunge(pop3.store)
    client = pop3.tls()
    client.dele(1)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        client.quit()
    assert [r.uid for r in pop3.rows()] == uids
    login_when_free(pop3).quit()  # the lock was released


def test_failed_logins_are_throttled(tmp_path: Path) -> None:
    throttle = AuthThrottle(max_failures_per_ip=3, max_failures_per_account=3, base_delay=0,
                            max_delay=0)
    env = start_env(tmp_path, throttle=throttle)
    try:
        for _ in range(3):
            client = env.tls(login=False)
            client.user(ALICE)
            with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
                client.pass_("wrong")
            client.close()
        client = env.tls(login=False)
        client.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"\[LOGIN-DELAY\]"):
            client.pass_(PASSWORD)  # even the right password waits out the lockout
        client.close()
    finally:
        stop_env(env)


def test_autologout_closes_idle_sessions_without_update(tmp_path: Path) -> None:
    env = start_env(tmp_path, idle_timeout=0.3)
    try:
        env.deliver(message(1))
        client = env.tls()
        client.dele(1)
        time.sleep(0.8)
        assert client.file.readline() == b"-ERR Autologout; idle for too long\r\n"
        assert client.file.readline() == b""
        assert len(env.rows()) == 1
        login_when_free(env).quit()
    finally:
        stop_env(env)


def test_connections_per_address_are_limited(tmp_path: Path) -> None:
    env = start_env(tmp_path, max_connections_per_ip=2)
    try:
        a, b = env.tls(login=False), env.tls(login=False)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] Too many connections"):
            env.tls(login=False)
        a.quit()
        time.sleep(0.1)
        env.tls(login=False).quit()
        b.quit()
    finally:
        stop_env(env)


def test_over_long_command_line_is_refused_and_the_session_goes_on(pop3: Pop3Env) -> None:
    with socket.create_connection(("127.0.0.1", pop3.ports["pop3"]), timeout=10) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"+OK")
        sock.sendall(b"NOOP " + b"x" * 100_000 + b"\r\nCAPA\r\n")
        assert f.readline() == b"-ERR Line too long\r\n"
        assert f.readline() == b"+OK Capability list follows\r\n"


def test_pipelined_retrieval_of_large_messages_honours_flow_control(pop3: Pop3Env) -> None:
    big = [message(n, (b"y" * 998 + b"\r\n") * 2000) for n in range(4)]  # ~2 MB each
    for c in big:
        pop3.deliver(c)
    client = pop3.tls()
    # Send every RETR at once, read nothing for a while, then read it all.
    client.sock.sendall(b"".join(f"RETR {n}\r\n".encode() for n in range(1, 5)))
    time.sleep(0.3)
    for c in big:
        assert client._getresp().startswith(b"+OK")
        lines = []
        while (line := client.file.readline()) != b".\r\n":
            lines.append(line[1:] if line.startswith(b"..") else line)
        assert b"".join(lines) == c
    client.quit()


def test_pipelined_listings_from_a_client_that_reads_late(pop3: Pop3Env) -> None:
    """Answers the core produces by itself also wait for the client to read (flow control):
    600 pipelined UIDLs of 500 messages are ~10 MB the client only reads afterwards."""
    pop3.call(pop3.store.deliver_many(
        [DeliveryRequest(ALICE, message(n)) for n in range(500)]))
    client = pop3.tls()
    _, expected, _ = client.uidl()
    client.sock.sendall(b"UIDL\r\n" * 600 + b"NOOP\r\n")
    time.sleep(0.3)
    for _ in range(600):
        assert client._getresp() == b"+OK Unique-id listing follows"
        lines = []
        while (line := client.file.readline()) != b".\r\n":
            lines.append(line.rstrip(b"\r\n"))
        assert lines == expected
    assert client._getresp() == b"+OK"
    client.quit()
