"""SEARCH evaluation (RFC 9051 §6.4.4; RFC 4731 ESEARCH; RFC 5182 SEARCHRES; RFC 7162
§3.1.5 MODSEQ).

Keys on index data (flags, size, internal date, UID and sequence sets, MODSEQ) are
evaluated here from the rows; keys on content (header fields, BODY, TEXT, SENT* dates) are
sent to the store as `TextQuery` values, which answers them with UID sets — from its full-text
index when it has one, else by reading the files in a worker thread.  When the criteria are
a conjunction, the cheap keys are evaluated first and only the messages they leave are
searched for content, so `SEEN FROM x` never opens the unread mail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from kittiwake.imap.types import (
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
)
from kittiwake.imapserver.selected import SelectedMailbox
from kittiwake.store import search as content
from kittiwake.store.imapstore import ImapStore
from kittiwake.store.imaptypes import MessageData

_HEADER_KEYS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc", "SUBJECT": "subject"}
_SENT_OPS = {"SENTBEFORE": "before", "SENTON": "on", "SENTSINCE": "since"}


@dataclass(frozen=True, slots=True)
class Result:
    uids: list[int]  # ascending
    modseq: int | None  # highest modseq of the matches when MODSEQ was a key


def _content_query(key: SearchKey) -> content.TextQuery | None:
    if isinstance(key, SearchText):
        if key.field in _HEADER_KEYS:
            return content.HeaderMatch(_HEADER_KEYS[key.field], key.value)
        return content.BodyMatch(key.value, with_headers=key.field == "TEXT")
    if isinstance(key, SearchHeader):
        return content.HeaderMatch(key.name.lower(), key.value)
    if isinstance(key, SearchDate) and key.kind in _SENT_OPS:
        return content.SentDate(_SENT_OPS[key.kind], key.date)
    return None


def _leaves(key: SearchKey, out: list[SearchKey]) -> None:
    if isinstance(key, SearchAnd):
        for k in key.keys:
            _leaves(k, out)
    elif isinstance(key, SearchOr):
        _leaves(key.left, out)
        _leaves(key.right, out)
    elif isinstance(key, SearchNot):
        _leaves(key.key, out)
    elif _content_query(key) is not None:
        out.append(key)


def _any_key(key: SearchKey, test: Callable[[SearchKey], bool]) -> bool:
    """Whether any leaf of the search program passes `test`."""
    if isinstance(key, SearchAnd):
        return any(_any_key(k, test) for k in key.keys)
    if isinstance(key, SearchOr):
        return _any_key(key.left, test) or _any_key(key.right, test)
    if isinstance(key, SearchNot):
        return _any_key(key.key, test)
    return test(key)


def uses_modseq(key: SearchKey) -> bool:
    return _any_key(key, lambda k: isinstance(k, SearchModSeq))


class _Evaluator:
    def __init__(self, view: SelectedMailbox, saved: Sequence[int],
                 found: dict[int, set[int]]) -> None:
        self.view = view
        self.saved = set(saved)
        self.found = found  # id(content key) -> matching UIDs
        self.count = len(view.uids)
        self.largest_uid = view.uids[-1] if view.uids else 0
        # Sequence sets resolved once per key, not once per message (see matcher).
        self._sets: dict[int, Callable[[int], bool]] = {}

    def match(self, key: SearchKey, m: MessageData, seq: int) -> bool:
        if isinstance(key, SearchAll):
            return True
        if isinstance(key, SearchAnd):
            return all(self.match(k, m, seq) for k in key.keys)
        if isinstance(key, SearchOr):
            return self.match(key.left, m, seq) or self.match(key.right, m, seq)
        if isinstance(key, SearchNot):
            return not self.match(key.key, m, seq)
        if isinstance(key, SearchFlag):
            if key.flag.lower() == "\\recent":
                return not key.present  # IMAP4rev2: no message is ever \Recent
            has = key.flag.lower() in {f.lower() for f in m.flags}
            return has == key.present
        if isinstance(key, SearchSize):
            return m.size > key.size if key.larger else m.size < key.size
        if isinstance(key, SearchSet):
            if key.set.saved:
                return m.uid in self.saved
            member = self._sets.get(id(key))
            if member is None:
                member = key.set.matcher(self.largest_uid if key.uid else self.count)
                self._sets[id(key)] = member
            return member(m.uid if key.uid else seq)
        if isinstance(key, SearchModSeq):
            return m.modseq >= key.modseq
        if isinstance(key, SearchDate):
            if key.kind in _SENT_OPS:
                return m.uid in self.found.get(id(key), set())
            day = datetime.fromtimestamp(m.internaldate).astimezone().date()
            if key.kind == "BEFORE":
                return day < key.date
            if key.kind == "ON":
                return day == key.date
            return day >= key.date
        return m.uid in self.found.get(id(key), set())


def _needs_rows(key: SearchKey) -> bool:
    """Whether evaluation needs the index rows (else the view's UIDs are enough)."""
    return _any_key(key, lambda k: isinstance(k, SearchFlag | SearchSize | SearchModSeq) or (
        isinstance(k, SearchDate) and k.kind not in _SENT_OPS))


async def search(store: ImapStore, view: SelectedMailbox, criteria: SearchKey,
                 saved: Sequence[int]) -> Result:
    live = ([u for u in view.uids if u not in view.pending_expunges]
            if view.pending_expunges else view.uids)
    query = _content_query(criteria)
    if query is not None:  # one content key (UID SEARCH FROM x): no rows, no evaluation
        (hits,) = await store.search(view.handle, live, [query])
        return Result(sorted(hits), None)
    if _needs_rows(criteria):
        rows = await store.message_data(view.handle, live, structure=False)
    else:  # UIDs, sequence numbers and content only: no need to read the rows
        rows = [MessageData(u, frozenset(), 0.0, 0, 0, None, "") for u in live]
    seqs = {uid: n for n, uid in enumerate(view.uids, 1)}
    text_keys: list[SearchKey] = []
    _leaves(criteria, text_keys)
    found: dict[int, set[int]] = {}
    ev = _Evaluator(view, saved, found)
    if text_keys:
        candidates = rows
        if isinstance(criteria, SearchAnd):
            # Narrow by the cheap conjuncts first; content keys only see what is left.
            cheap = [k for k in criteria.keys if not _has_content(k)]
            if cheap:
                candidates = [r for r in rows
                              if all(ev.match(k, r, seqs[r.uid]) for k in cheap)]
        queries = [q for k in text_keys if (q := _content_query(k)) is not None]
        results = await store.search(view.handle, [r.uid for r in candidates], queries)
        for key, uids in zip(text_keys, results, strict=True):
            found[id(key)] = uids
    matched = [r for r in rows if ev.match(criteria, r, seqs[r.uid])]
    modseq = max((r.modseq for r in matched), default=None) if uses_modseq(criteria) else None
    return Result([r.uid for r in matched], modseq)


def _has_content(key: SearchKey) -> bool:
    out: list[SearchKey] = []
    _leaves(key, out)
    return bool(out)
