"""Regression tests from a review of the IMAP server against RFC 9051, RFC 5182, RFC 6851
and RFC 7162: message counts after concurrent changes, the saved search result, the
selected mailbox deleted under a session, IMAP4rev2 SEARCH results, and sequence sets
that must not cost a sort per message."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from test_imapserver_wire import Env, message, run

from kittiwake.imap.types import SearchSet, SequenceSet
from kittiwake.imapserver import searching
from kittiwake.imapserver.selected import SelectedMailbox
from kittiwake.store.imaptypes import MailboxHandle, Snapshot, StoreMode


def _exists(out: bytes) -> int | None:
    found = re.findall(rb"^\* (\d+) EXISTS\r\n", out, re.MULTILINE)
    return int(found[-1]) if found else None


def test_new_message_and_expunge_in_one_update_still_announce_exists(tmp_path: Path) -> None:
    """RFC 9051 §7.4.1/§7.3.1: after `* 1 EXPUNGE` the client counts one fewer; a message
    that arrived meanwhile must still be announced by EXISTS, else the client never
    learns of it (and its numbers disagree with ours)."""

    async def go(env: Env) -> None:
        for n in (1, 2, 3):
            await env.deliver(message(n))
        a, b = await env.connect(), await env.connect()
        for c in (a, b):
            await c.login()
            await c.cmd("SELECT INBOX")
        await a.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
        await a.cmd("EXPUNGE")
        await env.deliver(message(4))
        out = await b.cmd("NOOP")
        assert b"* 1 EXPUNGE\r\n" in out
        assert _exists(out) == 3, out
        assert b"* 3 FETCH (UID 4)" in await b.cmd("FETCH 3 UID")

    run(tmp_path, go)


def test_move_into_the_selected_mailbox_announces_the_new_copy(tmp_path: Path) -> None:
    """RFC 6851 §3.3 into the mailbox itself: the original goes (EXPUNGE), its copy
    arrives (EXISTS); COPYUID comes first (§4.3)."""

    async def go(env: Env) -> None:
        for n in (1, 2):
            await env.deliver(message(n))
        c = await env.connect()
        await c.login()
        await c.cmd("SELECT INBOX")
        out = await c.cmd("MOVE 1 INBOX")
        assert re.search(rb"\* OK \[COPYUID \d+ 1 3\][^\r]*\r\n\* 1 EXPUNGE\r\n", out), out
        assert _exists(out) == 2, out
        assert b"SEARCH 1 2\r\n" in await c.cmd("SEARCH ALL")

    run(tmp_path, go)


def test_saved_search_result_is_reset_by_select_and_failed_save(tmp_path: Path) -> None:
    """RFC 5182 §2.1: SELECT/EXAMINE reset "$" to the empty sequence (it holds UIDs of the
    previous mailbox, which would name unrelated messages here); so does a SEARCH with
    SAVE that ends in NO."""

    async def go(env: Env) -> None:
        for n in (1, 2, 3):
            await env.deliver(message(n))
        c = await env.connect()
        await c.login()
        await c.cmd("CREATE Other")
        for n in (7, 8, 9):
            await env.deliver(message(n), mailbox="Other")
        await c.cmd("SELECT INBOX")
        await c.cmd("UID SEARCH RETURN (SAVE) UID 3")
        assert b"UID 3" in await c.cmd("UID FETCH $ (FLAGS)")
        await c.cmd("SELECT Other")
        out = await c.cmd("UID FETCH $ (FLAGS)")
        assert b"* " not in out and b" OK " in out
        await c.cmd("UID SEARCH RETURN (SAVE) UID 2")
        assert b"UID 2" in await c.cmd("UID FETCH $ (FLAGS)")
        out = await c.cmd("UID SEARCH RETURN (SAVE) CHARSET X-NO-SUCH-CHARSET SUBJECT x")
        assert b"NO [BADCHARSET" in out
        assert b"* " not in await c.cmd("UID FETCH $ (FLAGS)")

    run(tmp_path, go)


def test_deleting_own_selected_mailbox_after_renaming_it_is_answered(tmp_path: Path) -> None:
    """RFC 9051 §6.3.4: the selected mailbox may be deleted by its own session; the DELETE
    gets its tagged OK even when the mailbox was renamed since it was selected."""

    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        await c.cmd("CREATE Old")
        await c.cmd("SELECT Old")
        await c.cmd("RENAME Old New")
        out = await c.cmd("DELETE New")
        assert b"BYE" not in out and re.search(rb"^a\d+ OK", out, re.MULTILINE), out
        assert b"OK" in await c.cmd("UNSELECT")

    run(tmp_path, go)


def test_selected_mailbox_deleted_between_poll_and_read_ends_cleanly(tmp_path: Path) -> None:
    """The index said the mailbox moved on, and it was gone when its changes were read:
    the session ends with BYE as when the poll itself finds it gone, not an internal
    error."""

    async def go(env: Env) -> None:
        a, b = await env.connect(), await env.connect()
        for c in (a, b):
            await c.login()
        await a.cmd("CREATE Temp")
        await b.cmd("SELECT Temp")
        await a.cmd("DELETE Temp")
        imap: Any = env.store.imap

        async def stale(handle: MailboxHandle) -> tuple[int, int] | None:
            return (10**9, 10**9)  # as read just before the DELETE committed

        imap.state = stale
        b.feed(b"x NOOP\r\n")
        out = await b.read_until(rb"^\* BYE [^\r\n]*\r\n")
        assert b"Internal error" not in out

    run(tmp_path, go)


def test_imap4rev2_search_answers_with_esearch(tmp_path: Path) -> None:
    """RFC 9051 §6.4.4, §7.3.4: an IMAP4rev2 server answers SEARCH with ESEARCH (no
    RETURN means RETURN (ALL)); the SEARCH response is for IMAP4rev1 clients only."""

    async def go(env: Env) -> None:
        for n in (1, 2, 3):
            await env.deliver(message(n))
        c = await env.connect()
        await c.login()
        await c.cmd("ENABLE IMAP4rev2")
        await c.cmd("SELECT INBOX")
        out = await c.cmd("SEARCH 2:3")
        assert b"* SEARCH" not in out
        assert re.search(rb'\* ESEARCH \(TAG "a\d+"\) ALL 2:3\r\n', out), out
        out = await c.cmd("UID SEARCH UID 1")
        assert re.search(rb'\* ESEARCH \(TAG "a\d+"\) UID ALL 1\r\n', out), out
        out = await c.cmd("SEARCH SUBJECT nowhere")
        assert re.search(rb'\* ESEARCH \(TAG "a\d+"\)\r\n', out), out

    run(tmp_path, go)


def test_search_by_a_long_sequence_set_does_not_sort_it_per_message() -> None:
    """A sequence set of the 10,000 ranges the parser allows, tested against every message
    of a mailbox, is resolved once: a sort per message blocked the event loop (every
    session of the server) for seconds."""
    uids = list(range(1, 3001))
    snap = Snapshot(MailboxHandle(1, "a@b", "INBOX", 7), 3001, 5, uids, frozenset())
    view = SelectedMailbox(snap, read_only=False)
    odd = SequenceSet(tuple((n, n) for n in range(1, 20000, 2)))
    start = time.perf_counter()
    for uid in (False, True):
        result = asyncio.run(searching.search(None, view, SearchSet(odd, uid=uid), []))  # type: ignore[arg-type]
        assert result.uids == list(range(1, 3001, 2))
    assert time.perf_counter() - start < 1.0
    member = odd.matcher(20000)
    assert member(1) and member(19999) and not member(2) and not member(0)
    assert not member(20001)
    star = SequenceSet(((5, 0), (1, 1)))  # 5:*,1 with 9 the largest
    assert [n for n in range(12) if star.matcher(9)(n)] == [1, 5, 6, 7, 8, 9]


def test_list_pattern_with_many_wildcards_is_answered_at_once(tmp_path: Path) -> None:
    """RFC 9051 §6.3.9 wildcards matched without backtracking: ``**********b`` against a
    30-character name took seconds per name as a regex, with the event loop (every
    session) stalled meanwhile."""

    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        await c.cmd("CREATE " + "a" * 30)
        await c.cmd("CREATE " + "a" * 29 + "b")
        start = time.perf_counter()
        out = await c.cmd('LIST "" ' + "*" * 12 + "b")
        assert time.perf_counter() - start < 1.0
        assert out.count(b"* LIST") == 1 and b"a" * 29 + b"b" in out
        out = await c.cmd('LIST "" ' + "%a" * 15 + "%b")
        assert out.count(b"* LIST") == 1
        assert b"* LIST" not in await c.cmd('LIST "" %a*B')  # case-sensitive but INBOX

    run(tmp_path, go)


def test_qresync_select_does_not_report_vanished_a_message_it_counts(tmp_path: Path) -> None:
    """RFC 7162 §3.2.5.2: a message expunged between SELECT's snapshot and its read of the
    changes is still in EXISTS, so it must not also be in VANISHED (EARLIER); the next
    command reports it."""

    async def go(env: Env) -> None:
        for n in (1, 2, 3):
            await env.deliver(message(n))
        a = await env.connect()
        await a.login()
        await a.cmd("ENABLE QRESYNC")
        out = await a.cmd("SELECT INBOX")
        validity = re.search(rb"UIDVALIDITY (\d+)", out)
        assert validity is not None
        await a.cmd("UNSELECT")
        imap: Any = env.store.imap
        real = imap.changes

        async def racing(handle: MailboxHandle, since: int) -> Any:
            imap.changes = real
            await imap.store_flags(handle, [2], StoreMode.ADD, ["\\Deleted"])
            await imap.expunge(handle, [2])  # another session, just after the snapshot
            return await real(handle, since)

        imap.changes = racing
        out = await a.cmd(f"SELECT INBOX (QRESYNC ({validity.group(1).decode()} 1))")
        assert _exists(out) == 3
        assert b"VANISHED" not in out, out
        assert b"* VANISHED 2\r\n" in await a.cmd("NOOP")

    run(tmp_path, go)


def test_client_reading_a_long_response_is_not_logged_out(tmp_path: Path) -> None:
    """The autologout is about idle clients: one still draining a long FETCH (our output
    paused and resumed by the transport) is active even without sending a line."""

    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        s = c.session
        s.last_activity = time.monotonic() - 2 * s.timeout  # last command long ago
        s.pause_writing()
        s.resume_writing()  # the client read a buffer's worth of the response
        assert time.monotonic() - s.last_activity < s.timeout

    run(tmp_path, go)
