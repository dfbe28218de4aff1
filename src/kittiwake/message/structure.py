"""MIME structure of a message, parsed once at delivery/APPEND and kept in the index so
IMAP can answer ENVELOPE, BODYSTRUCTURE, BODY[section], BINARY.SIZE without reading the
message again (RFC 9051 §6.4.5, §7.5.2; RFC 3501; RFC 3516).

The parser is a byte scanner: header fields via one regex pass over each (small) header,
multipart bodies split with ``bytes.find`` for the boundary (RFC 2046 §5.1.1).  It
records offsets, never copies of content, so ``raw[node["b"]:node["e"]]`` is exactly a
part's body as sent.  It never raises: malformed input gives a best-effort tree that is
still valid IMAP (RFC 2045 §5.2 defaults, empty placeholder parts, a nesting cap).

Schema (a JSON-serialisable dict; absent optional keys mean "not present"):

node (one MIME entity: the message itself, a body part, an embedded message)
  ``h``, ``b``, ``e``   int offsets into raw: header start, body start, end.
                        ``raw[h:b]`` is the header *with* its empty line, ``raw[b:e]``
                        the body; for a body part the boundary's CRLF is excluded.
  ``type``, ``subtype`` str, as sent (the formatter upper-cases).
  ``params``            ``[[name, value], ...]`` Content-Type parameters, RFC 2231
                        continuations joined (see :mod:`.params`).
  ``id``, ``desc``, ``enc``, ``md5``, ``loc``   Content-ID, -Description,
                        -Transfer-Encoding, -MD5, -Location values (unfolded, trimmed).
  ``disp``              ``[type, params]`` from Content-Disposition.
  ``lang``              ``[tag, ...]`` from Content-Language.
  ``lines``             int, for text/* and message/rfc822|global bodies.
  ``parts``             list of nodes (multipart, always at least one).
  ``msg``               node of the embedded message (message/rfc822 and message/global);
                        its ``h``..``e`` equal this node's ``b``..``e``.
  ``env``               envelope, on message nodes only (the root and every ``msg``):
                        keys date, subject, from, sender, reply_to, to, cc, bcc,
                        in_reply_to, message_id; strings are raw (unfolded) header
                        values, address members lists of ``[name, adl, mailbox, host]``.
root additionally has ``v`` (schema version) — a cached structure with another ``v``
should be re-parsed.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from typing import Any

from kittiwake.message.bodystructure import format_body, format_bodystructure, format_envelope
from kittiwake.message.envelope import ENVELOPE_FIELDS, build_envelope
from kittiwake.message.headers import header_bounds
from kittiwake.message.params import get_param, parse_header_value, parse_list, strip_comments

__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "SCHEMA_VERSION",
    "binary_size",
    "body_size",
    "find_part",
    "format_body",
    "format_bodystructure",
    "format_envelope",
    "parse_structure",
    "section_span",
]

Node = dict[str, Any]

SCHEMA_VERSION = 1
MAX_DEPTH = 50  # nesting of multiparts/embedded messages; deeper ones become leaves
MAX_PARTS = 10_000  # entities per message; a bound on work and on the cached size

_LF = 0x0A
_CR = 0x0D
_LWSP = b" \t"


# Field names are matched as bytes so the many fields we do not want (Received,
# DKIM-Signature, ...) cost one set lookup each.
_CONTENT_FIELDS = frozenset(
    {
        b"content-type",
        b"content-transfer-encoding",
        b"content-id",
        b"content-description",
        b"content-disposition",
        b"content-language",
        b"content-location",
        b"content-md5",
    }
)
_MESSAGE_FIELDS = _CONTENT_FIELDS | frozenset(n.encode() for n in ENVELOPE_FIELDS)


def _fields_re(names: frozenset[bytes]) -> re.Pattern[bytes]:
    """A field as `FIELD_RE` reads it (RFC 5322 §2.2, with its folded lines), but only
    these names, each anchored on the newline before it: the many fields we do not want
    (Received, DKIM-Signature, ...) are skipped inside the regex engine."""
    alternatives = b"|".join(re.escape(n) for n in sorted(names))
    return re.compile(rb"\n(" + alternatives + rb")[ \t]*:(.*(?:\n[ \t].*)*)", re.IGNORECASE)


_CONTENT_FIELDS_RE = _fields_re(_CONTENT_FIELDS)
_MESSAGE_FIELDS_RE = _fields_re(_MESSAGE_FIELDS)
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`{|}~0-9A-Za-z-]+")  # RFC 2045 §5.1 token
_IDENTITY = frozenset({"7bit", "8bit", "binary"})
_DEFAULT_PARAMS = [["charset", "US-ASCII"]]  # RFC 2045 §5.2 (as in RFC 3501's example)


def _text(value: bytes) -> str:
    """Header bytes as str.  RFC 6532 allows UTF-8; anything else is replaced rather
    than carried, so the cached structure always serialises to valid UTF-8 JSON."""
    if b"\n" in value or b"\r" in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"").replace(b"\r", b"")
    try:
        return value.decode("utf-8").strip(" \t")
    except UnicodeDecodeError:
        return value.decode("utf-8", "replace").strip(" \t")


class _Parser:
    """One parse of one message: the raw bytes and the remaining part budget."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.budget = MAX_PARTS

    def fields(self, start: int, end: int, message: bool) -> dict[str, str]:
        """First occurrence of each wanted field (lower-case name -> text value)."""
        found: dict[bytes, bytes] = {}
        # The leading newline lets one search jump from line start to line start.
        rx = _MESSAGE_FIELDS_RE if message else _CONTENT_FIELDS_RE
        for name, value in rx.findall(b"\n" + self.raw[start:end]):
            name = name.lower()
            if name not in found:
                found[name] = value[:-1] if value.endswith(b"\r") else value
        return {name.decode("ascii"): _text(value) for name, value in found.items()}

    def lines(self, start: int, end: int) -> int:
        """Body lines: line endings, plus a final line without one (the CRLF before a
        boundary belongs to the boundary, RFC 2046 §5.1.1, so a part's last line
        usually has none)."""
        if end <= start:
            return 0
        n = self.raw.count(b"\n", start, end)
        return n if self.raw[end - 1] == _LF else n + 1

    def entity(self, h: int, e: int, depth: int, digest_child: bool, is_message: bool) -> Node:
        """Parse the MIME entity ``raw[h:e]`` into a node (recursing into its body)."""
        self.budget -= 1
        raw = self.raw
        header_end, b = header_bounds(raw, h, e)
        fields = self.fields(h, header_end, is_message)
        node: Node = {"h": h, "b": b, "e": e}
        ctype, csub, params = _content_type(fields.get("content-type"), digest_child)
        node["type"], node["subtype"] = ctype, csub
        if params:
            node["params"] = params
        _content_fields(node, fields)
        if is_message:
            node["env"] = build_envelope(fields)
        kind = ctype.lower()
        sub = csub.lower()
        if kind == "multipart":
            boundary = get_param(params, "boundary")
            if not boundary:
                # RFC 2046 §5.1.1 makes boundary mandatory; RFC 2045 §5.2 says a
                # Content-Type we cannot use means text/plain; charset=us-ascii.
                node["type"], node["subtype"] = "text", "plain"
                node["params"] = [list(p) for p in _DEFAULT_PARAMS]
                node["lines"] = self.lines(b, e)
            elif depth >= MAX_DEPTH or self.budget <= 0:
                self.leaf(node)
            else:
                delimiter = b"--" + boundary.encode("utf-8", "replace")
                node["parts"] = self.multipart(b, e, delimiter, depth + 1, sub == "digest")
        elif kind == "message" and sub in ("rfc822", "global"):
            if depth >= MAX_DEPTH or self.budget <= 0:
                self.leaf(node)
            else:
                node["msg"] = self.entity(b, e, depth + 1, False, True)
                node["lines"] = self.lines(b, e)
        else:
            if kind == "text":
                node["lines"] = self.lines(b, e)
        return node

    def leaf(self, node: Node) -> None:
        """Past the nesting or part limit a container is reported as opaque data."""
        node["type"], node["subtype"] = "application", "octet-stream"
        node.pop("lines", None)

    def multipart(self, b: int, e: int, delimiter: bytes, depth: int, digest: bool) -> list[Node]:
        """Split a multipart body at its delimiter lines (RFC 2046 §5.1.1).

        A delimiter is ``--boundary`` at the start of a line, optionally ``--`` (the
        close delimiter), then only linear whitespace to the end of the line.  The
        line ending *before* it is part of the delimiter, not of the preceding part.
        Preamble and epilogue belong to no part.  A missing close delimiter ends the
        last part at the end of the body.
        """
        raw = self.raw
        parts: list[Node] = []
        start = -1  # start of the current part, -1 while in preamble/epilogue
        dlen = len(delimiter)
        pos = raw.find(delimiter, b, e)
        while pos >= 0:
            if pos == b or raw[pos - 1] == _LF:
                after = pos + dlen
                close = raw.startswith(b"--", after, e)
                q = after + 2 if close else after
                while q < e and raw[q] in _LWSP:
                    q += 1
                if q >= e or raw[q] == _LF or (raw[q] == _CR and q + 1 < e and raw[q + 1] == _LF):
                    if start >= 0:
                        parts.append(self.part(start, _before_line_end(raw, start, pos), depth, digest))
                    if close:
                        start = -1
                        break
                    start = min(e, q + 1 if q < e and raw[q] == _LF else q + 2)
                    if self.budget <= 0:
                        break  # out of parts: the last one runs to the end of the body
            pos = raw.find(delimiter, pos + 1, e)
        if start >= 0:
            parts.append(self.part(start, e, depth, digest))
        if not parts:
            # IMAP needs at least one body in a multipart (RFC 9051 body-type-mpart):
            # a zero-length text/plain placeholder, as Dovecot gives.
            self.budget -= 1
            parts.append(
                {"h": e, "b": e, "e": e, "type": "text", "subtype": "plain",
                 "params": [list(p) for p in _DEFAULT_PARAMS], "lines": 0}
            )
        return parts

    def part(self, start: int, end: int, depth: int, digest: bool) -> Node:
        return self.entity(start, end, depth, digest, False)


