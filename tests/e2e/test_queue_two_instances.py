"""The durable outbound queue between two Kittiwake servers (issue 3): mail for a b.test that
is down waits in a.test's queue, `kittiwake queue list` says why, and it is delivered when
b.test returns; after kill -9 of a.test with mail queued, every message arrives exactly once.

Retries are fast because the pair's config says so ([queue] minimal_backoff = 1 s,
maximal_backoff = 2 s, poll_interval = 0.5 s).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from conftest import (
    PASSWORD,
    MailPair,
    NamedSMTP_SSL,
    Server,
    submit,
    trusting,
    wait_mail,
    wait_until,
)

ALICE, BOB = "alice@a.test", "bob@b.test"


def message(marker: str, n: int = 0) -> bytes:
    return (f"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: {marker}\r\n"
            f"Message-ID: <{marker}-{n}@a.test>\r\n\r\nmessage {n} of {marker}\r\n").encode()


def queue_list(srv: Server) -> str:
    return srv.cli("queue", "list").stdout


@contextmanager
def b_down(pair: MailPair) -> Iterator[None]:
    """b.test stopped for the block; running again afterwards, whatever happens."""
    pair.b.stop()
    try:
        yield
    finally:
        if pair.b.proc is None:
            pair.b.start()


def test_mail_waits_in_the_queue_while_b_is_down_and_goes_when_it_returns(
        mail_pair: MailPair) -> None:
    a, b = mail_pair.a, mail_pair.b
    with b_down(mail_pair):
        queue_id = submit(a, message("while-down"), [BOB])

        def deferred() -> str | None:
            out = queue_list(a)
            return out if re.search(r"queued +<bob@b\.test> attempts=[1-9]", out) else None

        listing = wait_until(deferred, 15, "a deferred attempt in `queue list`")
        assert isinstance(listing, str) and queue_id in listing
        # The last reply is there for the administrator: b.test refused the connection.
        assert re.search(r'last="451 4\.4\.1 [^"]*mx\.b\.test\[127\.0\.0\.3\]:25', listing), \
            listing
        assert not [m for m in b.messages(BOB) if b"Subject: while-down" in m]
        shown = a.cli("queue", "show", queue_id).stdout
        assert "host=mx.b.test" in shown
    # b.test is back: the next retry (at most maximal_backoff later) delivers.
    [stored] = wait_mail(b, BOB, b"Subject: while-down", timeout=20)
    assert stored.endswith(b"\r\n\r\nmessage 0 of while-down\r\n")
    wait_until(lambda: queue_id not in queue_list(a), 10, "the queue to forget the message")


def test_kill9_with_mail_queued_delivers_each_message_exactly_once(mail_pair: MailPair) -> None:
    a, b = mail_pair.a, mail_pair.b
    n = 12
    with b_down(mail_pair):
        with NamedSMTP_SSL(a.host, a.ports["submissions"], a.hostname,
                           context=trusting(a.cert), timeout=20) as c:
            c.login(ALICE, PASSWORD)
            for i in range(n):
                c.sendmail(ALICE, [BOB], message("crash", i))

        def all_tried() -> bool:
            out = queue_list(a)
            return len(re.findall(r"queued +<bob@b\.test> attempts=[1-9]", out)) == n

        wait_until(all_tried, 15, f"{n} deferred messages in the queue")
        a.kill9()  # no shutdown at all: the spool must carry everything over
        a.start()
        assert f"-- {n} message(s) in the queue" in queue_list(a)
    # b.test is back (b_down restarted it); a.test recovers and delivers.
    wait_mail(b, BOB, b"Subject: crash", count=n, timeout=30)
    wait_until(lambda: "-- 0 message(s)" in queue_list(a), 15, "a.test's queue to drain")
    ids = Counter(mid for m in b.messages(BOB) if b"Subject: crash" in m
                  for mid in re.findall(rb"\r\nMessage-ID: (<crash-\d+@a\.test>)", m))
    assert ids == Counter({f"<crash-{i}@a.test>".encode(): 1 for i in range(n)}), ids
    assert "event=queue_recovered" in a.log()

