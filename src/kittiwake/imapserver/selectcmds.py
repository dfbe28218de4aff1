"""Selecting and leaving a mailbox, EXPUNGE and IDLE: SELECT/EXAMINE (RFC 9051 §6.3.2-3,
with RFC 7162 CONDSTORE and QRESYNC), CLOSE, UNSELECT (RFC 3691), EXPUNGE and UID EXPUNGE
(RFC 4315), IDLE (RFC 2177).

The SELECT responses differ by what the client enabled: an IMAP4rev1 client gets RECENT
(always 0: \\Recent is not kept) and [UNSEEN n]; an IMAP4rev2 client gets the LIST response
instead (RFC 9051 §6.3.2).  Every client gets [HIGHESTMODSEQ] since every mailbox has
modseqs (RFC 7162 §3.1.2.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kittiwake.imap import builders
from kittiwake.imap import commands as c
from kittiwake.imap.events import IdleDone, ParseError
from kittiwake.imap.response import (
    CLOSED,
    NONEXISTENT,
    READ_ONLY,
    READ_WRITE,
    Continuation,
    ResponseCode,
    Status,
    Tagged,
    Untagged,
    highestmodseq,
    permanentflags,
    uidnext,
    uidvalidity,
    unseen,
)
from kittiwake.imap.types import SequenceSet, intersect_ranges, missing_ranges
from kittiwake.imapserver.selected import SYSTEM_FLAGS, SelectedMailbox, ordered
from kittiwake.store.errors import NotFound

if TYPE_CHECKING:
    from kittiwake.imapserver.session import Session


async def select(s: Session, cmd: c.Select | c.Examine) -> Tagged:
    assert s.account is not None and s.conn is not None
    read_only = isinstance(cmd, c.Examine)
    # RFC 5182 §2.1: "$" starts empty in each selection; it holds UIDs, which in another
    # mailbox would name unrelated messages.
    s.saved = []
    if s.selected is not None:
        s.selected = None
        # RFC 9051 §7.1: the previous mailbox is closed; what follows is the new one.
        s.send(Untagged(Status.OK, "Previous mailbox closed", CLOSED))
    try:
        handle = await s.store.mailbox(s.account, cmd.mailbox)
        snapshot = await s.store.snapshot(handle)
    except NotFound:
        return Tagged(cmd.tag, Status.NO, "No such mailbox", NONEXISTENT)
    if cmd.condstore or cmd.qresync is not None:
        s.condstore = True  # RFC 7162 §3.1.8: SELECT (CONDSTORE) enables CONDSTORE
    view = SelectedMailbox(snapshot, read_only=read_only)
    view.condstore = s.condstore
    s.send(view.flags_response())
    s.send(Untagged(Status.OK, "Flags permitted",
                    permanentflags([] if read_only else SYSTEM_FLAGS, keywords=not read_only)))
    s.send(builders.exists_data(len(view)))
    if not s.conn.rev2:
        s.send(builders.recent_data(0))
        first = await s.store.first_unseen(handle)
        seq = view.seq_of(first) if first is not None else None
        if seq is not None:
            s.send(Untagged(Status.OK, "First unseen", unseen(seq)))
    s.send(Untagged(Status.OK, "UIDs valid", uidvalidity(handle.uidvalidity)))
    s.send(Untagged(Status.OK, "Predicted next UID", uidnext(snapshot.uidnext)))
    s.send(Untagged(Status.OK, "Highest", highestmodseq(snapshot.highestmodseq)))
    if s.conn.rev2:
        s.send(builders.list_data(handle.name, "/", [], utf8=s.utf8))
    qr = cmd.qresync
    if qr is not None and qr.uidvalidity == handle.uidvalidity:
        await _qresync(s, view, qr.modseq, qr.known_uids)
    s.selected = view
    code = READ_ONLY if read_only else READ_WRITE
    return Tagged(cmd.tag, Status.OK, "EXAMINE completed" if read_only else "SELECT completed",
                  code)


async def _qresync(s: Session, view: SelectedMailbox, modseq: int,
                   known: SequenceSet | None) -> None:
    """RFC 7162 §3.2.5.2: what the client missed since `modseq`: VANISHED (EARLIER) for
    removed UIDs (within its known UIDs, when it said which), FETCH for changed flags."""
    changes = await s.store.changes(view.handle, modseq)
    if changes.present is not None:
        # The records of what was expunged since `modseq` are pruned: every UID below
        # UIDNEXT that is neither present nor in this view has vanished, as far as the
        # client can tell.  It may hear of UIDs it never had (clipped to its known UIDs
        # when it sent them); VANISHED of an unknown UID changes nothing for it.
        kept = sorted(set(changes.present).union(view.uids))
        ranges = missing_ranges(kept, view.uidnext - 1)
        if known is not None:
            ranges = intersect_ranges(ranges, known.resolve(view.uidnext))
        if ranges:
            s.send(builders.vanished_data(SequenceSet(tuple(ranges)), earlier=True))
    else:
        # One expunged after the snapshot is still counted in EXISTS: the next sync
        # reports it.
        gone = [u for u in changes.expunged if view.seq_of(u) is None]
        if known is not None:
            member = known.matcher(view.uidnext)
            gone = [u for u in gone if member(u)]
        if gone:
            s.send(builders.vanished_data(gone, earlier=True))
    for m in changes.changed:
        seq = view.seq_of(m.uid)
        if seq is None or m.modseq > view.known_modseq:
            continue  # newer than the snapshot: reported by the next sync
        fr = builders.FetchResponse(seq).uid(m.uid).flags(ordered(m.flags)).modseq(m.modseq)
        s.send(fr.to_data())


async def close(s: Session, cmd: c.Close) -> Tagged:
    """RFC 9051 §6.4.1: expunge \\Deleted messages silently (unless read-only), deselect."""
    view = s.selected
    assert view is not None
    if not view.read_only and not view.gone:
        # The index's flags, not what this session last heard: \Deleted set elsewhere
        # counts too (RFC 9051 §6.4.1), but only on messages this session knows.
        doomed = [u for u in await s.store.deleted_uids(view.handle) if u in view]
        if doomed:
            await s.store.expunge(view.handle, doomed)
    s.selected = None
    return Tagged(cmd.tag, Status.OK, "CLOSE completed")


async def unselect(s: Session, cmd: c.Unselect) -> Tagged:
    s.selected = None
    return Tagged(cmd.tag, Status.OK, "UNSELECT completed")


async def expunge(s: Session, cmd: c.Expunge) -> Tagged:
    view = s.selected
    assert view is not None
    if view.read_only:
        return Tagged(cmd.tag, Status.NO, "Mailbox is read-only", READ_ONLY)
    await s.sync(expunges=True, force=True)
    doomed = [u for u in await s.store.deleted_uids(view.handle) if u in view]
    if cmd.uids is not None:  # RFC 4315 §2.1: only those of the set
        wanted = set(view.resolve(cmd.uids, uid=True, saved=s.saved))
        doomed = [u for u in doomed if u in wanted]
    if doomed:
        removed = await s.store.expunge(view.handle, doomed)
        view.own_expunge(removed)
    await s.sync(expunges=True, force=True)
    code: ResponseCode | None = highestmodseq(view.known_modseq) if s.qresync else None
    return Tagged(cmd.tag, Status.OK, "EXPUNGE completed", code)


async def idle(s: Session, cmd: c.Idle) -> Tagged | None:
    """RFC 2177: updates as they happen until DONE.  Woken by the store's notifier (this
    process) and the server's watcher (other processes); a keepalive every
    `idle_keepalive` seconds keeps NAT state alive."""
    s.idling = True
    s.server.idlers.add(s)
    s.send(Continuation("idling"))
    s.pump_soon()
    if s.selected is not None:
        await s.sync(expunges=True, force=True)
    await s.flush()
    while True:
        woke = await s.wait_for_change(s.settings.idle_keepalive)
        if s.input_ready():
            event = await s.next_input()
            if isinstance(event, IdleDone):
                return Tagged(cmd.tag, Status.OK, "IDLE terminated")
            if isinstance(event, ParseError):
                s.send(event.response)
                return None
        if woke:
            if s.selected is not None:
                await s.sync(expunges=True, force=True)
            else:
                s.wake_clear()
        else:
            s.send(Untagged(Status.OK, "Still here"))
        await s.flush()
