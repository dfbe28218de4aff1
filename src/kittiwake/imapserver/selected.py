"""One session's view of its selected mailbox: message sequence numbers, and the changes
made by others that it has yet to report (RFC 9051 §7.5.1, §2.3.1.2; RFC 7162).

Sequence numbers belong to the session: message n is the n-th UID of *this view*, which
changes only when this session reports it — EXISTS for new messages, EXPUNGE (or VANISHED
with QRESYNC) for removed ones.  Expunges made elsewhere are held as `pending_expunges`
until the session is at a point where RFC 9051 §7.5.1 lets it say so: never while
answering FETCH, STORE or SEARCH (their UID forms are fine) and never between commands.
Until then the message keeps its number; its data may be gone, which FETCH reports as
NO [EXPUNGEISSUED].

The view keeps UIDs only, not each message's flags: the index is the one place flags are
read from (so a 100,000-message mailbox costs a session one list of integers).  What is
new since the view was last brought up to date is everything with a modseq above
`known_modseq`; changes this session made itself are remembered by the modseq the store
gave them (`own`), so the next poll does not echo them back to the client.
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
        "_fresh", "condstore", "gone", "handle", "keywords", "known_modseq", "own",
        "pending_expunges", "pending_fetch", "read_only", "reported_exists", "uidnext",
        "uids",
    )

    def __init__(self, snapshot: Snapshot, *, read_only: bool) -> None:
        self.handle: MailboxHandle = snapshot.handle
        self.read_only = read_only
        self.uids: list[int] = snapshot.uids
        self.known_modseq = snapshot.highestmodseq
        self.uidnext = snapshot.uidnext
        self.pending_expunges: set[int] = set()
        self.pending_fetch: dict[int, MessageState] = {}  # flag changes not yet reported
        self.own: dict[int, int] = {}  # uid -> modseq of this session's own change
        self.reported_exists = len(self.uids)
        self.keywords: set[str] = set(snapshot.keywords)
        self._fresh: set[str] = set()  # keywords seen since the last FLAGS response
        self.condstore = False
        self.gone = False  # this session deleted it: nothing more to learn or report

    # ------------------------------------------------------------------ numbering

    def __len__(self) -> int:
        return len(self.uids)

    def __contains__(self, uid: int) -> bool:
        return self.seq_of(uid) is not None

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def resolve(self, seqset: SequenceSet, *, uid: bool,
                saved: Sequence[int] | None = None) -> list[int]:
        """The UIDs a sequence set names, ascending.  UID sets may name UIDs that do not
        exist (they are skipped, RFC 9051 §6.4.8); message numbers must exist."""
        if seqset.saved:  # RFC 5182 "$": the last SEARCH RETURN (SAVE) result, as UIDs
            return [u for u in (saved or ()) if u in self]
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
        gone = list(changes.expunged)
        if changes.present is not None:  # the expunge records were pruned: compare
            present = set(changes.present)
            gone += [u for u in self.uids if u not in present]
        for uid in gone:
            if uid in self:
                self.pending_expunges.add(uid)
                self.pending_fetch.pop(uid, None)
        new: list[MessageState] = []
        expunged = set(changes.expunged)
        for m in changes.changed:
            if m.uid >= self.uidnext:
                if m.uid not in expunged:
                    new.append(m)
            elif m.uid in self and m.uid not in self.pending_expunges:
                self._note(m.flags)
                if self.own.get(m.uid) != m.modseq:  # not the echo of our own STORE
                    self.pending_fetch[m.uid] = m
        for m in new:
            if self.uids and m.uid <= self.uids[-1]:
                continue  # cannot happen with monotonic UIDs; never renumber
            self.uids.append(m.uid)
            self._note(m.flags)
        self.uidnext = max(self.uidnext, changes.uidnext)
        self.known_modseq = max(self.known_modseq, changes.highestmodseq)
        self.own = {u: ms for u, ms in self.own.items() if ms > self.known_modseq}

    def own_flags(self, states: Iterable[MessageState]) -> None:
        """This session's STORE result: not to be echoed by the next poll."""
        for m in states:
            self.own[m.uid] = m.modseq
            self.pending_fetch.pop(m.uid, None)
            self._note(m.flags)

    def own_expunge(self, uids: Iterable[int]) -> None:
        for uid in uids:
            if uid in self:
                self.pending_expunges.add(uid)
                self.pending_fetch.pop(uid, None)

    def _note(self, flags: frozenset[str]) -> None:
        for f in flags:
            if f not in self.keywords and not f.startswith("\\"):
                self._fresh.add(f)

    def new_keywords(self) -> set[str]:
        """Keywords that appeared since the last FLAGS response (RFC 9051 §7.3.5: the
        client must hear of them before it sees them on a message)."""
        fresh, self._fresh = self._fresh - self.keywords, set()
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
            before = len(self.uids)
            self.uids = [u for u in self.uids if u not in gone]
            self.pending_expunges = set()
            # The client counts one fewer per EXPUNGE (or VANISHED UID); messages that
            # arrived since its last EXISTS are still to be announced below.
            self.reported_exists -= before - len(self.uids)
        if len(self.uids) != self.reported_exists:
            if len(self.uids) > self.reported_exists:
                out.append(builders.exists_data(len(self.uids)))
            self.reported_exists = len(self.uids)
        if self.pending_fetch:
            for uid in sorted(self.pending_fetch):
                seq = self.seq_of(uid)
                if seq is None or uid in self.pending_expunges:
                    continue
                m = self.pending_fetch[uid]
                fr = builders.FetchResponse(seq)
                if with_uid:
                    fr.uid(uid)
                fr.flags(ordered(m.flags))
                if self.condstore:
                    fr.modseq(m.modseq)
                out.append(fr.to_data())
            self.pending_fetch = {}
        return out

    def pending(self) -> bool:
        return bool(self.pending_expunges or self.pending_fetch
                    or len(self.uids) != self.reported_exists)
