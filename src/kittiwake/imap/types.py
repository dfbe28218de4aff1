"""Values that IMAP commands carry: sequence sets, FETCH items and sections, SEARCH keys
(RFC 9051 §9 grammar; RFC 3501 for IMAP4rev1 compatibility; RFC 7162 CONDSTORE/QRESYNC;
RFC 5182 search result references; RFC 3516 BINARY).

They are frozen values so a parsed command can be logged, compared in tests and handed to
the store without anyone mutating it underneath the session.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date

__all__ = [
    "STAR",
    "SYSTEM_FLAGS",
    "Attr",
    "BinarySection",
    "BinarySize",
    "BodySection",
    "FetchItem",
    "Partial",
    "QResync",
    "SearchAll",
    "SearchAnd",
    "SearchDate",
    "SearchFlag",
    "SearchHeader",
    "SearchKey",
    "SearchModSeq",
    "SearchNot",
    "SearchOr",
    "SearchSet",
    "SearchSize",
    "SearchText",
    "Section",
    "SequenceSet",
    "StoreMode",
]

#: ``*`` in a sequence set: "the largest number in use" (RFC 9051 §9, seq-number). Stored as
#: 0 because valid message numbers and UIDs are nz-number (>= 1), so 0 never clashes.
STAR = 0

#: RFC 9051 §2.3.2 system flags in their canonical spelling, keyed by lower case: flags are
#: case-insensitive, and one spelling keeps the store and client caches simple.
SYSTEM_FLAGS: dict[str, str] = {
    f.lower(): f
    for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")
}


# --------------------------------------------------------------------------- sequence sets


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence-set as sent: ranges with endpoints in either order, ``STAR`` for ``*``.

    ``saved`` is the RFC 5182 ``$`` reference to the last SEARCH RETURN (SAVE) result; such
    a set has no ranges and the session substitutes the saved UIDs. Ranges are kept as
    sent (not merged) so the set prints back as the client wrote it; :meth:`resolve` gives
    the normalised form against the mailbox's current largest number.
    """

    ranges: tuple[tuple[int, int], ...] = ()
    saved: bool = False

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SequenceSet:
        """The compressed set for some numbers: ``1,2,3,5`` becomes ``1:3,5``."""
        ranges: list[tuple[int, int]] = []
        for n in sorted(set(numbers)):
            if ranges and ranges[-1][1] == n - 1:
                ranges[-1] = (ranges[-1][0], n)
            else:
                ranges.append((n, n))
        return cls(tuple(ranges))

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive ranges with ``*`` replaced by ``largest``.

        RFC 9051 §9 (seq-range): ``4:2`` is ``2:4``, and ``*`` is the largest number in use
        — so with ``largest`` 10, ``15:*`` means ``10:15`` and contains 10. Numbers above
        ``largest`` stay in: the caller intersects with what exists (a UID set may name
        UIDs that are gone).
        """
        spans = sorted(
            (min(lo, hi), max(lo, hi))
            for a, b in self.ranges
            for lo, hi in [(largest if a == STAR else a, largest if b == STAR else b)]
        )
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return merged

    def contains(self, number: int, largest: int) -> bool:
        return self.matcher(largest)(number)

    def matcher(self, largest: int) -> Callable[[int], bool]:
        """`contains` for testing many numbers: the set is resolved once, each test is a
        binary search.  A set may have thousands of ranges, and resolving it sorts them,
        so `contains` per message of a large mailbox would be quadratic."""
        ranges = self.resolve(largest)
        starts = [lo for lo, _ in ranges]

        def member(number: int) -> bool:
            i = bisect.bisect_right(starts, number) - 1
            return i >= 0 and number <= ranges[i][1]

        return member

    def iter(self, largest: int) -> Iterator[int]:
        """Every number of the set, ascending, capped at ``largest`` (message numbers)."""
        for lo, hi in self.resolve(largest):
            yield from range(max(lo, 1), min(hi, largest) + 1)

    def __str__(self) -> str:
        if self.saved:
            return "$"

        def one(n: int) -> str:
            return "*" if n == STAR else str(n)

        return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.ranges)


def missing_ranges(present: Iterable[int], upto: int) -> list[tuple[int, int]]:
    """The ranges of 1..`upto` not in `present` (ascending): the UIDs a QRESYNC client is
    told have vanished when the server no longer knows which expunges it missed."""
    out: list[tuple[int, int]] = []
    prev = 0
    for n in present:
        if n > upto:
            break
        if n > prev + 1:
            out.append((prev + 1, n - 1))
        prev = max(prev, n)
    if prev < upto:
        out.append((prev + 1, upto))
    return out


def intersect_ranges(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Two sorted lists of disjoint inclusive ranges, intersected."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


# --------------------------------------------------------------------------- FETCH


class Attr(enum.Enum):
    """FETCH data items without arguments (RFC 9051 §6.4.5; RFC 3501 RFC822.*; RFC 7162
    MODSEQ). The value is the item's name in requests and responses."""

    FLAGS = "FLAGS"
    INTERNALDATE = "INTERNALDATE"
    RFC822_SIZE = "RFC822.SIZE"
    ENVELOPE = "ENVELOPE"
    BODY = "BODY"  # the non-extensible BODYSTRUCTURE
    BODYSTRUCTURE = "BODYSTRUCTURE"
    UID = "UID"
    MODSEQ = "MODSEQ"
    RFC822 = "RFC822"  # = BODY[] (sets \Seen), reported as RFC822
    RFC822_HEADER = "RFC822.HEADER"  # = BODY.PEEK[HEADER]
    RFC822_TEXT = "RFC822.TEXT"  # = BODY[TEXT] (sets \Seen)


