"""FETCH data items, sections and modifiers (RFC 9051 §6.4.5 ``fetch-att``, ``section``,
``partial``; RFC 3501 RFC822.*; RFC 3516 BINARY; RFC 7162 MODSEQ, CHANGEDSINCE,
VANISHED).

The macros ALL, FAST and FULL are expanded here (RFC 9051 §6.4.5), so the session only
ever sees the items themselves.
"""

from __future__ import annotations

import re

from kittiwake.imap.lexer import MAX_NUMBER, MAX_NUMBER64, Bad, Cursor, decode_text
from kittiwake.imap.types import (
    Attr,
    BinarySection,
    BinarySize,
    BodySection,
    FetchItem,
    Partial,
    Section,
)

__all__ = ["MACROS", "parse_fetch_items", "parse_fetch_modifiers", "parse_section"]

#: RFC 9051 §6.4.5: the macros, each equivalent to a list of items.
MACROS: dict[str, tuple[FetchItem, ...]] = {
    "ALL": (Attr.FLAGS, Attr.INTERNALDATE, Attr.RFC822_SIZE, Attr.ENVELOPE),
    "FAST": (Attr.FLAGS, Attr.INTERNALDATE, Attr.RFC822_SIZE),
    "FULL": (Attr.FLAGS, Attr.INTERNALDATE, Attr.RFC822_SIZE, Attr.ENVELOPE, Attr.BODY),
}
_SIMPLE = {a.value: a for a in Attr}
_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_TEXT = re.compile(rb"[A-Za-z.]+")
_MSGTEXT = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"})


def parse_fetch_items(cur: Cursor) -> tuple[FetchItem, ...]:
    """``"ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP fetch-att) ")"``.
    Duplicates are dropped: the response carries each item once."""
    items: list[FetchItem] = []
    if cur.try_char(b"("):
        while True:
            item = _fetch_att(cur)
            if item not in items:
                items.append(item)
            if cur.try_char(b")"):
                break
            cur.sp()
        return tuple(items)
    start = cur.pos
    name = _name(cur)
    macro = MACROS.get(name)
    if macro is not None and cur.peek() != 0x5B:
        return macro
    cur.pos = start
    return (_fetch_att(cur),)


def parse_fetch_modifiers(cur: Cursor) -> tuple[int | None, bool]:
    """``"(" fetch-modifier *(SP fetch-modifier) ")"``: CHANGEDSINCE and VANISHED."""
    changed_since: int | None = None
    vanished = False
    cur.char(b"(")
    while True:
        name = cur.keyword()
        if name == "CHANGEDSINCE" and changed_since is None:
            cur.sp()
            changed_since = cur.number(MAX_NUMBER64, nonzero=True)
        elif name == "VANISHED" and not vanished:
            vanished = True
        else:
            raise Bad(f"unknown or repeated FETCH modifier {name}")
        if cur.try_char(b")"):
            return changed_since, vanished
        cur.sp()


def _name(cur: Cursor) -> str:
    m = _NAME.match(cur.line, cur.pos)
    if m is None:
        raise Bad("expected a FETCH item" if not cur.at_end() else "missing arguments")
    cur.pos = m.end()
    return m.group().decode("ascii").upper()


def _fetch_att(cur: Cursor) -> FetchItem:
    name = _name(cur)
    bracket = cur.peek() == 0x5B
    if not bracket:
        simple = _SIMPLE.get(name)
        if simple is not None:
            return simple
        raise Bad(f"unknown FETCH item {name}")
    if name in ("BODY", "BODY.PEEK"):
        section = parse_section(cur)
        return BodySection(section, _partial(cur), peek=name == "BODY.PEEK")
    if name in ("BINARY", "BINARY.PEEK"):
        part = _binary_part(cur)
        return BinarySection(part, _partial(cur), peek=name == "BINARY.PEEK")
    if name == "BINARY.SIZE":
        return BinarySize(_binary_part(cur))
    raise Bad(f"unknown FETCH item {name}")


def parse_section(cur: Cursor) -> Section:
    """``"[" [section-spec] "]"`` (RFC 9051 §6.4.5).

    ``section-spec = section-msgtext / (section-part ["." section-text])``: part numbers
    are nz-numbers joined by dots; MIME needs a part; HEADER.FIELDS[.NOT] takes a
    parenthesised list of field names.
    """
    cur.char(b"[")
    part: list[int] = []
    text = ""
    fields: tuple[str, ...] = ()
    while cur.peek() != 0x5D:
        if part and not cur.try_char(b"."):
            raise Bad("malformed section")
        if 0x30 <= cur.peek() <= 0x39:
            part.append(cur.number(MAX_NUMBER, nonzero=True))
            if len(part) > cur.max_nesting:
                raise Bad("section part too deep", "LIMIT")
            continue
        m = _SECTION_TEXT.match(cur.line, cur.pos)
        if m is None:
            raise Bad("malformed section")
        cur.pos = m.end()
        text = m.group().decode("ascii").upper()
        if text not in _MSGTEXT and not (text == "MIME" and part):
            raise Bad(f"unknown section text {text}")
        if text.startswith("HEADER.FIELDS"):
            cur.sp()
            fields = _header_list(cur)
        break
    cur.char(b"]")
    return Section(tuple(part), text, fields)


def _header_list(cur: Cursor) -> tuple[str, ...]:
    """``"(" header-fld-name *(SP header-fld-name) ")"`` — at least one name."""
    cur.char(b"(")
    names = [decode_text(cur.astring())]
    while not cur.try_char(b")"):
        cur.sp()
        names.append(decode_text(cur.astring()))
    return tuple(names)


def _binary_part(cur: Cursor) -> tuple[int, ...]:
    """``section-binary = "[" [section-part] "]"`` (RFC 3516 §4.1)."""
    cur.char(b"[")
    part: list[int] = []
    if not cur.try_char(b"]"):
        while True:
            part.append(cur.number(MAX_NUMBER, nonzero=True))
            if len(part) > cur.max_nesting:
                raise Bad("section part too deep", "LIMIT")
            if cur.try_char(b"]"):
                break
            cur.char(b".")
    return tuple(part)


def _partial(cur: Cursor) -> Partial | None:
    """``"<" number64 "." nz-number64 ">"`` (RFC 9051 §6.4.5)."""
    if not cur.try_char(b"<"):
        return None
    origin = cur.number(MAX_NUMBER64)
    cur.char(b".")
    length = cur.number(MAX_NUMBER64, nonzero=True)
    cur.char(b">")
    return Partial(origin, length)
