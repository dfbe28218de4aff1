"""Commands on messages of the selected mailbox: FETCH, STORE, SEARCH, COPY, MOVE and their
UID forms (RFC 9051 §6.4; RFC 7162 CHANGEDSINCE/UNCHANGEDSINCE/VANISHED; RFC 4731 ESEARCH;
RFC 5182 SEARCHRES; RFC 4315 COPYUID; RFC 6851 MOVE).

FETCH works in batches: rows (and, only if the items need them, structures and file
bytes) for a few hundred messages, rendered and written, then the next batch after the
transport has drained — so a client fetching 100,000 bodies never holds them all in our
memory.  Items that set \\Seen (non-PEEK bodies) set it with one STORE before the first
batch, so the FLAGS in the responses are already the new ones.
"""

from __future__ import annotations

import bisect
import contextlib
from typing import TYPE_CHECKING

from kittiwake.imap import builders
from kittiwake.imap import commands as c
from kittiwake.imap.response import (
    EXPUNGEISSUED,
    READ_ONLY,
    TRYCREATE,
    UNKNOWN_CTE,
    Status,
    Tagged,
    Untagged,
    copyuid,
    modified,
)
from kittiwake.imap.types import Attr, SequenceSet, intersect_ranges, missing_ranges
from kittiwake.imapserver import fastfetch, searching
from kittiwake.imapserver.fetching import Plan, UnknownCte, render
from kittiwake.imapserver.selected import SelectedMailbox, ordered
from kittiwake.store import imapcache
from kittiwake.store.errors import NotFound
from kittiwake.store.imaptypes import MessageData, StoreMode

if TYPE_CHECKING:
    from kittiwake.imapserver.session import Session

BATCH = 256
FAST_BATCH = 16384  # rows per query on the fast path (fastfetch.py)
#: Message bytes held at once while fetching bodies: a batch is read in parts this large,
#: each written out (and the transport drained) before the next is read.
READ_BUDGET = 4 * 1024 * 1024


def _view(s: Session) -> SelectedMailbox:
    assert s.selected is not None
    return s.selected


# --------------------------------------------------------------------------- FETCH