@dataclass(frozen=True, slots=True)
class Partial:
    """``<origin.length>`` (RFC 9051 §6.4.5): octets from ``origin``, at most ``length``."""

    origin: int
    length: int


@dataclass(frozen=True, slots=True)
class Section:
    """A BODY section spec (RFC 9051 §6.4.5).

    ``part`` is the part number path (``(1, 2)`` for ``1.2``; empty for the message);
    ``text`` one of ``""``, ``HEADER``, ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT``, ``TEXT``,
    ``MIME``; ``fields`` the header names for the HEADER.FIELDS forms, as sent — the
    response must echo the section so that the client can match it.
    """

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        spec = ".".join(str(n) for n in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(_astring_text(f) for f in self.fields) + ")"
        return spec


def _astring_text(value: str) -> str:
    """A header field name for echoing a section: an atom when it is one, else quoted.
    (Field names are printable ASCII without ':' by RFC 5322 §3.6.8.)"""
    if value and all(c.isascii() and c.isprintable() and c not in ' (){%*"\\]' for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class BodySection:
    """``BODY[section]<partial>`` or ``BODY.PEEK[...]`` (peek: do not set \\Seen)."""

    section: Section
    partial: Partial | None = None
    peek: bool = False

    @property
    def response_name(self) -> str:
        """The item name in the FETCH response: ``BODY[section]`` plus ``<origin>`` for a
        partial fetch; never ``.PEEK`` (RFC 9051 §7.5.2)."""
        name = f"BODY[{self.section}]"
        return f"{name}<{self.partial.origin}>" if self.partial else name


@dataclass(frozen=True, slots=True)
class BinarySection:
    """``BINARY[part]<partial>`` / ``BINARY.PEEK[...]`` (RFC 3516 §4.1; RFC 9051 §6.4.5):
    the part's content with its Content-Transfer-Encoding removed."""

    part: tuple[int, ...] = ()
    partial: Partial | None = None
    peek: bool = False

    @property
    def response_name(self) -> str:
        name = "BINARY[" + ".".join(str(n) for n in self.part) + "]"
        return f"{name}<{self.partial.origin}>" if self.partial else name


@dataclass(frozen=True, slots=True)
class BinarySize:
    """``BINARY.SIZE[part]`` (RFC 3516 §4.2): the decoded size of a part."""

    part: tuple[int, ...] = ()

    @property
    def response_name(self) -> str:
        return "BINARY.SIZE[" + ".".join(str(n) for n in self.part) + "]"


FetchItem = Attr | BodySection | BinarySection | BinarySize


class StoreMode(enum.Enum):
    """STORE's FLAGS (replace), +FLAGS (add) or -FLAGS (remove) (RFC 9051 §6.4.6)."""

    REPLACE = ""
    ADD = "+"
    REMOVE = "-"


@dataclass(frozen=True, slots=True)
class QResync:
    """SELECT/EXAMINE ``(QRESYNC (uidvalidity modseq [known-uids] [seq-match-data]))``
    (RFC 7162 §3.2.5). ``known_uids`` and the match pair may be absent."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    known_sequence: SequenceSet | None = None  # seq-match-data: message numbers ...
    known_sequence_uids: SequenceSet | None = None  # ... and their UIDs


# --------------------------------------------------------------------------- SEARCH


@dataclass(frozen=True, slots=True)
class SearchAll:
    """ALL."""


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """A flag test: ANSWERED/UNANSWERED, DELETED, DRAFT, FLAGGED, SEEN, RECENT/OLD and
    KEYWORD/UNKEYWORD all become ``(flag, present)``; NEW is RECENT and UNSEEN."""

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class SearchText:
    """BCC, BODY, CC, FROM, SUBJECT, TEXT, TO: substring (case-insensitive) tests
    (RFC 9051 §6.4.4). ``field`` is the key's name in upper case."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """HEADER field-name string; an empty string matches every message with the field."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchDate:
    """BEFORE/ON/SINCE (internal date) and SENTBEFORE/SENTON/SENTSINCE (Date: header);
    RFC 9051 §6.4.4 says both disregard time and timezone."""

    kind: str
    date: date


@dataclass(frozen=True, slots=True)
class SearchSize:
    """LARGER n (``larger``) or SMALLER n: RFC822.SIZE strictly above/below n."""

    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class SearchSet:
    """A bare sequence set (message numbers), or ``UID`` set."""

    set: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """MODSEQ [entry-name entry-type-req] n (RFC 7162 §3.1.5): modseq >= n."""

    modseq: int
    entry: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    """Every key must match: the top-level list and parenthesised groups."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    SearchAll | SearchFlag | SearchText | SearchHeader | SearchDate | SearchSize | SearchSet
    | SearchModSeq | SearchNot | SearchOr | SearchAnd
)
