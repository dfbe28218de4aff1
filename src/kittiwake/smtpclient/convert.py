"""8-bit → 7-bit conversion for servers without 8BITMIME (RFC 6152 §3, RFC 2045 §6).

RFC 6152 §3 lets a relay facing a server that lacks 8BITMIME either convert the message to
7 bits or return it. Conversion here is conservative and surgical: only leaf body parts that
contain 8-bit octets are re-encoded (text/* as quoted-printable so it stays readable, anything
else as base64) and only their Content-Transfer-Encoding field changes; every other byte,
including all header fields and multipart boundaries, is kept exactly. The stdlib `email`
package reads each header block (Content-Type, boundary, encoding); the splitting along
boundary lines is done on bytes so nothing is re-folded or re-encoded by accident.

`to_7bit` returns None when the message cannot be converted faithfully — 8-bit octets in a
header field (that needs SMTPUTF8, RFC 6532), in a multipart preamble or epilogue, in a part
declared base64/quoted-printable, in a message/* type other than message/rfc822, a multipart
without a boundary, or a top level without MIME-Version (no charset to speak of) — and the
caller bounces with 5.6.3 (RFC 3463: conversion required but not supported).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import re

_MAX_DEPTH = 20  # nested multiparts; deeper is abuse, not mail
_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_CTE_FIELD = re.compile(rb"(?im)^content-transfer-encoding[ \t]*:.*(?:\r\n[ \t].*)*\r\n")


class _Unconvertible(Exception):
    pass


def to_7bit(content: bytes) -> bytes | None:
    """The message with every 8-bit body part re-encoded, or None when that is impossible."""
    if content.isascii():
        return content
    try:
        header, _ = _split(content)
        if _PARSER.parsebytes(header + b"\r\n").get("MIME-Version") is None:
            return None
        return _entity(content, "text/plain", 0)
    except _Unconvertible:
        return None


def _split(entity: bytes) -> tuple[bytes, bytes]:
    """(header block incl. its last CRLF, body) — split at the first empty line."""
    if entity.startswith(b"\r\n"):
        return b"", entity[2:]
    end = entity.find(b"\r\n\r\n")
    if end < 0:
        return entity if entity.endswith(b"\r\n") else entity + b"\r\n", b""
    return entity[:end + 2], entity[end + 4:]


def _entity(entity: bytes, default_type: str, depth: int) -> bytes:
    if entity.isascii():
        return entity
    if depth > _MAX_DEPTH:
        raise _Unconvertible("too deeply nested")
    header, body = _split(entity)
    if not header.isascii():
        raise _Unconvertible("8-bit header field")
    fields = _PARSER.parsebytes(header + b"\r\n")
    if fields.get("Content-Type") is None:
        fields.set_default_type(default_type)
    ctype = fields.get_content_type()
    cte = str(fields.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    maintype = ctype.split("/", 1)[0]
    if maintype == "multipart":
        boundary = fields.get_param("boundary")
        if not isinstance(boundary, str) or not boundary:
            raise _Unconvertible("multipart without boundary")
        inner = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        body = _multipart(body, boundary.encode("ascii", "replace"), inner, depth)
        return _with_cte(header, "7bit", had=cte != "7bit") + b"\r\n" + body
    if cte not in ("7bit", "8bit", "binary"):
        raise _Unconvertible("8-bit octets in an encoded part")
    if ctype == "message/rfc822":
        # RFC 2046 §5.2.1: only 7bit/8bit/binary are allowed, so the embedded message is
        # converted instead, and then labelled 7bit.
        return _with_cte(header, "7bit", had=cte != "7bit") + b"\r\n" + \
            _entity(body, "text/plain", depth + 1)
    if maintype == "message":
        raise _Unconvertible("8-bit message/* part")
    if maintype == "text" and cte != "binary":
        return _with_cte(header, "quoted-printable") + b"\r\n" + _quoted_printable(body)
    encoded = base64.encodebytes(body).replace(b"\n", b"\r\n")
    return _with_cte(header, "base64") + b"\r\n" + encoded.removesuffix(b"\r\n")


def _multipart(body: bytes, boundary: bytes, inner_type: str, depth: int) -> bytes:
    # RFC 2046 §5.1.1: a delimiter is CRLF "--" boundary at the start of a line (the CRLF
    # belongs to the delimiter), optionally followed by "--" (the last one) and whitespace.
    delimiter = re.compile(rb"(?:\A|\r\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r\n|\Z)")
    pieces: list[bytes] = []
    pos = 0
    closed = False
    for match in delimiter.finditer(body):
        pieces.append(body[pos:match.start()])
        pieces.append(match.group(0))
        pos = match.end()
        if match.group(1):
            closed = True
            break
    if not pieces:
        raise _Unconvertible("no boundary found")
    if not closed:  # no close-delimiter: the last part runs to the end, no epilogue
        pieces.append(body[pos:])
        pos = len(body)
    preamble, delimiters, parts, epilogue = pieces[0], pieces[1::2], pieces[2::2], body[pos:]
    if not preamble.isascii() or not epilogue.isascii():
        raise _Unconvertible("8-bit octets outside the body parts")
    out = [preamble]
    for i, delim in enumerate(delimiters):
        out.append(delim)
        if i < len(parts):
            out.append(_entity(parts[i], inner_type, depth + 1))
    out.append(epilogue)
    return b"".join(out)


def _with_cte(header: bytes, cte: str, *, had: bool = True) -> bytes:
    """The header block with its Content-Transfer-Encoding field(s) replaced by `cte`."""
    if not had and not _CTE_FIELD.search(header):
        return header
    return _CTE_FIELD.sub(b"", header) + f"Content-Transfer-Encoding: {cte}\r\n".encode()


_QP_SAFE = frozenset(range(33, 127)) - {ord("=")}


def _quoted_printable(body: bytes) -> bytes:
    """RFC 2045 §6.7: lines kept (CRLF is a hard break), at most 76 octets per encoded line."""
    out = []
    for line in body.split(b"\r\n"):
        encoded: list[str] = []
        length = 0
        last = len(line) - 1
        for i, byte in enumerate(line):
            # Rule 3: whitespace is literal except at the end of a line, where it is encoded.
            if byte in _QP_SAFE or (byte in (0x20, 0x09) and i != last):
                token = chr(byte)
            else:
                token = f"={byte:02X}"
            # Rule 5: soft line breaks ("=" at the end) keep lines within 76 octets.
            if length + len(token) > 75:
                encoded.append("=\r\n")
                length = 0
            encoded.append(token)
            length += len(token)
        out.append("".join(encoded).encode("ascii"))
    return b"\r\n".join(out)
