"""Message bytes as POP3 multi-line responses (RFC 1939 §3) and the TOP excerpt (§7).

A multi-line response is CRLF-terminated lines ended by ``.CRLF``; a line that starts with
``.`` gets another ``.`` in front ("byte-stuffing") so it cannot end the response early,
and the client removes it again. Messages are stored with CRLF line endings already, so
for them the stuffed form carries exactly the octets announced by LIST; a file walked in
from another Maildir program with bare LF endings is normalised to CRLF on the way out
(RFC 1939 §3 only knows CRLF lines).
"""

from __future__ import annotations

import re

_BARE_LF = re.compile(rb"(?<!\r)\n")


def normalise(content: bytes) -> bytes:
    """Every LF preceded by CR. Cheap when the content is already CRLF (the usual case)."""
    if content.count(b"\n") == content.count(b"\r\n"):
        return content
    return _BARE_LF.sub(b"\r\n", content)


def multiline(content: bytes) -> bytes:
    """``content`` as the body of a multi-line response, terminator included.

    RFC 1939 §3: the last line must end in CRLF before the ``.CRLF`` terminator, so a
    message without a final line ending gets one.
    """
    data = normalise(content)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    # RFC 1939 §3: "the line is byte-stuffed by pre-pending the termination octet".
    # The pattern starts with CR, so matches never overlap and every dotted line is seen.
    data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data + b".\r\n"


def top(content: bytes, lines: int) -> bytes:
    """RFC 1939 §7 TOP: the header, the blank line after it, and the first ``lines``
    lines of the body. A message without a blank line is all header and comes whole."""
    data = normalise(content)
    if data.startswith(b"\r\n"):
        header_end = 2  # no header fields at all: the blank line comes first
    else:
        blank = data.find(b"\r\n\r\n")
        if blank < 0:
            return data
        header_end = blank + 4
    body = data[header_end:]
    if lines > body.count(b"\r\n"):
        # The whole body (fetchmail's "keep" mode asks for TOP n 99999999): skip the walk.
        return data
    end = 0
    for _ in range(lines):
        nl = body.find(b"\r\n", end)
        if nl < 0:
            end = len(body)
            break
        end = nl + 2
    return data[:header_end] + body[:end]


def unstuff(response: bytes) -> bytes:
    """Inverse of :func:`multiline` for CRLF content (the client side; tests use it)."""
    if not response.endswith(b".\r\n"):
        raise ValueError("multi-line response lacks its terminator")
    body = response[:-3]
    if body.startswith(b".."):
        body = body[1:]
    return body.replace(b"\r\n..", b"\r\n.")
