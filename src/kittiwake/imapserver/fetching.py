"""Rendering FETCH data items for one message (RFC 9051 §6.4.5, §7.5.2; RFC 3501 RFC822.*;
RFC 3516 BINARY; RFC 7162 MODSEQ).

ENVELOPE, BODY and BODYSTRUCTURE come from the structure cached in the index, so they
never need the file; BODY[section] and BINARY need the file's bytes, and the structure only
when a part number or HEADER/TEXT/MIME has to be located.  `Plan` works out once per
command which of the three (row, structure, bytes) the items need, so FETCH FLAGS of a
whole mailbox never touches a file or parses a JSON structure.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kittiwake.imap import builders
from kittiwake.imap.response import Data
from kittiwake.imap.types import (
    Attr,
    BinarySection,
    BinarySize,
    BodySection,
    FetchItem,
    Section,
)
from kittiwake.imapserver.selected import ordered
from kittiwake.message.bodystructure import format_body, format_bodystructure, format_envelope
from kittiwake.message.structure import binary_size, find_part, section_span
from kittiwake.store.imapcache import header_fields as _header_fields
from kittiwake.store.imaptypes import MessageData

_STRUCTURE_ATTRS = frozenset({Attr.ENVELOPE, Attr.BODY, Attr.BODYSTRUCTURE})
_BODY_ATTRS = frozenset({Attr.RFC822, Attr.RFC822_HEADER, Attr.RFC822_TEXT})
_SEEN_ATTRS = frozenset({Attr.RFC822, Attr.RFC822_TEXT})
_TEXT_ATTRS = frozenset({Attr.RFC822_HEADER, Attr.RFC822_TEXT})


class UnknownCte(Exception):
    """BINARY of a part whose Content-Transfer-Encoding we cannot undo (RFC 3516 §4.2:
    NO [UNKNOWN-CTE])."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What the items of one FETCH need, decided once for all its messages."""

    items: tuple[FetchItem, ...]
    structure: bool  # the parsed structure
    body: bool  # the file's bytes
    sets_seen: bool  # a non-PEEK body item: \Seen is set (RFC 9051 §6.4.5)
    modseq: bool

    @classmethod
    def of(cls, items: Sequence[FetchItem], *, modseq: bool) -> Plan:
        structure = body = seen = False
        for item in items:
            if isinstance(item, Attr):
                structure |= item in _STRUCTURE_ATTRS or item in _TEXT_ATTRS
                body |= item in _BODY_ATTRS
                seen |= item in _SEEN_ATTRS
                modseq |= item is Attr.MODSEQ
            elif isinstance(item, BodySection | BinarySection):
                body = True
                structure |= _needs_struct(item)
                seen |= not item.peek
            else:  # BINARY.SIZE: decoded sizes are worked out from the content
                structure |= bool(item.part)
                body = True
        return cls(tuple(items), structure, body, seen, modseq)


def _needs_struct(item: FetchItem) -> bool:
    if isinstance(item, BodySection):
        return bool(item.section.part) or bool(item.section.text)
    if isinstance(item, BinarySection | BinarySize):
        return bool(item.part)
    return False


def internaldate(ts: float) -> datetime:
    return datetime.fromtimestamp(ts).astimezone()


def section_data(raw: bytes, struct: dict[str, Any] | None, section: Section) -> bytes | None:
    """The octets of BODY[section], or None when there is no such part."""
    if not section.part and not section.text:
        return raw
    assert struct is not None
    if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        span = section_span(struct, section.part, "HEADER")
        if span is None:
            return None
        return _header_fields(raw[span[0] : span[1]], section.fields,
                              section.text == "HEADER.FIELDS.NOT")
    span = section_span(struct, section.part, section.text)
    return raw[span[0] : span[1]] if span is not None else None


def _decode(data: bytes, encoding: str) -> bytes:
    enc = encoding.lower()
    if enc in ("7bit", "8bit", "binary"):
        return data
    try:
        if enc == "base64":
            return binascii.a2b_base64(data)
        if enc == "quoted-printable":
            return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        raise UnknownCte("undecodable content") from None
    raise UnknownCte(f"unknown transfer encoding {encoding}")


