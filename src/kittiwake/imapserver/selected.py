"""One session's view of its selected mailbox: message sequence numbers, and the changes
made by others that it has yet to report (RFC 9051 §7.5.1, §2.3.1.2; RFC 7162).

Sequence numbers belong to the session: message n is the n-th UID of *this view*, which
changes only when this session reports it — EXISTS for new messages, EXPUNGE (or VANISHED
with QRESYNC) for removed ones.  Expunges made elsewhere are held as `pending_expunges`
until the session is at a point where RFC 9051 §7.5.1 lets it say so: never while
answering FETCH, STORE or SEARCH (their UID forms are fine) and never between commands.
Until then the message keeps its number; its data may be gone, which FETCH reports as
NO [EXPUNGEISSUED].

The view also caches each message's flags and modseq, both to answer from and to tell
real changes from echoes of this session's own STORE.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from kittiwake.imap import builders
from kittiwake.imap.response import Data
from kittiwake.imap.types import STAR, SequenceSet
from kittiwake.store.imaptypes import Changes, MailboxHandle, MessageState, Snapshot

#: RFC 9051 §2.3.2 system flags, as FLAGS lists them.
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def ordered(flags: Iterable[str]) -> list[str]:
    """Flags in one stable order — system flags, then keywords — so responses do not
    depend on set iteration order."""
    return sorted(flags, key=lambda f: (not f.startswith("\\"), f.lower()))


class BadSequence(Exception):
    """A message sequence number the client cannot know (RFC 9051 §9: a BAD)."""


class SelectedMailbox:
    __slots__ = (
        "condstore", "flags", "gone", "handle", "keywords", "known_modseq", "modseqs",
        "pending_expunges", "pending_fetch", "read_only", "reported_exists", "uidnext",
        "uids",
    )

    def __init__(self, snapshot: Snapshot, *, read_only: bool) -> None:
        self.handle: MailboxHandle = snapshot.handle
        self.read_only = read_only
        self.uids: list[int] = [m.uid for m in snapshot.messages]
        self.flags: dict[int, frozenset[str]] = {m.uid: m.flags for m in snapshot.messages}
        self.modseqs: dict[int, int] = {m.uid: m.modseq for m in snapshot.messages}
        self.known_modseq = snapshot.highestmodseq
        self.uidnext = snapshot.uidnext
        self.pending_expunges: set[int] = set()
        self.pending_fetch: set[int] = set()
        self.reported_exists = len(self.uids)
        self.keywords: set[str] = {f for m in snapshot.messages for f in m.flags
                                   if not f.startswith("\\")}
        self.condstore = False
        self.gone = False  # this session deleted it: nothing more to learn or report

    # ------------------------------------------------------------------ numbering

    def __len__(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def first_unseen(self) -> int | None:
        for n, uid in enumerate(self.uids, 1):
            if "\\Seen" not in self.flags[uid]:
                return n
        return None

    def resolve(self, seqset: SequenceSet, *, uid: bool,
                saved: Sequence[int] | None = None) -> list[int]:
        """The UIDs a sequence set names, ascending.  UID sets may name UIDs that do not
        exist (they are skipped, RFC 9051 §6.4.8); message numbers must exist."""
        if seqset.saved:  # RFC 5182 "$": the last SEARCH RETURN (SAVE) result, as UIDs
            present = set(self.uids)
            return [u for u in (saved or ()) if u in present]
        if uid:
            if not self.uids:
                return []
            largest = self.uids[-1]
            out: list[int] = []
            for lo, hi in seqset.resolve(largest):
                start = bisect.bisect_left(self.uids, lo)
                end = bisect.bisect_right(self.uids, hi)
                out.extend(self.uids[start:end])
            return out
        count = len(self.uids)
        out = []
        for lo, hi in seqset.resolve(count):
            if lo < 1 or hi > count:
                raise BadSequence("no such message")  # also "*" with an empty mailbox
            out.extend(self.uids[lo - 1 : hi])
        return out

    def star_in(self, seqset: SequenceSet) -> bool:
        return any(STAR in r for r in seqset.ranges)

    # ------------------------------------------------------------------ updates

    def apply(self, changes: Changes) -> None:
        """Take in what the index says changed since `known_modseq`."""
        present = self.flags
        for uid in changes.expunged:
            if uid in present:
                self.pending_expunges.add(uid)
        new: list[MessageState] = []
        for m in changes.changed:
            if m.uid in present:
                if m.uid in self.pending_expunges:
                    continue
                if m.modseq > self.modseqs.get(m.uid, 0) and (
                        m.flags != present[m.uid] or self.condstore):
                    self.pending_fetch.add(m.uid)
                if m.modseq >= self.modseqs.get(m.uid, 0):
                    present[m.uid] = m.flags
                    self.modseqs[m.uid] = m.modseq
            elif m.uid >= self.uidnext and m.uid not in changes.expunged:
                new.append(m)
        for m in sorted(new, key=lambda s: s.uid):
            if self.uids and m.uid <= self.uids[-1]:
                continue  # cannot happen with monotonic UIDs; never renumber
            self.uids.append(m.uid)
            present[m.uid] = m.flags
            self.modseqs[m.uid] = m.modseq
        self.uidnext = max(self.uidnext, changes.uidnext)
        self.known_modseq = max(self.known_modseq, changes.highestmodseq)

    def own_flags(self, states: Iterable[MessageState]) -> None:
        """This session's STORE result: cache it so the change poll does not echo it."""
        for m in states:
            if m.uid in self.flags:
                self.flags[m.uid] = m.flags
                self.modseqs[m.uid] = m.modseq
                self.pending_fetch.discard(m.uid)

    def own_expunge(self, uids: Iterable[int]) -> None:
        for uid in uids:
            if uid in self.flags:
                self.pending_expunges.add(uid)

    def new_keywords(self) -> set[str]:
        """Keywords that appeared since the last FLAGS response (RFC 9051 §7.3.5: the
        client must hear of them before it sees them on a message)."""
        fresh = {f for flags in self.flags.values() for f in flags if not f.startswith("\\")}
        fresh -= self.keywords
        self.keywords |= fresh
        return fresh

    def flags_response(self) -> Data:
        return builders.flags_data([*SYSTEM_FLAGS, *sorted(self.keywords)])

    def flush(self, *, expunges_allowed: bool, qresync: bool, with_uid: bool,
              ) -> list[Data]:
        """The untagged responses that bring the client up to date, in the order RFC 9051
        §7.5.1 needs: expunges first (if allowed here), then EXISTS, then flag changes."""
        out: list[Data] = []
        if self.new_keywords():
            out.append(self.flags_response())
        if expunges_allowed and self.pending_expunges:
            gone = self.pending_expunges
            if qresync:
                out.append(builders.vanished_data(gone))
            else:
                # Highest first: each EXPUNGE then names a number that is still valid.
                for uid in sorted(gone, reverse=True):
                    seq = self.seq_of(uid)
                    if seq is not None:
                        out.append(builders.expunge_data(seq))
            self.uids = [u for u in self.uids if u not in gone]
            for uid in gone:
                self.flags.pop(uid, None)
                self.modseqs.pop(uid, None)
                self.pending_fetch.discard(uid)
            self.pending_expunges = set()
            self.reported_exists = len(self.uids)
        if len(self.uids) != self.reported_exists:
            if len(self.uids) > self.reported_exists:
                out.append(builders.exists_data(len(self.uids)))
            self.reported_exists = len(self.uids)
        if self.pending_fetch:
            for uid in sorted(self.pending_fetch):
                seq = self.seq_of(uid)
                if seq is None or uid in self.pending_expunges:
                    continue
                fr = builders.FetchResponse(seq)
                if with_uid:
                    fr.uid(uid)
                fr.flags(ordered(self.flags[uid]))
                if self.condstore:
                    fr.modseq(self.modseqs[uid])
                out.append(fr.to_data())
            self.pending_fetch = set()
        return out

    def pending(self) -> bool:
        return bool(self.pending_expunges or self.pending_fetch
                    or len(self.uids) != self.reported_exists)
