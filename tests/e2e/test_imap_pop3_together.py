"""POP3 and IMAP on one INBOX while mail arrives (issue 6): nothing lost, nothing duplicated,
sizes and UIDLs stable, POP3 deletions seen by IMAP as expunges; and the quota (issue 5)
refusing delivery with 452 4.2.2 once an account is full."""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import ssl
import threading
import time

PASSWORD = "correct horse battery"


def _ctx(srv) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(srv.cert))
    ctx.check_hostname = False
    return ctx


def _imap(srv) -> imaplib.IMAP4:
    m = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=20)
    m.starttls(ssl_context=_ctx(srv))
    m.login("alice@example.test", PASSWORD)
    return m


def _pop(srv) -> poplib.POP3_SSL:
    p = poplib.POP3_SSL(srv.host, srv.ports["pop3s"], context=_ctx(srv), timeout=20)
    p.user("alice@example.test")
    p.pass_(PASSWORD)
    return p


def _send(srv, markers: list[str]) -> None:
    with smtplib.SMTP(srv.host, srv.smtp, timeout=20) as c:
        for marker in markers:
            c.sendmail("x@remote.test", ["alice@example.test"],
                       f"Subject: {marker}\r\nMessage-ID: <{marker}@remote.test>\r\n\r\n"
                       f"body of {marker}\r\n".encode())
            time.sleep(0.01)


def _uid_subjects(m: imaplib.IMAP4) -> dict[int, str]:
    typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    out = {}
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            out[uid] = item[1].decode().split(":", 1)[1].strip()
    return out


def test_pop3_and_imap_share_an_inbox_while_mail_arrives(make_server):
    srv = make_server(kinds=("smtp", "imap", "pop3s"))
    first = [f"m{i:02d}" for i in range(20)]
    _send(srv, first)
    imap = _imap(srv)
    assert imap.select("INBOX")[0] == "OK"
    before = _uid_subjects(imap)
    assert sorted(before.values()) == first

    more = [f"n{i:02d}" for i in range(20)]
    sender = threading.Thread(target=_send, args=(srv, more))
    sender.start()
    pop = _pop(srv)
    count, size = pop.stat()
    listing = {int(n): int(s) for n, s in (x.split() for x in pop.list()[1])}
    uidls = {int(n): u for n, u in (x.split() for x in pop.uidl()[1])}
    assert len(listing) == count and sum(listing.values()) == size
    retrieved = {}
    for n in listing:
        lines = pop.retr(n)[1]
        body = b"\r\n".join(lines) + b"\r\n"
        assert len(body) == listing[n]  # LIST's size is exactly what RETR gives
        retrieved[n] = body
    # Delete the first five of the snapshot; they go at QUIT.
    for n in range(1, 6):
        pop.dele(n)
    pop.quit()
    sender.join(timeout=60)

    # IMAP learns of the expunges (RFC 9051 §7.5.1) and of the new mail.
    typ, _ = imap.noop()
    assert typ == "OK"
    after = _uid_subjects(imap)
    deleted = {m for n, m in enumerate(sorted(before.values()), 1) if n <= 5}
    assert set(after.values()) == (set(first) - deleted) | set(more)
    assert len(after) == len(set(after.values()))  # nothing duplicated
    for uid, subject in before.items():  # UIDs never change or get reused
        if subject not in deleted:
            assert after[uid] == subject
    imap.logout()

    # A second POP3 session: the remaining messages keep their UIDL, in every session.
    pop2 = _pop(srv)
    uidls2 = {u for _, u in (x.split() for x in pop2.uidl()[1])}
    kept = {u for n, u in uidls.items() if n > 5}
    assert kept <= uidls2
    assert not ({u for n, u in uidls.items() if n <= 5} & uidls2)
    assert len(uidls2) == len(first) - 5 + len(more)
    pop2.quit()


def test_second_pop3_session_gets_in_use_while_imap_works_on(make_server):
    srv = make_server(kinds=("smtp", "imap", "pop3s"))
    _send(srv, ["only"])
    pop = _pop(srv)
    try:
        other = poplib.POP3_SSL(srv.host, srv.ports["pop3s"], context=_ctx(srv), timeout=20)
        other.user("alice@example.test")
        try:
            other.pass_(PASSWORD)
            raise AssertionError("second session got the maildrop")
        except poplib.error_proto as e:
            assert b"[IN-USE]" in e.args[0]
        imap = _imap(srv)
        assert imap.select("INBOX")[1] == [b"1"]
        imap.logout()
    finally:
        pop.quit()


def test_full_mailbox_gets_452_at_rcpt(make_server):
    srv = make_server(kinds=("smtp",), sections={"imap": {"quota": 6000}})
    big = b"Subject: big\r\n\r\n" + (b"z" * 98 + b"\r\n") * 45  # ~4.5 KB
    with smtplib.SMTP(srv.host, srv.smtp, timeout=20) as c:
        c.sendmail("x@remote.test", ["alice@example.test"], big)  # fits: 0 + 4.5 KB < 6 KB
    time.sleep(5.5)  # the recipient check may use a usage figure up to 5 s old
    with smtplib.SMTP(srv.host, srv.smtp, timeout=20) as c:
        c.ehlo("c")
        c.mail("x@remote.test", [f"SIZE={len(big)}"])  # 4.5 KB used + 4.5 KB > 6 KB
        code, reply = c.rcpt("alice@example.test")
        assert code == 452 and reply.startswith(b"4.2.2"), (code, reply)
        code, _ = c.rcpt("bob@example.test")  # others are not affected
        assert code == 250
