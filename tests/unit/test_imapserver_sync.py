"""Several sessions on one mailbox (RFC 9051 §7.5.1), IDLE (RFC 2177), CONDSTORE and
QRESYNC (RFC 7162), and the view's numbering rules."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from pathlib import Path

import pytest
from test_imapserver_wire import Env, message, run

from kittiwake.imap.types import SequenceSet
from kittiwake.imapserver.selected import BadSequence, SelectedMailbox
from kittiwake.store.imaptypes import Changes, MailboxHandle, MessageState, Snapshot


def view(uids: list[int], uidnext: int = 10) -> SelectedMailbox:
    snap = Snapshot(MailboxHandle(1, "a@b", "INBOX", 7), uidnext, 5, list(uids), frozenset())
    return SelectedMailbox(snap, read_only=False)


def test_view_holds_expunges_until_allowed_and_reports_highest_first() -> None:
    v = view([2, 4, 6, 8])
    v.apply(Changes(7, 11, (MessageState(10, frozenset({"\\Seen"}), 7),
                            MessageState(6, frozenset({"\\Flagged"}), 6)), (4, 8, 99)))
    held = [d.payload for d in v.flush(expunges_allowed=False, qresync=False, with_uid=False)]
    assert held == [b"5 EXISTS", b"3 FETCH (FLAGS (\\Flagged))"]
    assert v.uids == [2, 4, 6, 8, 10]  # numbers unchanged while held
    out = [d.payload for d in v.flush(expunges_allowed=True, qresync=False, with_uid=False)]
    assert out == [b"4 EXPUNGE", b"2 EXPUNGE"]
    assert v.uids == [2, 6, 10] and v.seq_of(10) == 3
    v.apply(Changes(8, 11, (), (2,)))
    assert [d.payload for d in v.flush(expunges_allowed=True, qresync=True, with_uid=True)] == [
        b"VANISHED 2"]


def test_view_resolves_sequence_and_uid_sets() -> None:
    v = view([3, 5, 9])
    assert v.resolve(SequenceSet(((2, 0),)), uid=False) == [5, 9]  # 2:*
    assert v.resolve(SequenceSet(((4, 100),)), uid=True) == [5, 9]
    assert v.resolve(SequenceSet(((0, 0),)), uid=True) == [9]  # UID *
    try:
        v.resolve(SequenceSet(((4, 4),)), uid=False)
    except BadSequence:
        pass
    else:
        raise AssertionError("message 4 does not exist")
    assert view([]).resolve(SequenceSet(((1, 0),)), uid=True) == []


def test_own_store_is_not_echoed_by_the_next_poll() -> None:
    v = view([1])
    v.own_flags([MessageState(1, frozenset({"\\Seen"}), 6)])
    v.apply(Changes(6, 10, (MessageState(1, frozenset({"\\Seen"}), 6),), ()))
    assert v.flush(expunges_allowed=True, qresync=False, with_uid=False) == []
    # A later change by someone else is reported.
    v.apply(Changes(7, 10, (MessageState(1, frozenset({"\\Seen", "$X"}), 7),), ()))
    assert [d.payload for d in v.flush(expunges_allowed=True, qresync=False,
                                       with_uid=False)] == [
        b"FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $X)",
        b"1 FETCH (FLAGS (\\Seen $X))"]


# ---------------------------------------------------------------------------- sessions


def test_expunge_elsewhere_not_reported_during_fetch_but_at_noop(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        for n in (1, 2, 3):
            await env.deliver(message(n))
        a, b = await env.connect(), await env.connect()
        for c in (a, b):
            await c.login()
            await c.cmd("SELECT INBOX")
        await a.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
        assert b"* 2 EXPUNGE" in await a.cmd("EXPUNGE")
        out = await b.cmd("FETCH 1:3 (FLAGS)")  # B still numbers 1:3
        assert b"EXPUNGE\r\n" not in out
        assert b"* 2 FETCH" not in out and b"NO [EXPUNGEISSUED]" in out
        out = await b.cmd("SEARCH ALL")
        assert b"EXPUNGE\r\n" not in out and b"* SEARCH 1 3\r\n" in out
        out = await b.cmd("NOOP")
        assert b"* 2 EXPUNGE" in out
        assert b"* SEARCH 1 2" in await b.cmd("SEARCH ALL")

    run(tmp_path, go)


def test_uid_fetch_may_report_expunge_and_flags_propagate(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        for n in (1, 2):
            await env.deliver(message(n))
        a, b = await env.connect(), await env.connect()
        for c in (a, b):
            await c.login()
            await c.cmd("SELECT INBOX")
        await a.cmd("STORE 1 +FLAGS (\\Flagged)")
        out = await b.cmd("NOOP")
        assert b"* 1 FETCH (FLAGS (\\Flagged))" in out
        await a.cmd("STORE 2 +FLAGS (\\Deleted)")
        await a.cmd("EXPUNGE")
        out = await b.cmd("UID FETCH 1 (FLAGS)")
        assert b"* 2 EXPUNGE" in out

    run(tmp_path, go)


def test_idle_hears_delivery_flag_change_and_expunge_promptly(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        await env.deliver(message(1))
        a, b = await env.connect(), await env.connect()
        for c in (a, b):
            await c.login()
            await c.cmd("SELECT INBOX")
        b.feed(b"i1 IDLE\r\n")
        await b.read_until(rb"^\+ [^\r\n]*\r\n")
        start = time.monotonic()
        await env.deliver(message(2))
        await b.read_until(rb"^\* 2 EXISTS\r\n", timeout=1.0)
        assert time.monotonic() - start < 1.0
        await a.cmd("STORE 1 +FLAGS (\\Seen)")
        await b.read_until(rb"^\* 1 FETCH \(FLAGS \(\\Seen\)\)\r\n", timeout=1.0)
        await a.cmd("STORE 1 +FLAGS (\\Deleted)")
        await a.cmd("EXPUNGE")
        await b.read_until(rb"^\* 1 EXPUNGE\r\n", timeout=1.0)
        b.feed(b"DONE\r\n")
        await b.read_until(rb"^i1 OK[^\r\n]*\r\n")
        assert b"* 1 EXISTS" in await b.cmd("SELECT INBOX")

    run(tmp_path, go)


def test_idle_sees_changes_from_another_process(tmp_path: Path) -> None:
    """A change the notifier never hears of (another process wrote the index) is found by
    the watcher's poll within the poll interval."""

    async def go(env: Env) -> None:
        await env.deliver(message(1))
        b = await env.connect()
        await b.login()
        await b.cmd("SELECT INBOX")
        env.server.start_background()  # the sweeper and the watcher
        b.feed(b"i1 IDLE\r\n")
        await b.read_until(rb"^\+ [^\r\n]*\r\n")

        def other_process() -> None:
            with sqlite3.connect(tmp_path / "kittiwake.db") as conn:
                conn.execute("UPDATE messages SET flags = '\\Answered', modseq = modseq + 100")
                conn.execute("UPDATE mailboxes SET highestmodseq = highestmodseq + 100")

        await asyncio.to_thread(other_process)
        await b.read_until(rb"^\* 1 FETCH \(FLAGS \(\\Answered\)\)\r\n", timeout=1.5)
        b.feed(b"DONE\r\n")
        await b.read_until(rb"^i1 OK[^\r\n]*\r\n")
        await env.server.shutdown()

    run(tmp_path, go, poll_interval=0.2)


