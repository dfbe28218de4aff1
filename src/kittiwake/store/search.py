"""SEARCH over message content: header, body and sent-date tests (RFC 9051 §6.4.4).

The session evaluates the cheap keys (flags, sizes, dates, UIDs, MODSEQ) itself from the
index rows; keys that need the message's text come here as `TextQuery` values and are
answered with the set of matching UIDs.  What "contains" means is defined once, here, and
the full-text index (`fts.py`) indexes exactly the same text, so an indexed answer equals a
scan:

* header keys (FROM, TO, CC, BCC, SUBJECT, HEADER name) match a substring of the field's
  value after unfolding and RFC 2047 decoding; HEADER with an empty string matches every
  message that has the field (RFC 9051 §6.4.4);
* BODY matches the text of the message's text/* parts, transfer encoding (base64, quoted-
  printable) and charset decoded, the way a reader sees it; TEXT matches that or the
  decoded header; embedded message/rfc822 parts contribute their header and text;
* comparison is case-insensitive by Unicode case folding (RFC 9051 leaves the method to
  the server; i;unicode-casemap-like behaviour is what clients expect), and runs of white
  space count as one space, so a phrase split by a line break still matches;
* SENTBEFORE/SENTON/SENTSINCE compare the Date: header's own calendar date, disregarding
  time and time zone as RFC 9051 §6.4.4 says; a missing or unparsable Date never matches.
"""

from __future__ import annotations

import binascii
import email.utils
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from kittiwake.message.headers import decode_charset, decode_words, header_bounds, iter_fields
from kittiwake.message.params import get_param
from kittiwake.message.structure import parse_structure
from kittiwake.store import maildir
from kittiwake.store.imaptypes import MessageData

_SPACE = re.compile(r"\s+")
_HEADER_PEEK = 16 * 1024  # header-only keys read this much first


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """A substring of a header field (lower-case name); empty `value`: the field exists."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class BodyMatch:
    """BODY (`with_headers` False) or TEXT (True)."""

    value: str
    with_headers: bool = False


@dataclass(frozen=True, slots=True)
class SentDate:
    """SENTBEFORE ("before"), SENTON ("on"), SENTSINCE ("since")."""

    op: str
    day: date


TextQuery = HeaderMatch | BodyMatch | SentDate


def normalise(text: str) -> str:
    """The form both sides of a comparison are put in: case-folded, white space runs
    collapsed to one space."""
    return _SPACE.sub(" ", text.casefold())


# ---------------------------------------------------------------------------- text of a message


def header_values(header: bytes, name: str) -> list[str]:
    return [normalise(decode_words(v)).strip() for n, v in iter_fields(header) if n == name]


def decoded_header(header: bytes) -> str:
    """Every field as `name: value` lines, decoded: what TEXT searches besides the body."""
    return "\n".join(f"{n}: {normalise(decode_words(v)).strip()}" for n, v in iter_fields(header))


def _decode_body(raw: bytes, node: dict[str, Any]) -> bytes:
    body = raw[node["b"] : node["e"]]
    enc = str(node.get("enc", "7bit")).lower()
    try:
        if enc == "base64":
            return binascii.a2b_base64(body)
        if enc == "quoted-printable":
            return binascii.a2b_qp(body)
    except (binascii.Error, ValueError):
        return body
    return body


def _texts(raw: bytes, node: dict[str, Any], depth: int = 0) -> Iterator[str]:
    """Decoded text of the text/* leaves below `node`; embedded messages add their
    decoded header too (it is part of the outer message's body)."""
    if depth > 60:
        return
    if "parts" in node:
        for part in node["parts"]:
            yield from _texts(raw, part, depth + 1)
        return
    if "msg" in node:
        inner = node["msg"]
        yield decoded_header(raw[inner["h"] : inner["b"]])
        yield from _texts(raw, inner, depth + 1)
        return
    if str(node.get("type", "text")).lower() != "text":
        return
    charset = get_param(node.get("params") or [], "charset") or "utf-8"
    if charset.lower() in ("us-ascii", "ascii"):
        charset = "utf-8"  # 8-bit text labelled ASCII is common; UTF-8 is the best guess
    yield normalise(decode_charset(_decode_body(raw, node), charset))


def body_text(raw: bytes, struct: dict[str, Any] | None = None) -> str:
    struct = struct if struct is not None else parse_structure(raw)
    return "\n".join(_texts(raw, struct))


def full_text(raw: bytes, struct: dict[str, Any] | None = None) -> tuple[str, str]:
    """(decoded header, decoded body text): what the full-text index keeps per message."""
    struct = struct if struct is not None else parse_structure(raw)
    header_end, _ = header_bounds(raw)
    return decoded_header(raw[:header_end]), body_text(raw, struct)


def sent_date(header: bytes) -> date | None:
    values = [v for n, v in iter_fields(header) if n == "date"]
    if not values:
        return None
    try:
        when = email.utils.parsedate_to_datetime(decode_words(values[0]).strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when.date()


# ---------------------------------------------------------------------------- evaluation


def _read_header(path: Path) -> bytes:
    with path.open("rb") as f:
        head = f.read(_HEADER_PEEK)
        end, _ = header_bounds(head)
        if end < len(head):
            return head[:end]
        return head + f.read()


def matches(query: TextQuery, header: bytes, text: Callable[[], tuple[str, str]]) -> bool:
    """One query against one message; `text` gives (decoded header, body) on demand."""
    if isinstance(query, HeaderMatch):
        values = header_values(header, query.name)
        if not query.value:
            return bool(values)
        needle = normalise(query.value)
        return any(needle in v for v in values)
    if isinstance(query, SentDate):
        day = sent_date(header)
        if day is None:
            return False
        if query.op == "before":
            return day < query.day
        if query.op == "on":
            return day == query.day
        return day >= query.day
    needle = normalise(query.value)
    head, body = text()
    return needle in body or (query.with_headers and needle in head)


def scan(folder: Path, messages: Sequence[MessageData],
         queries: Sequence[TextQuery]) -> list[set[int]]:
    """Evaluate every query against every message by reading the files: the reference
    answer, and the fallback for messages the full-text index has not reached yet."""
    found: list[set[int]] = [set() for _ in queries]
    need_body = any(isinstance(q, BodyMatch) for q in queries)
    for m in messages:
        path = maildir.locate(folder, m.filename, m.flags)
        if path is None:
            continue
        try:
            if need_body:
                raw = path.read_bytes()
                header = raw[: header_bounds(raw)[0]]
            else:
                raw = b""
                header = _read_header(path)
        except FileNotFoundError:
            continue
        cache: list[tuple[str, str]] = []

        def text(raw: bytes = raw, cache: list[tuple[str, str]] = cache) -> tuple[str, str]:
            if not cache:
                cache.append(full_text(raw))
            return cache[0]

        for i, q in enumerate(queries):
            if matches(q, header, text):
                found[i].add(m.uid)
    return found
