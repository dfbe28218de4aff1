"""SEARCH arguments: RETURN options, CHARSET and search keys (RFC 9051 §6.4.4 and its
``search-key`` grammar; RFC 3501 NEW/OLD/RECENT for rev1 clients; RFC 4731 ESEARCH
return options; RFC 5182 ``$``; RFC 7162 §3.1.5 MODSEQ).

Keys nest (NOT, OR, parentheses); each level counts against the cursor's nesting limit
so that ``NOT NOT NOT ...`` cannot exhaust the recursion here or in the evaluator.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

from kittiwake.imap.lexer import MAX_NUMBER64, Bad, Cursor, decode_text
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

__all__ = ["RETURN_OPTIONS", "parse_return_options", "parse_search_program"]

#: RFC 4731 §3.1 (MIN MAX ALL COUNT) and RFC 5182 §2 (SAVE).
RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})

_FLAG_KEYS: dict[str, tuple[str, bool]] = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
    # RFC 3501 §6.4.4; gone from IMAP4rev2 where \Recent is never set, harmless to keep.
    "RECENT": ("\\Recent", True), "OLD": ("\\Recent", False),
}
_TEXT_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_DATE_KEYS = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
_ENTRY_TYPES = frozenset({"PRIV", "SHARED", "ALL"})  # RFC 7162 entry-type-req


def parse_return_options(cur: Cursor) -> frozenset[str]:
    """``RETURN (opt ...)`` after the RETURN keyword and its space."""
    cur.char(b"(")
    options: set[str] = set()
    if not cur.try_char(b")"):
        while True:
            option = cur.keyword()
            if option not in RETURN_OPTIONS:
                raise Bad(f"unknown SEARCH RETURN option {option}")
            options.add(option)
            if cur.try_char(b")"):
                break
            cur.sp()
    return frozenset(options)


def parse_search_program(cur: Cursor) -> tuple[SearchKey, str | None, bool]:
    """``["CHARSET" SP charset SP] search-key *(SP search-key)``.

    Returns the criteria (one key, or SearchAnd of several), the charset named (upper
    case) and whether Python can decode it.  Strings are decoded with the charset when
    it is known, else as UTF-8 with replacement so the parse still succeeds and the
    session can answer NO [BADCHARSET] rather than BAD (RFC 9051 §6.4.4).
    """
    charset: str | None = None
    known = True
    if cur.peek_upper(b"CHARSET "):
        cur.keyword()
        cur.sp()
        charset = cur.astring().decode("ascii", "replace").upper()
        try:
            codecs.lookup(charset)
        except LookupError:
            known = False
        cur.sp()

    def text() -> str:
        raw = cur.astring()
        if not known:
            return raw.decode("utf-8", "replace")
        return decode_text(raw, charset)

    keys = [_key(cur, text)]
    while not cur.at_end():
        cur.sp()
        keys.append(_key(cur, text))
    criteria = keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
    return criteria, charset, known


def _key(cur: Cursor, text: Callable[[], str]) -> SearchKey:
    ch = cur.peek()
    if ch == 0x28:  # "(" search-key *(SP search-key) ")"
        cur.pos += 1
        cur.enter()
        keys = [_key(cur, text)]
        while not cur.try_char(b")"):
            cur.sp()
            keys.append(_key(cur, text))
        cur.leave()
        return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
    if ch >= 0 and ch in b"0123456789*$":
        return SearchSet(cur.sequence_set())
    name = cur.keyword()
    if name == "ALL":
        return SearchAll()
    flag = _FLAG_KEYS.get(name)
    if flag is not None:
        return SearchFlag(*flag)
    if name == "NEW":  # RFC 3501: "equivalent to (RECENT UNSEEN)"
        return SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False)))
    cur.sp()
    if name in _TEXT_KEYS:
        return SearchText(name, text())
    if name in _DATE_KEYS:
        return SearchDate(name, cur.date())
    if name in ("KEYWORD", "UNKEYWORD"):
        return SearchFlag(cur.flag(system=False), name == "KEYWORD")
    if name == "HEADER":
        field = decode_text(cur.astring())
        cur.sp()
        return SearchHeader(field, text())
    if name in ("LARGER", "SMALLER"):
        return SearchSize(name == "LARGER", cur.number(MAX_NUMBER64))
    if name == "UID":
        return SearchSet(cur.sequence_set(), uid=True)
    if name == "NOT":
        cur.enter()
        key = _key(cur, text)
        cur.leave()
        return SearchNot(key)
    if name == "OR":
        cur.enter()
        left = _key(cur, text)
        cur.sp()
        right = _key(cur, text)
        cur.leave()
        return SearchOr(left, right)
    if name == "MODSEQ":
        return _modseq(cur)
    raise Bad(f"unknown search key {name}")


def _modseq(cur: Cursor) -> SearchModSeq:
    """``MODSEQ [entry-name SP entry-type-req SP] mod-sequence-valzer`` (RFC 7162 §3.1.5);
    the entry name is a quoted ``/flags/<flag>``."""
    entry: str | None = None
    entry_type: str | None = None
    if cur.peek() == 0x22:
        entry = decode_text(cur.quoted())
        cur.sp()
        entry_type = cur.keyword()
        if entry_type not in _ENTRY_TYPES:
            raise Bad("MODSEQ entry type must be priv, shared or all")
        cur.sp()
    return SearchModSeq(cur.number(MAX_NUMBER64), entry, entry_type)