def _before_line_end(raw: bytes, start: int, pos: int) -> int:
    """End of a part that is followed by a delimiter at ``pos``: drop its CRLF/LF."""
    end = pos
    if end > start and raw[end - 1] == _LF:
        end -= 1
        if end > start and raw[end - 1] == _CR:
            end -= 1
    return end


def _content_type(value: str | None, digest_child: bool) -> tuple[str, str, list[list[str]]]:
    """Type, subtype and parameters, with RFC 2045 §5.2 / RFC 2046 §5.1.5 defaults."""
    if value is not None:
        main, params = parse_header_value(value)
        ctype, slash, csub = main.partition("/")
        ctype, csub = ctype.strip(), csub.strip()
        if slash and _TOKEN_RE.fullmatch(ctype) and _TOKEN_RE.fullmatch(csub):
            return ctype, csub, params
    if digest_child:
        return "message", "rfc822", []
    return "text", "plain", [list(p) for p in _DEFAULT_PARAMS]


def _content_fields(node: Node, fields: dict[str, str]) -> None:
    value = fields.get("content-transfer-encoding")
    if value is not None:
        enc = strip_comments(value)
        if enc:
            node["enc"] = enc
    for field, key in (("content-id", "id"), ("content-description", "desc"),
                       ("content-md5", "md5"), ("content-location", "loc")):
        value = fields.get(field)
        if value is not None:
            node[key] = value
    value = fields.get("content-disposition")
    if value is not None:
        disposition, params = parse_header_value(value)
        if disposition:
            node["disp"] = [disposition, params]
    value = fields.get("content-language")
    if value is not None:
        languages = parse_list(value)
        if languages:
            node["lang"] = languages


