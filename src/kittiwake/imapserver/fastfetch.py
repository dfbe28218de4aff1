"""The fast path of FETCH: items answered from one index query per batch, rendered straight
to bytes (RFC 9051 §7.5.2 syntax, the same octets `fetching.render` produces).

FETCH 1:* (FLAGS), (ENVELOPE BODYSTRUCTURE) and (BODY.PEEK[HEADER.FIELDS (...)]) over a
whole mailbox are what clients send when they open one, so they decide how fast a
mailbox "opens".  Here they cost one SQL query (messages joined with the indexer's
`imap_cache`) and a few bytes operations per message: flags come as the index stores them
(already in canonical order), structures pre-formatted, header fields cut from the cached
header block.  Anything else, or a message the indexer has not reached, goes the general
way (fetching.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from kittiwake.imap.builders import format_internaldate
from kittiwake.imap.types import Attr, BodySection, FetchItem
from kittiwake.store.imapcache import (
    BODY,
    BODYSTRUCTURE,
    ENVELOPE,
    FLAGS,
    HEADER,
    INTERNALDATE,
    MODSEQ,
    SIZE,
    UID,
    FastRow,
    within_common,
)
from kittiwake.store.imapcache import header_fields as _header_fields

Part = Callable[[FastRow], bytes]

_SIMPLE = frozenset({Attr.FLAGS, Attr.UID, Attr.INTERNALDATE, Attr.RFC822_SIZE, Attr.MODSEQ})
_CACHED = frozenset({Attr.ENVELOPE, Attr.BODY, Attr.BODYSTRUCTURE, Attr.RFC822_HEADER})
_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


def eligible(items: Sequence[FetchItem]) -> bool:
    return all(i in _SIMPLE or i in _CACHED or (
        isinstance(i, BodySection) and not i.section.part and i.section.text in _HEADER_TEXTS)
        for i in items)


def needs_structures(items: Sequence[FetchItem]) -> bool:
    return any(i in (Attr.ENVELOPE, Attr.BODY, Attr.BODYSTRUCTURE) for i in items)


def flags_only(items: Sequence[FetchItem]) -> bool:
    """Whether FLAGS is the only index column the items need (UID is always there)."""
    return Attr.FLAGS in items and all(i in (Attr.FLAGS, Attr.UID) for i in items)


def needs_index(items: Sequence[FetchItem]) -> bool:
    """Whether an index column (flags, date, size, modseq) is asked for; UID is not one."""
    return any(i in _SIMPLE and i is not Attr.UID for i in items)


def header_column(items: Sequence[FetchItem]) -> str | None:
    """Which cached header the items need: none, the common fields' lines (when every
    header item is HEADER.FIELDS within them), or the whole header."""
    wanted = [i for i in items if i is Attr.RFC822_HEADER or isinstance(i, BodySection)]
    if not wanted:
        return None
    if all(isinstance(i, BodySection) and i.section.text == "HEADER.FIELDS"
           and within_common(i.section.fields) for i in wanted):
        return "common"
    return "header"


def _literal(data: bytes) -> bytes:
    if b"\x00" in data:  # as fetching._body_data: NUL cannot be in a literal
        data = data.replace(b"\x00", b"\x80")
    return b"{%d}\r\n%s" % (len(data), data)


def _date(ts: float) -> bytes:
    return format_internaldate(datetime.fromtimestamp(ts).astimezone()).encode("ascii")


def _section(item: BodySection) -> Part:
    name = item.response_name.encode("ascii") + b" "
    section = item.section
    partial = item.partial

    def data(row: FastRow) -> bytes:
        header = row[HEADER] or b""
        if section.text == "HEADER":
            out = header
        else:
            out = _header_fields(header, section.fields, section.text == "HEADER.FIELDS.NOT",
                                 bounded=True)
        if partial is not None:
            out = out[partial.origin : partial.origin + partial.length]
        return name + _literal(out)

    return data


def _part(item: FetchItem) -> Part:
    if item is Attr.FLAGS:
        return lambda r: b"FLAGS (" + r[FLAGS].encode() + b")"
    if item is Attr.UID:
        return lambda r: b"UID %d" % r[UID]
    if item is Attr.INTERNALDATE:
        return lambda r: b"INTERNALDATE " + _date(r[INTERNALDATE])
    if item is Attr.RFC822_SIZE:
        return lambda r: b"RFC822.SIZE %d" % r[SIZE]
    if item is Attr.MODSEQ:
        return lambda r: b"MODSEQ (%d)" % r[MODSEQ]
    if item is Attr.ENVELOPE:
        return lambda r: b"ENVELOPE " + (r[ENVELOPE] or b"")
    if item is Attr.BODYSTRUCTURE:
        return lambda r: b"BODYSTRUCTURE " + (r[BODYSTRUCTURE] or b"")
    if item is Attr.BODY:
        return lambda r: b"BODY " + (r[BODY] or b"")
    if item is Attr.RFC822_HEADER:
        return lambda r: b"RFC822.HEADER " + _literal(r[HEADER] or b"")
    assert isinstance(item, BodySection)
    return _section(item)


class Renderer:
    """Renders FETCH responses for one command's items."""

    def __init__(self, items: Sequence[FetchItem], *, with_uid: bool, modseq: bool) -> None:
        parts: list[Part] = []
        if with_uid and Attr.UID not in items:
            parts.append(_part(Attr.UID))
        self._flags_part = _part(Attr.FLAGS)
        self._has_flags = Attr.FLAGS in items
        self._leading = len(parts)
        parts += [_part(i) for i in items]
        if modseq and Attr.MODSEQ not in items:
            parts.append(_part(Attr.MODSEQ))
        self._parts = parts
        self._uid_flags = list(items) in ([Attr.FLAGS], [Attr.UID, Attr.FLAGS]) and with_uid and (
            not modseq)

    def render(self, seq: int, row: FastRow, *, flags_changed: bool = False) -> bytes:
        if self._uid_flags and not flags_changed:  # UID FETCH n:m (FLAGS): the hot one
            return b"* %d FETCH (UID %d FLAGS (%s))\r\n" % (seq, row[UID], row[FLAGS].encode())
        parts = [p(row) for p in self._parts]
        if flags_changed and not self._has_flags:
            parts.insert(self._leading, self._flags_part(row))
        return b"* %d FETCH (%s)\r\n" % (seq, b" ".join(parts))