async def fetch(s: Session, cmd: c.Fetch) -> Tagged:
    view = _view(s)
    uids = view.resolve(cmd.sequence_set, uid=cmd.uid, saved=s.saved)
    if cmd.changed_since is not None or Attr.MODSEQ in cmd.items:
        s.condstore = view.condstore = True  # RFC 7162 §3.1: CONDSTORE-enabling
    plan = Plan.of(cmd.items, modseq=cmd.changed_since is not None)
    if cmd.vanished and cmd.changed_since is not None:
        await _vanished(s, view, cmd.sequence_set, cmd.changed_since)
    seen_set: set[int] = set()
    if plan.sets_seen and not view.read_only and uids:
        # One STORE for the batch; messages already \Seen are left as they are.
        result = await s.store.store_flags(view.handle, uids, StoreMode.ADD, ["\\Seen"])
        view.own_flags(result.changed)
        seen_set = {m.uid for m in result.changed}
    issue = False
    with_uid = cmd.uid or s.qresync
    fast = fastfetch.eligible(cmd.items)
    structures = fastfetch.needs_structures(cmd.items)
    header = fastfetch.header_column(cmd.items)
    index = fastfetch.needs_index(cmd.items) or plan.modseq or bool(seen_set)
    flags_only = fastfetch.flags_only(cmd.items) and not plan.modseq
    renderer = (fastfetch.Renderer(cmd.items, with_uid=with_uid, modseq=plan.modseq)
                if fast else None)
    try:
        step = FAST_BATCH if fast else BATCH
        for start in range(0, len(uids), step):
            batch = uids[start : start + step]
            if renderer is not None:
                rows = await s.store.fast_rows(
                    view.handle, batch, structures=structures, header=header, index=index,
                    flags_only=flags_only)
                issue |= len(rows) < len(batch)
                if cmd.changed_since is not None:
                    rows = [r for r in rows if r[imapcache.MODSEQ] > cmd.changed_since]
                out: list[bytes] = []
                cold: list[imapcache.FastRow] = []
                utf8: list[int] = []
                # Rows and the view are both in UID order: one walk numbers them all.
                vuids = view.uids
                count = len(vuids)
                vi = bisect.bisect_left(vuids, rows[0][0]) if rows else 0
                for row in rows:
                    uid = row[0]
                    while vi < count and vuids[vi] < uid:
                        vi += 1
                    seq = vi + 1 if vi < count and vuids[vi] == uid else None
                    if seq is None:
                        issue = True
                    elif structures and s.utf8 and row[imapcache.ASCII] == 0:
                        utf8.append(uid)  # the cached text is the 7-bit form
                    elif ((structures and row[imapcache.ENVELOPE] is None)
                          or (header is not None and row[imapcache.HEADER] is None)):
                        cold.append(row)  # not indexed yet
                    else:
                        out.append(renderer.render(seq, row, flags_changed=uid in seen_set))
                s.send_raw(b"".join(out))
                if cold:
                    issue |= await _cold(s, view, renderer, cold, header, seen_set, utf8)
                if utf8:
                    more = await s.store.message_data(view.handle, utf8, structure=True)
                    for part in range(0, len(more), BATCH):
                        issue |= await _general(s, view, plan, more[part : part + BATCH],
                                                seen_set, with_uid)
            else:
                raws: list[bytes | None] | None = None
                if plan.body:
                    data, raws = await s.store.message_files(
                        view.handle, batch, structure=plan.structure, budget=READ_BUDGET)
                else:
                    data = await s.store.message_data(view.handle, batch,
                                                      structure=plan.structure)
                issue |= len(data) < len(batch)
                if cmd.changed_since is not None:
                    keep = [i for i, r in enumerate(data) if r.modseq > cmd.changed_since]
                    data = [data[i] for i in keep]
                    raws = [raws[i] for i in keep] if raws is not None else None
                issue |= await _general(s, view, plan, data, seen_set, with_uid, raws)
            await s.drain()
    except UnknownCte:
        return Tagged(cmd.tag, Status.NO, "Unknown Content-Transfer-Encoding", UNKNOWN_CTE)
    if issue:
        # RFC 9051 §7.1: some of the messages were expunged by another session.
        return Tagged(cmd.tag, Status.NO, "Some messages no longer exist", EXPUNGEISSUED)
    return Tagged(cmd.tag, Status.OK, "FETCH completed")


async def _cold(s: Session, view: SelectedMailbox, renderer: fastfetch.Renderer,
                rows: list[imapcache.FastRow], header: str | None, seen_set: set[int],
                utf8: list[int]) -> bool:
    """Messages the indexer has not reached: their cache is made now, on every worker
    process at once (ImapStore.fill_cache), and rendered as if read from it, a chunk at a
    time as the workers finish them.  Those whose text is not 7-bit, for a UTF-8 client,
    join `utf8` for the general way."""
    by_uid = {r[0]: r for r in rows}
    done = 0
    async with contextlib.aclosing(s.store.fill_cache(
            view.handle, list(by_uid), header=header is not None)) as chunks:
        async for chunk in chunks:
            out = []
            for p in chunk:
                row = by_uid[p.uid]
                seq = view.seq_of(p.uid)
                if seq is None:
                    continue
                done += 1
                if s.utf8 and not p.ascii:
                    utf8.append(p.uid)
                    continue
                cached: imapcache.FastRow = (
                    row[0], row[1], row[2], row[3], row[4], p.envelope.encode(),
                    p.bodystructure.encode(), p.body.encode(), int(p.ascii),
                    p.common if header == "common" else p.header)
                out.append(renderer.render(seq, cached, flags_changed=row[0] in seen_set))
            s.send_raw(b"".join(out))
            await s.drain()
    return done < len(by_uid)  # some files had gone (or messages were expunged)