def _fallback(raw: bytes) -> Node:
    return {"v": SCHEMA_VERSION, "h": 0, "b": len(raw), "e": len(raw), "type": "text",
            "subtype": "plain", "params": [list(p) for p in _DEFAULT_PARAMS], "lines": 0,
            "env": {}}


def _parse(raw: bytes) -> Node:
    node = _Parser(raw).entity(0, len(raw), 0, False, True)
    return {"v": SCHEMA_VERSION, **node}


def parse_structure(raw: bytes) -> Node:
    """Parse a whole message into the structure dict described in the module docstring.

    Never raises.  The scanner is written not to fail on any bytes; should a bug make
    it fail anyway, the message is described as an empty text/plain body, so delivery
    goes on and the message stays readable as BODY[] (RFC 9051 always allows that).
    """
    if not isinstance(raw, bytes):
        raw = bytes(raw)
    try:
        return _parse(raw)
    except Exception:  # pragma: no cover - safety net; tests exercise _parse directly
        return _fallback(raw)


# --------------------------------------------------------------------------- sections


def _children(node: Node, is_message: bool) -> list[Node]:
    """The parts numbered 1..n below ``node`` (RFC 9051 §6.4.5).

    A multipart's children are its parts; a message that is not multipart has one part,
    its body, numbered 1; an embedded message part's children are those of the message
    it carries.
    """
    if "parts" in node:
        parts: list[Node] = node["parts"]
        return parts
    if is_message:
        return [node]
    if "msg" in node:
        return _children(node["msg"], True)
    return []


