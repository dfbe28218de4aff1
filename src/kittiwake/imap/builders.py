"""Builders for IMAP untagged data responses (RFC 9051 §7.2-§7.5; RFC 4731 ESEARCH;
RFC 5258/5819 extended LIST and LIST-STATUS; RFC 7162 MODSEQ/VANISHED; RFC 9208 QUOTA;
RFC 2971 ID; RFC 3516 BINARY).

Each returns a :class:`~kittiwake.imap.response.Data`, so every string in a response
goes through the one encoder that picks atom, quoted string, literal or literal8, and
mailbox names through the one that picks modified UTF-7 or UTF-8.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from kittiwake.imap.response import Data, literal, mailbox_name, nstring, quoted, string
from kittiwake.imap.types import Attr, BinarySection, BinarySize, BodySection, SequenceSet

__all__ = [
    "FetchResponse",
    "capability_data",
    "enabled_data",
    "esearch_data",
    "exists_data",
    "expunge_data",
    "flags_data",
    "format_internaldate",
    "id_data",
    "list_data",
    "namespace_data",
    "quota_data",
    "quotaroot_data",
    "recent_data",
    "search_data",
    "sequence_set",
    "status_data",
    "vanished_data",
]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def sequence_set(numbers: Iterable[int]) -> str:
    """The shortest sequence-set for some numbers (sorted, runs collapsed): 1:5,7,9:12."""
    return str(SequenceSet.from_numbers(numbers))


def capability_data(capabilities: Iterable[str]) -> Data:
    return Data(("CAPABILITY " + " ".join(capabilities)).encode("ascii"))


def enabled_data(capabilities: Iterable[str]) -> Data:
    """``* ENABLED`` (RFC 5161 §3.2), listing only what this ENABLE newly turned on."""
    return Data(" ".join(["ENABLED", *capabilities]).encode("ascii"))


def exists_data(count: int) -> Data:
    return Data(b"%d EXISTS" % count)


def recent_data(count: int) -> Data:
    """IMAP4rev1 only (RFC 3501 §7.3.2); IMAP4rev2 has no \\Recent."""
    return Data(b"%d RECENT" % count)


def expunge_data(number: int) -> Data:
    return Data(b"%d EXPUNGE" % number)


def vanished_data(uids: Iterable[int] | SequenceSet, *, earlier: bool = False) -> Data:
    """``* VANISHED [(EARLIER)] uid-set`` (RFC 7162 §3.2.10) replaces EXPUNGE for QRESYNC
    clients."""
    text = str(uids) if isinstance(uids, SequenceSet) else sequence_set(uids)
    return Data(("VANISHED " + ("(EARLIER) " if earlier else "") + text).encode("ascii"))


def flags_data(flags: Iterable[str]) -> Data:
    return Data(("FLAGS (" + " ".join(flags) + ")").encode("ascii"))


def search_data(numbers: Iterable[int], modseq: int | None = None) -> Data:
    """``* SEARCH n...`` (RFC 3501 §7.2.5), with ``(MODSEQ n)`` when the search used MODSEQ
    (RFC 7162 §3.1.5) and found something."""
    parts = ["SEARCH", *(str(n) for n in numbers)]
    if modseq is not None and len(parts) > 1:
        parts.append(f"(MODSEQ {modseq})")
    return Data(" ".join(parts).encode("ascii"))


def esearch_data(tag: str | None, *, uid: bool = False, min: int | None = None,
                 max: int | None = None, all: Iterable[int] | SequenceSet | None = None,
                 count: int | None = None, modseq: int | None = None) -> Data:
    """``* ESEARCH (TAG "t") [UID] MIN n MAX n ALL set COUNT n MODSEQ n`` (RFC 4731 §3.1;
    RFC 9051 §7.3.4). MIN/MAX/ALL are left out when nothing matched, COUNT never is."""
    parts = ["ESEARCH"]
    if tag is not None:
        parts.append("(TAG " + quoted(tag.encode("ascii", "replace")).decode("ascii") + ")")
    if uid:
        parts.append("UID")
    if min is not None:
        parts.append(f"MIN {min}")
    if max is not None:
        parts.append(f"MAX {max}")
    if all is not None:
        text = str(all) if isinstance(all, SequenceSet) else sequence_set(all)
        if text:
            parts.append(f"ALL {text}")
    if count is not None:
        parts.append(f"COUNT {count}")
    if modseq is not None:
        parts.append(f"MODSEQ {modseq}")
    return Data(" ".join(parts).encode("ascii"))


def _delimiter(delimiter: str | None) -> bytes:
    return b"NIL" if delimiter is None else quoted(delimiter.encode("utf-8"))


def list_data(name: str, delimiter: str | None, attributes: Iterable[str] = (), *,
              utf8: bool = False, childinfo: Sequence[str] = (), oldname: str | None = None,
              command: str = "LIST") -> Data:
    """``* LIST (attrs) "/" name [extended-data]`` (RFC 9051 §7.3.1; ``command="LSUB"``
    for RFC 3501 LSUB). ``childinfo`` gives RFC 5258 §3.5 CHILDINFO, ``oldname`` the
    RFC 9051 OLDNAME extended item."""
    head = f"{command} ({' '.join(attributes)}) ".encode("ascii")
    out = head + _delimiter(delimiter) + b" " + mailbox_name(name, utf8=utf8)
    extended: list[bytes] = []
    if childinfo:
        extended.append(b'"CHILDINFO" (' + b" ".join(quoted(c.encode("ascii"))
                                                       for c in childinfo) + b")")
    if oldname is not None:
        extended.append(b'"OLDNAME" (' + mailbox_name(oldname, utf8=utf8) + b")")
    if extended:
        out += b" (" + b" ".join(extended) + b")"
    return Data(out)


def status_data(name: str, items: Mapping[str, int] | Sequence[tuple[str, int]], *,
                utf8: bool = False) -> Data:
    """``* STATUS name (MESSAGES n UIDNEXT n ...)`` (RFC 9051 §7.3.5)."""
    pairs = items.items() if isinstance(items, Mapping) else items
    body = " ".join(f"{k} {v}" for k, v in pairs).encode("ascii")
    return Data(b"STATUS " + mailbox_name(name, utf8=utf8) + b" (" + body + b")")


def _namespace(spaces: Sequence[tuple[str, str | None]] | None, utf8: bool) -> bytes:
    if not spaces:
        return b"NIL"
    return b"(" + b"".join(b"(" + string(prefix, utf8=utf8) + b" " + _delimiter(delim) + b")"
                           for prefix, delim in spaces) + b")"


def namespace_data(personal: Sequence[tuple[str, str | None]] | None,
                   other: Sequence[tuple[str, str | None]] | None = None,
                   shared: Sequence[tuple[str, str | None]] | None = None, *,
                   utf8: bool = False) -> Data:
    """``* NAMESPACE (("" "/")) NIL NIL`` (RFC 9051 §7.3.2): (prefix, delimiter) lists."""
    return Data(b"NAMESPACE " + b" ".join(_namespace(s, utf8) for s in (personal, other,
                                                                          shared)))


def quota_data(root: str, resources: Iterable[tuple[str, int, int]]) -> Data:
    """``* QUOTA root (STORAGE usage limit ...)`` (RFC 9208 §5.1); STORAGE is in KiB."""
    body = " ".join(f"{name} {usage} {limit}" for name, usage, limit in resources)
    return Data(b"QUOTA " + string(root, utf8=True) + b" (" + body.encode("ascii") + b")")


def quotaroot_data(mailbox: str, roots: Iterable[str], *, utf8: bool = False) -> Data:
    """``* QUOTAROOT mailbox root...`` (RFC 9208 §5.2)."""
    parts = [b"QUOTAROOT", mailbox_name(mailbox, utf8=utf8)]
    parts.extend(string(r, utf8=True) for r in roots)
    return Data(b" ".join(parts))


def id_data(params: Mapping[str, str | None] | None) -> Data:
    """``* ID ("name" "Kittiwake" ...)`` or ``* ID NIL`` (RFC 2971 §3.2)."""
    if not params:
        return Data(b"ID NIL")
    body = b" ".join(string(k, utf8=True) + b" " + nstring(v, utf8=True)
                     for k, v in params.items())
    return Data(b"ID (" + body + b")")


def format_internaldate(when: datetime) -> str:
    """``"17-Jul-1996 02:44:25 -0700"`` (RFC 9051 date-time, date-day-fixed), without the
    locale that strftime's %b would bring in."""
    offset = when.utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (f'"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
            f'{when.hour:02d}:{when.minute:02d}:{when.second:02d} '
            f'{sign}{minutes // 60:02d}{minutes % 60:02d}"')