async def _general(s: Session, view: SelectedMailbox, plan: Plan, rows: list[MessageData],
                   seen_set: set[int], with_uid: bool,
                   bodies: list[bytes | None] | None = None) -> bool:
    """FETCH the general way: file bytes and parsed structures as the items need them
    (`bodies`: already read, for all of `rows`).  True when some message had vanished."""
    issue = False
    for part in _by_size(rows) if plan.body and bodies is None else [rows]:
        if bodies is not None:
            raws = bodies
        else:
            raws = (await s.store.read_files(view.handle, part) if plan.body
                    else [None] * len(part))
        structs = (await s.store.structures(view.handle, part, raws if plan.body else None)
                   if plan.structure else [None] * len(part))
        for row, raw, struct in zip(part, raws, structs, strict=True):
            seq = view.seq_of(row.uid)
            if seq is None or (plan.body and raw is None) or (
                    plan.structure and struct is None):
                issue = True
                continue
            s.send(render(seq, row, struct, raw, plan, with_uid=with_uid,
                          flags_changed=row.uid in seen_set, utf8=s.utf8))
        await s.drain()
    return issue


def _by_size(rows: list[MessageData]) -> list[list[MessageData]]:
    parts: list[list[MessageData]] = [[]]
    total = 0
    for row in rows:
        if parts[-1] and total + row.size > READ_BUDGET:
            parts.append([])
            total = 0
        parts[-1].append(row)
        total += row.size
    return parts


async def _vanished(s: Session, view: SelectedMailbox, uidset: SequenceSet,
                    since: int) -> None:
    """RFC 7162 §3.2.6: UID FETCH (CHANGEDSINCE m VANISHED) reports UIDs of the set
    expunged since m as VANISHED (EARLIER)."""
    changes = await s.store.changes(view.handle, since)
    largest = max(view.uidnext - 1, 1)
    if changes.present is not None:  # records pruned: every UID missing has vanished
        ranges = intersect_ranges(missing_ranges(changes.present, largest),
                                  uidset.resolve(largest))
        if ranges:
            s.send(builders.vanished_data(SequenceSet(tuple(ranges)), earlier=True))
        return
    member = uidset.matcher(largest)
    gone = [u for u in changes.expunged if member(u)]
    if gone:
        s.send(builders.vanished_data(gone, earlier=True))


# --------------------------------------------------------------------------- STORE


async def store(s: Session, cmd: c.Store) -> Tagged:
    view = _view(s)
    if view.read_only:
        return Tagged(cmd.tag, Status.NO, "Mailbox is read-only", READ_ONLY)
    uids = view.resolve(cmd.sequence_set, uid=cmd.uid, saved=s.saved)
    if cmd.unchanged_since is not None:
        s.condstore = view.condstore = True
    mode = StoreMode[cmd.mode.name]
    result = await s.store.store_flags(view.handle, uids, mode, cmd.flags,
                                       cmd.unchanged_since)
    view.own_flags(result.changed)
    if view.new_keywords():  # RFC 9051 §7.3.5: the client hears of a keyword first
        s.send(view.flags_response())
    with_uid = cmd.uid or s.qresync
    report = sorted((*result.changed, *result.unchanged), key=lambda m: m.uid)
    changed = {m.uid for m in result.changed}
    for m in report:
        seq = view.seq_of(m.uid)
        if seq is None:
            continue
        if cmd.silent and not (s.condstore and m.uid in changed):
            continue
        fr = builders.FetchResponse(seq)
        if with_uid:
            fr.uid(m.uid)
        if not cmd.silent:
            fr.flags(ordered(m.flags))
        if s.condstore:
            # RFC 7162 §3.1.3: MODSEQ in the FETCH, even for .SILENT when it changed.
            fr.modseq(m.modseq)
        s.send(fr.to_data())
    if result.modified:
        numbers = (result.modified if cmd.uid
                   else [n for u in result.modified if (n := view.seq_of(u)) is not None])
        return Tagged(cmd.tag, Status.OK, "Conditional STORE failed for some",
                      modified(numbers))
    return Tagged(cmd.tag, Status.OK, "STORE completed")