def find_part(struct: Node, section: Sequence[int]) -> Node | None:
    """The node for a section part number such as ``(2, 1)``; ``()`` is the message."""
    node = struct
    is_message = True
    for number in section:
        children = _children(node, is_message)
        if not 1 <= number <= len(children):
            return None
        node = children[number - 1]
        is_message = False
    return node


def section_span(struct: Node, section: Sequence[int], specifier: str = "") -> tuple[int, int] | None:
    """The byte range ``(start, end)`` of BODY[section.specifier], or None if no such.

    ``specifier`` is "" (the part's content; the whole message for an empty section),
    "HEADER"/"TEXT" (of the message, or of the message a message/rfc822 part carries;
    also the base for HEADER.FIELDS) or "MIME" (a part's own MIME header, with its empty
    line; only with a non-empty section).
    """
    node = find_part(struct, section)
    if node is None:
        return None
    spec = specifier.upper()
    if spec == "":
        return (node["h"], node["e"]) if not section else (node["b"], node["e"])
    if spec == "MIME":
        return (node["h"], node["b"]) if section else None
    if spec in ("HEADER", "TEXT"):
        message = node if not section else node.get("msg")
        if message is None:
            return None
        return (message["h"], message["b"]) if spec == "HEADER" else (message["b"], message["e"])
    return None


def body_size(node: Node) -> int:
    """RFC 9051 body-fld-octets: the body's size in octets as stored."""
    return int(node["e"]) - int(node["b"])


def binary_size(node: Node, raw: bytes) -> int | None:
    """RFC 3516 BINARY.SIZE of a part of `raw`: what BINARY[part] would send; None when
    its transfer encoding is unknown or its content undecodable (UNKNOWN-CTE).

    Worked out when asked, not at parse time: decoding every attachment of every
    message delivered (or walked in) to learn a size clients seldom ask for was a tenth
    of the parse; Dovecot too computes it on demand."""
    enc = str(node.get("enc", "7bit")).lower()
    if "parts" in node or "msg" in node or enc in _IDENTITY:
        return body_size(node)
    content = raw[node["b"] : node["e"]]
    try:
        if enc == "base64":
            return len(binascii.a2b_base64(content))
        if enc == "quoted-printable":
            return len(binascii.a2b_qp(content))
    except (binascii.Error, ValueError):
        return None
    return None