def test_pipelined_idle_done_and_idle_without_selection(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        c.feed(b"i1 IDLE\r\nDONE\r\ni2 NOOP\r\n")
        out = await c.read_until(rb"^i2 OK[^\r\n]*\r\n")
        assert b"+ idling" in out and b"i1 OK" in out
        c.feed(b"i3 IDLE\r\n")
        await c.read_until(rb"^\+ [^\r\n]*\r\n")
        c.feed(b"NOPE\r\n")
        assert b"i3 BAD" in await c.read_until(rb"^i3 [^\r\n]*\r\n")

    run(tmp_path, go)


def test_condstore_changedsince_and_unsolicited_modseq(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        for n in (1, 2, 3):
            await env.deliver(message(n))
        a, b = await env.connect(), await env.connect()
        await a.login()
        await b.login()
        out = await a.cmd("SELECT INBOX (CONDSTORE)")
        high = int(re.search(rb"HIGHESTMODSEQ (\d+)", out).group(1))  # type: ignore[union-attr]
        await b.cmd("SELECT INBOX")
        await b.cmd("STORE 2 +FLAGS (\\Answered)")
        out = await a.cmd("NOOP")
        assert re.search(rb"\* 2 FETCH \(FLAGS \(\\Answered\) MODSEQ \(\d+\)\)", out)
        out = await a.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {high})")
        assert b"* 2 FETCH" in out and b"* 1 FETCH" not in out and b"MODSEQ" in out

    run(tmp_path, go)


def test_qresync_select_reports_vanished_and_changes(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        for n in (1, 2, 3, 4):
            await env.deliver(message(n))
        a = await env.connect()
        await a.login()
        await a.cmd("ENABLE QRESYNC")
        out = await a.cmd("SELECT INBOX")
        validity = int(re.search(rb"UIDVALIDITY (\d+)", out).group(1))  # type: ignore[union-attr]
        high = int(re.search(rb"HIGHESTMODSEQ (\d+)", out).group(1))  # type: ignore[union-attr]
        await a.cmd("STORE 2 +FLAGS (\\Deleted)")
        out = await a.cmd("EXPUNGE")
        assert b"* VANISHED 2\r\n" in out and b"HIGHESTMODSEQ" in out
        await a.cmd("UID STORE 3 +FLAGS (\\Seen)")
        await a.cmd("LOGOUT")
        b = await env.connect()
        await b.login()
        await b.cmd("ENABLE QRESYNC")
        out = await b.cmd(f"SELECT INBOX (QRESYNC ({validity} {high} 1:4))")
        assert b"* VANISHED (EARLIER) 2\r\n" in out
        assert re.search(rb"\* 2 FETCH \(UID 3 FLAGS \(\\Seen\) MODSEQ \(\d+\)\)", out)
        out = await b.cmd(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {high} VANISHED)")
        assert b"* VANISHED (EARLIER) 2\r\n" in out

    run(tmp_path, go)


def test_select_while_selected_sends_closed_and_rev2_list(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        await c.cmd("ENABLE IMAP4rev2")
        out = await c.cmd("SELECT INBOX")
        assert b"RECENT" not in out and b'* LIST () "/" INBOX' in out
        out = await c.cmd("EXAMINE Sent")
        assert b"* OK [CLOSED]" in out and b"[READ-ONLY]" in out
        assert b"PERMANENTFLAGS ()" in out

    run(tmp_path, go)


def test_deleting_the_selected_mailbox_elsewhere_ends_the_session(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        a, b = await env.connect(), await env.connect()
        for c in (a, b):
            await c.login()
        await a.cmd("CREATE Temp")
        await b.cmd("SELECT Temp")
        await a.cmd("DELETE Temp")
        b.feed(b"x NOOP\r\n")
        await b.read_until(rb"^\* BYE [^\r\n]*\r\n")

    run(tmp_path, go)


def test_renamed_selected_mailbox_keeps_working_by_id(tmp_path: Path) -> None:
    """A session's mailbox renamed by another session, and a new mailbox created under the
    old name: the session's EXPUNGE must touch its own messages only."""

    async def go(env: Env) -> None:
        a, b = await env.connect(), await env.connect()
        for c in (a, b):
            await c.login()
        await a.cmd("CREATE Old")
        for n in (1, 2):
            await env.deliver(message(n), mailbox="Old")
        await b.cmd("SELECT Old")
        await a.cmd("RENAME Old New")
        await a.cmd("CREATE Old")
        await env.deliver(message(9), mailbox="Old")
        await b.cmd("STORE 1 +FLAGS (\\Deleted)")
        assert b"* 1 EXPUNGE" in await b.cmd("EXPUNGE")
        body = await b.cmd("FETCH 1 BODY.PEEK[TEXT]")
        assert b"Hello world 2" in body  # read from the folder's new name
        assert b"MESSAGES 1)" in await a.cmd("STATUS New (MESSAGES)")
        assert b"MESSAGES 1)" in await a.cmd("STATUS Old (MESSAGES)")  # untouched

    run(tmp_path, go)


def test_deleting_own_selected_mailbox_leaves_a_dead_selection(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        await c.cmd("CREATE Temp")
        await env.deliver(message(1), mailbox="Temp")
        await c.cmd("SELECT Temp")
        assert b"OK" in await c.cmd("DELETE Temp")
        assert b" NO " in await c.cmd("FETCH 1 BODY.PEEK[]")
        assert b"OK" in await c.cmd("NOOP")
        assert b"OK" in await c.cmd("UNSELECT")
        assert b"* 0 EXISTS" in await c.cmd("SELECT INBOX")

    run(tmp_path, go)


def test_pruned_expunge_records_still_reach_every_session(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The expunge records (QRESYNC's memory) are bounded per mailbox; a session or client
    that last synced before the oldest one kept is told by comparing UIDs instead, so no
    expunge goes unreported and nothing present is reported gone."""
    from kittiwake.store import index

    monkeypatch.setattr(index, "EXPUNGED_KEEP", 1)

    async def go(env: Env) -> None:
        for n in range(1, 7):
            await env.deliver(message(n))
        a, b = await env.connect(), await env.connect()
        await a.login()
        await a.cmd("ENABLE QRESYNC")
        out = await a.cmd("SELECT INBOX")
        validity = int(re.search(rb"UIDVALIDITY (\d+)", out).group(1))  # type: ignore[union-attr]
        high = int(re.search(rb"HIGHESTMODSEQ (\d+)", out).group(1))  # type: ignore[union-attr]
        await b.login()
        await b.cmd("SELECT INBOX")
        for uid in (2, 3, 5):  # three expunges, three modseqs: two records pruned
            await b.cmd(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
            await b.cmd("EXPUNGE")
        out = await a.cmd("NOOP")
        assert _vanished(out) == {2, 3, 5}
        assert (await a.cmd("UID SEARCH ALL")).count(b"* SEARCH 1 4 6") == 1
        out = await a.cmd(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {high} VANISHED)")
        assert _vanished(out) == {2, 3, 5}
        c = await env.connect()
        await c.login()
        await c.cmd("ENABLE QRESYNC")
        out = await c.cmd(f"SELECT INBOX (QRESYNC ({validity} {high} 1:4))")
        assert _vanished(out) == {2, 3}  # within the UIDs the client said it knows
        out = await c.cmd("UNSELECT")
        out = await c.cmd(f"SELECT INBOX (QRESYNC ({validity} {high}))")
        assert _vanished(out) == {2, 3, 5}

    run(tmp_path, go)


def _vanished(out: bytes) -> set[int]:
    found: set[int] = set()
    for text in re.findall(rb"\* VANISHED (?:\(EARLIER\) )?([\d,:]+)", out):
        for part in text.decode().split(","):
            lo, _, hi = part.partition(":")
            found.update(range(int(lo), int(hi or lo) + 1))
    return found