def binary_data(raw: bytes, struct: dict[str, Any] | None, part: tuple[int, ...]) -> bytes | None:
    """BINARY[part]: a leaf part's content with its transfer encoding undone (RFC 3516
    §4.1); a multipart or message part, or the whole message, as stored."""
    if not part:
        return raw
    assert struct is not None
    node = find_part(struct, part)
    if node is None:
        return None
    content = raw[node["b"] : node["e"]]
    if "parts" in node or "msg" in node:
        return content
    return _decode(content, str(node.get("enc", "7bit")))


def binary_size_of(raw: bytes | None, struct: dict[str, Any] | None,
                   part: tuple[int, ...]) -> int | None:
    if not part:
        return len(raw) if raw is not None else None
    assert struct is not None
    node = find_part(struct, part)
    if node is None:
        return None
    assert raw is not None
    size = binary_size(node, raw)
    if size is None:
        raise UnknownCte("unknown transfer encoding")
    return size


def _partial(data: bytes | None, item: BodySection | BinarySection) -> bytes | None:
    if data is None or item.partial is None:
        return data
    start = item.partial.origin
    return data[start : start + item.partial.length]


def render(seq: int, msg: MessageData, struct: dict[str, Any] | None, raw: bytes | None,
           plan: Plan, *, with_uid: bool, flags_changed: bool, utf8: bool) -> Data:
    """One ``* n FETCH (...)`` response.  `raw` is None when the plan needs no bytes."""
    fr = builders.FetchResponse(seq, utf8=utf8)
    items = plan.items
    if with_uid and Attr.UID not in items:
        fr.uid(msg.uid)  # RFC 9051 §6.4.9: UID FETCH responses always carry UID
    if flags_changed and Attr.FLAGS not in items:
        fr.flags(ordered(msg.flags))  # the implicit \Seen, RFC 9051 §6.4.5
    for item in items:
        if isinstance(item, Attr):
            _attr(fr, item, msg, struct, raw, utf8)
        elif isinstance(item, BodySection):
            assert raw is not None
            fr.section(item, _partial(section_data(raw, struct, item.section), item))
        elif isinstance(item, BinarySection):
            assert raw is not None
            fr.binary(item, _partial(binary_data(raw, struct, item.part), item))
        else:
            size = binary_size_of(raw, struct, item.part)
            fr.add(item.response_name, b"NIL" if size is None else b"%d" % size)
    if plan.modseq and Attr.MODSEQ not in items:
        fr.modseq(msg.modseq)  # RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ
    return fr.to_data()


def _attr(fr: builders.FetchResponse, item: Attr, msg: MessageData,
          struct: dict[str, Any] | None, raw: bytes | None, utf8: bool) -> None:
    if item is Attr.FLAGS:
        fr.flags(ordered(msg.flags))
    elif item is Attr.UID:
        fr.uid(msg.uid)
    elif item is Attr.INTERNALDATE:
        fr.internaldate(internaldate(msg.internaldate))
    elif item is Attr.RFC822_SIZE:
        fr.rfc822_size(msg.size)
    elif item is Attr.MODSEQ:
        fr.modseq(msg.modseq)
    elif item is Attr.ENVELOPE:
        assert struct is not None
        fr.envelope(format_envelope(struct, utf8=utf8))
    elif item is Attr.BODYSTRUCTURE:
        assert struct is not None
        fr.bodystructure(format_bodystructure(struct, utf8=utf8))
    elif item is Attr.BODY:
        assert struct is not None
        fr.body(format_body(struct, utf8=utf8))
    else:
        assert raw is not None
        if item is Attr.RFC822:
            data: bytes | None = raw
        elif item is Attr.RFC822_HEADER:
            assert struct is not None
            data = section_data(raw, struct, Section((), "HEADER"))
        else:
            assert struct is not None
            data = section_data(raw, struct, Section((), "TEXT"))
        fr.rfc822(item, data)
