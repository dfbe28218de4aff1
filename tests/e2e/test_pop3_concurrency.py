"""A POP3 session while mail keeps arriving and another (IMAP-like) reader works on the same
INBOX through the store: nothing lost, nothing duplicated, sizes and UIDLs stable.

There is no IMAP server yet; the "IMAP session" here is what one does to the store: list
the mailbox (SELECT), read messages (FETCH) and expunge (EXPUNGE).
"""

from __future__ import annotations

import concurrent.futures
import poplib
import re
import threading
import time

from test_pop3_poplib import ALICE, Pop3Env, login_when_free, message, pop3, retrieved

__all__ = ["pop3"]  # the fixture, imported for pytest


def message_id(content: bytes) -> bytes:
    found = re.search(rb"Message-ID: (<[^>]+>)", content)
    assert found is not None
    return found.group(1)


def test_pop3_session_during_deliveries_and_imap_expunge(pop3: Pop3Env) -> None:
    delivered: dict[int, bytes] = {}
    for n in range(6):
        c = message(n)
        delivered[pop3.deliver(c)] = c

    client = pop3.tls()
    _, snapshot_list, _ = client.list()
    _, snapshot_uidl, _ = client.uidl()
    assert len(snapshot_list) == 6

    # Mail arrives from 8 concurrent senders while the POP3 session works.
    later = [message(100 + n, b"x" * (n * 37) + b"\r\n") for n in range(40)]
    lock = threading.Lock()

    def send(content: bytes) -> None:
        uid = pop3.deliver(content)
        with lock:
            assert uid not in delivered
            delivered[uid] = content

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, c) for c in later]
        # The IMAP side expunges message 2 of the POP3 snapshot meanwhile.
        gone_uid = sorted(delivered)[1]
        pop3.call(pop3.store.expunge(ALICE, "INBOX", [gone_uid]))
        for _ in range(5):
            # RFC 1939: the maildrop is the snapshot taken at login, whatever arrives.
            assert client.list()[1] == snapshot_list
            assert client.uidl()[1] == snapshot_uidl
            for number in (1, 3, 4, 5, 6):
                uid = sorted(delivered)[number - 1]
                assert retrieved(client.retr(number)[1]) == delivered[uid]
            try:
                client.retr(2)
            except poplib.error_proto as e:
                assert b"removed by another session" in e.args[0]
            else:
                raise AssertionError("RETR of an expunged message succeeded")
        for number in range(1, 7):
            client.dele(number)
        client.quit()  # the UPDATE runs while deliveries may still be committing
        for f in futures:
            f.result()

    first_six = sorted(delivered)[:6]
    rows = pop3.rows()
    uids = [r.uid for r in rows]
    assert len(uids) == len(set(uids)) == 40
    assert set(uids) == set(delivered) - set(first_six)
    ids = [message_id(pop3.call(pop3.store.read_message(ALICE, "INBOX", u))) for u in uids]
    assert sorted(ids) == sorted(message_id(c) for c in later)  # none lost, none twice
    assert all(r.size == len(delivered[r.uid]) for r in rows)
    assert len(pop3.files()) == 40

    # The next sessions see exactly the new mail, with the same UIDLs and sizes each time.
    validity = pop3.maildrop().uidvalidity
    expected_uidl = [f"{n} {validity}.{u}".encode() for n, u in enumerate(uids, 1)]
    expected_list = [f"{n} {len(delivered[u])}".encode() for n, u in enumerate(uids, 1)]
    for _ in range(2):
        again = login_when_free(pop3)
        assert again.uidl()[1] == expected_uidl
        assert again.list()[1] == expected_list
        for n, u in enumerate(uids, 1):
            assert retrieved(again.retr(n)[1]) == delivered[u]
        again.quit()


def test_deletions_racing_deliveries_lose_nothing(pop3: Pop3Env) -> None:
    """Several POP3 sessions in a row each delete what they saw, while deliveries continue:
    every message is downloaded exactly once and the mailbox ends empty."""
    sent: list[bytes] = []
    stop = threading.Event()

    def sender() -> None:
        n = 0
        while not stop.is_set() and n < 60:
            c = message(1000 + n)
            pop3.deliver(c)
            sent.append(c)
            n += 1
            time.sleep(0.002)

    thread = threading.Thread(target=sender)
    thread.start()
    downloaded: list[bytes] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            client = login_when_free(pop3)
            count, _ = client.stat()
            for number in range(1, count + 1):
                downloaded.append(retrieved(client.retr(number)[1]))
                client.dele(number)
            client.quit()
            if not thread.is_alive() and count == 0:
                break
    finally:
        stop.set()
        thread.join()
    assert sorted(message_id(c) for c in downloaded) == sorted(message_id(c) for c in sent)
    assert sorted(downloaded) == sorted(sent)
    assert pop3.rows() == [] and pop3.files() == []
