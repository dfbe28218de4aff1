"""Two sessions on one mailbox, over real sockets with imaplib (RFC 9051 §7.5.1; RFC 2177):
a message delivered over SMTP while one session IDLEs shows up there within a second; a flag
set in one appears in the other; an expunge in one is reported correctly in the other,
without renumbering messages under its feet."""

from __future__ import annotations

import imaplib
import smtplib
import time
from collections.abc import Iterator

import pytest
from test_imap_server import ALICE, ImapEnv, imap_env, message

from kittiwake.inbound import InboundBackend, InboundSettings
from kittiwake.smtp.server import ServerSettings
from kittiwake.smtpserver.server import ListenerSpec, SmtpServer, SmtpServerSettings

__all__ = ["imap_env"]


class Idler:
    """An imaplib session in IDLE, reading untagged responses with a deadline."""

    def __init__(self, client: imaplib.IMAP4) -> None:
        self.client = client
        self.tag = client._new_tag().decode()
        client.send(f"{self.tag} IDLE\r\n".encode())
        assert client.readline().startswith(b"+")

    def expect(self, wanted: bytes, within: float = 1.0) -> float:
        """Read lines until `wanted`; return how long it took."""
        start = time.monotonic()
        sock = self.client.socket()
        seen = []
        while True:
            left = within - (time.monotonic() - start)
            if left <= 0:
                raise AssertionError(f"{wanted!r} not seen within {within}s; got {seen!r}")
            sock.settimeout(left)
            try:
                line = self.client.readline()
            except TimeoutError:
                continue
            seen.append(line)
            if line.strip() == wanted:
                return time.monotonic() - start

    def done(self) -> None:
        self.client.socket().settimeout(10)
        self.client.send(b"DONE\r\n")
        while True:
            line = self.client.readline()
            if line.startswith(self.tag.encode()):
                assert b" OK " in line
                return


@pytest.fixture
def smtp_port(imap_env: ImapEnv) -> Iterator[int]:
    """Kittiwake's own SMTP listener in the same process, delivering to the same store."""
    backend = InboundBackend(InboundSettings(hostname="mx.test"), imap_env.directory,
                             imap_env.store)
    server = SmtpServer(SmtpServerSettings(core=ServerSettings(hostname="mx.test")),
                        [ListenerSpec("smtp", "127.0.0.1", 0, "starttls")], backend, None)
    imap_env.call(server.start())
    try:
        yield server.bound_ports()[0]
    finally:
        imap_env.call(server.shutdown())


def test_delivery_over_smtp_reaches_an_idle_session_within_a_second(
        imap_env: ImapEnv, smtp_port: int) -> None:
    imap_env.deliver(message(1))
    watcher = imap_env.tls()
    watcher.select("INBOX")
    idle = Idler(watcher)
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        smtp.sendmail("bob@example.net", [ALICE], message(2))
    assert idle.expect(b"* 2 EXISTS") < 1.0
    idle.done()
    _typ, data = watcher.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: message 2" in data[0][1]
    watcher.logout()


def test_flag_set_in_one_session_appears_in_the_other(imap_env: ImapEnv) -> None:
    for n in (1, 2):
        imap_env.deliver(message(n))
    a, b = imap_env.tls(), imap_env.tls()
    a.select("INBOX")
    b.select("INBOX")
    idle = Idler(b)
    a.store("2", "+FLAGS", r"(\Flagged)")
    assert idle.expect(rb"* 2 FETCH (FLAGS (\Flagged))") < 1.0
    idle.done()
    # Without IDLE: the next command's responses carry it (here NOOP).
    a.store("1", "+FLAGS", r"(\Answered)")
    _typ, _data = b.noop()
    assert b.untagged_responses.get("FETCH") == [b"1 (FLAGS (\\Answered))"]
    a.logout()
    b.logout()


def test_expunge_in_one_session_is_reported_correctly_in_the_other(imap_env: ImapEnv) -> None:
    for n in range(1, 6):
        imap_env.deliver(message(n))
    a, b, c = imap_env.tls(), imap_env.tls(), imap_env.tls()
    for s in (a, b, c):
        s.select("INBOX")
    idle = Idler(c)
    a.store("2,4", "+FLAGS.SILENT", r"(\Deleted)")
    a.expunge()
    # The IDLE session hears both, highest first, so each number is valid when read.
    idle.expect(b"* 4 EXPUNGE")
    idle.expect(b"* 2 EXPUNGE")
    idle.done()
    # A session busy with FETCH keeps its numbers until a command that may renumber.
    typ, data = b.fetch("5", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"Subject: message 5" in data[0][1]
    assert "EXPUNGE" not in b.untagged_responses
    typ, data = b.fetch("3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: message 3" in data[0][1]  # 3 is still message 3 for b
    b.noop()
    assert sorted(b.untagged_responses.get("EXPUNGE", [])) == [b"2", b"4"]
    typ, data = b.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: message 3" in data[0][1]  # now renumbered, after it was told
    typ, data = b.search(None, "ALL")
    assert data == [b"1 2 3"]
    for s in (a, b, c):
        s.logout()