# --------------------------------------------------------------------------- SEARCH


async def search(s: Session, cmd: c.Search) -> Tagged:
    view = _view(s)
    if not cmd.charset_known:
        from kittiwake.imap.response import badcharset

        if cmd.returns is not None and "SAVE" in cmd.returns:
            s.saved = []  # RFC 5182 §2.1: a SAVE search that fails leaves "$" empty
        return Tagged(cmd.tag, Status.NO, "Unsupported charset", badcharset())
    if searching.uses_modseq(cmd.criteria):
        s.condstore = view.condstore = True
    result = await searching.search(s.store, view, cmd.criteria, s.saved)
    uids = result.uids
    numbers = uids if cmd.uid else [n for u in uids if (n := view.seq_of(u)) is not None]
    # RFC 9051 §6.4.4: the SEARCH response is IMAP4rev1's; an IMAP4rev2 client gets
    # ESEARCH, a missing RETURN meaning RETURN (ALL).
    if cmd.returns is None and not (s.conn is not None and s.conn.rev2):
        s.send(builders.search_data(numbers, result.modseq))
        return Tagged(cmd.tag, Status.OK, "SEARCH completed")
    opts = cmd.returns or frozenset({"ALL"})
    if "SAVE" in opts:
        # RFC 5182 §2.4: with only MIN and/or MAX beside SAVE, only those are saved.
        if opts & {"MIN", "MAX"} and not opts & {"ALL", "COUNT"}:
            s.saved = sorted({u for u in (uids[:1] if "MIN" in opts else [])
                              + (uids[-1:] if "MAX" in opts else [])})
        else:
            s.saved = list(uids)
        if opts == {"SAVE"}:
            return Tagged(cmd.tag, Status.OK, "SEARCH completed, result saved")
    s.send(builders.esearch_data(
        cmd.tag, uid=cmd.uid,
        min=numbers[0] if "MIN" in opts and numbers else None,
        max=numbers[-1] if "MAX" in opts and numbers else None,
        all=numbers if "ALL" in opts and numbers else None,
        count=len(numbers) if "COUNT" in opts else None,
        modseq=result.modseq if result.modseq is not None and numbers else None))
    return Tagged(cmd.tag, Status.OK, "SEARCH completed")


# --------------------------------------------------------------------------- COPY / MOVE


async def copy(s: Session, cmd: c.Copy | c.Move) -> Tagged:
    view = _view(s)
    assert s.account is not None
    move = isinstance(cmd, c.Move)
    if move and view.read_only:
        return Tagged(cmd.tag, Status.NO, "Mailbox is read-only", READ_ONLY)
    uids = view.resolve(cmd.sequence_set, uid=cmd.uid, saved=s.saved)
    try:
        dest = await s.store.mailbox(s.account, cmd.mailbox)
    except NotFound:
        return Tagged(cmd.tag, Status.NO, "No such mailbox", TRYCREATE)
    name = "MOVE" if move else "COPY"
    uids = [u for u in uids if u not in view.pending_expunges]
    if not uids:
        return Tagged(cmd.tag, Status.OK, f"{name} completed, nothing to do")
    if move and dest.id == view.handle.id:
        # Into itself: new copies, then the originals go (new UIDs, as RFC 6851 implies).
        result = await s.store.copy(view.handle, uids, dest)
        view.own_expunge(await s.store.expunge(view.handle, list(result.source_uids)))
    else:
        result = await s.store.copy(view.handle, uids, dest, move=move)
        if move:
            view.own_expunge(result.source_uids)
    code = copyuid(result.uidvalidity, result.source_uids, result.dest_uids)
    if move:
        # RFC 6851 §4.3: COPYUID comes in an untagged OK before the expunges.
        if result.source_uids:
            s.send(Untagged(Status.OK, "Moved", code))
        return Tagged(cmd.tag, Status.OK, "MOVE completed")
    if not result.source_uids:
        return Tagged(cmd.tag, Status.OK, "COPY completed")
    return Tagged(cmd.tag, Status.OK, "COPY completed", code)