class FetchResponse:
    """Builds one ``* n FETCH (...)`` response (RFC 9051 §7.5.2), item by item, in the
    order added. ``utf8`` follows the connection's mode (for ENVELOPE etc. the caller
    formats with the same flag)."""

    __slots__ = ("_parts", "_seq", "_utf8")

    def __init__(self, seq: int, *, utf8: bool = False) -> None:
        self._seq = seq
        self._utf8 = utf8
        self._parts: list[bytes] = []

    def add(self, name: str, value: bytes) -> FetchResponse:
        """An item whose value is already IMAP syntax."""
        self._parts.append(name.encode("ascii") + b" " + value)
        return self

    def uid(self, uid: int) -> FetchResponse:
        return self.add("UID", b"%d" % uid)

    def flags(self, flags: Iterable[str]) -> FetchResponse:
        return self.add("FLAGS", ("(" + " ".join(flags) + ")").encode("ascii"))

    def internaldate(self, when: datetime) -> FetchResponse:
        return self.add("INTERNALDATE", format_internaldate(when).encode("ascii"))

    def rfc822_size(self, size: int) -> FetchResponse:
        return self.add("RFC822.SIZE", b"%d" % size)

    def modseq(self, modseq: int) -> FetchResponse:
        return self.add("MODSEQ", b"(%d)" % modseq)  # RFC 7162 §3.1.4.1

    def envelope(self, text: str) -> FetchResponse:
        """ENVELOPE from :func:`kittiwake.message.structure.format_envelope`."""
        return self.add("ENVELOPE", text.encode("utf-8"))

    def bodystructure(self, text: str) -> FetchResponse:
        return self.add("BODYSTRUCTURE", text.encode("utf-8"))

    def body(self, text: str) -> FetchResponse:
        """The non-extensible BODY (from ``format_body``)."""
        return self.add("BODY", text.encode("utf-8"))

    def section(self, item: BodySection, data: bytes | None) -> FetchResponse:
        """``BODY[section]<origin> data``; None (no such part) gives NIL."""
        return self.add(item.response_name, _body_data(data))

    def rfc822(self, attr: Attr, data: bytes | None) -> FetchResponse:
        """RFC822, RFC822.HEADER or RFC822.TEXT (RFC 3501 §6.4.5), named as requested."""
        return self.add(attr.value, _body_data(data))

    def binary(self, item: BinarySection, data: bytes | None) -> FetchResponse:
        """``BINARY[part] data``: a literal8 when the decoded data has NUL (RFC 3516 §4.3;
        only literal8 may carry it), else a plain literal."""
        if data is None:
            return self.add(item.response_name, b"NIL")
        return self.add(item.response_name, literal(data, binary=b"\x00" in data))

    def binary_size(self, item: BinarySize, size: int) -> FetchResponse:
        return self.add(item.response_name, b"%d" % size)

    def to_data(self) -> Data:
        return Data(b"%d FETCH (" % self._seq + b" ".join(self._parts) + b")")

    def to_bytes(self) -> bytes:
        return self.to_data().to_bytes()


def _body_data(data: bytes | None) -> bytes:
    """Message text always goes as a literal: it is the client's to read verbatim. NUL
    cannot be in a literal (CHAR8, RFC 9051 §4.3), so it becomes 0x80 — the length, and so
    RFC822.SIZE and partial offsets, stay right (Dovecot does the same)."""
    if data is None:
        return b"NIL"
    if b"\x00" in data:
        data = data.replace(b"\x00", b"\x80")
    return literal(data)
