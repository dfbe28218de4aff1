"""Header fields of an Internet message: reading (RFC 5322 §2.2, RFC 2047) and writing.

Readers work on raw bytes and never raise: the store, IMAP SEARCH and the MIME walk
all meet whatever a peer sent, and one broken message must not stop delivery.
Writers produce the trace and identification fields an MTA adds (RFC 5321 §4.4,
RFC 5322 §3.6), each a complete field ending in CRLF, folded at 78 characters where
the content allows (RFC 5322 §2.1.1) and sanitised so peer-supplied text (HELO
names, TLS strings) can never inject a line break or close a comment early.

Sans-IO (layer L1): no clock, no sockets, no logging; time is passed in.
"""

from __future__ import annotations

import binascii
import ipaddress
import re
import secrets
from collections.abc import Iterator
from datetime import datetime

__all__ = [
    "FIELD_RE",
    "date_header",
    "decode_charset",
    "decode_words",
    "delivered_to_header",
    "format_date",
    "get_all_fields",
    "get_field",
    "header_bounds",
    "iter_field_spans",
    "iter_fields",
    "message_id",
    "received_header",
    "return_path_header",
    "split_header",
    "unfold",
]

# RFC 5322 §2.2: field-name = 1*ftext, ftext = %d33-57 / %d59-126 (printable, no colon).
# RFC 5322 §4.5 (obs-optional) allows WSP between the name and the colon.  A field runs
# on over continuation lines that start with WSP (§2.2.3 folding).  Lines that match
# neither (garbage) are skipped by the scanner, which is what "tolerant" means here.
FIELD_RE = re.compile(rb"^([!-9;-~]+)[ \t]*:(.*(?:\n[ \t].*)*)", re.MULTILINE)

_LF = 0x0A
_CR = 0x0D


# --------------------------------------------------------------------------- reading


def header_bounds(raw: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """Return ``(header_end, body_start)`` for the entity in ``raw[start:end]``.

    RFC 5322 §2.1: the header ends at the first empty line; ``raw[start:header_end]`` is
    the fields including the last one's line ending, ``raw[start:body_start]`` adds the
    empty line (IMAP's BODY[HEADER] includes it).  CRLF and bare-LF endings are both
    accepted because stored mail and locally submitted mail often use LF.  With no
    empty line at all the whole range is header and the body is empty.
    """
    if end is None:
        end = len(raw)
    # An entity that begins with the empty line has no header fields (RFC 2046 §5.1.1).
    if raw.startswith(b"\r\n", start, end):
        return start, start + 2
    if raw.startswith(b"\n", start, end):
        return start, start + 1
    # Search CRLF first; LF-LF only up to that point, so a CRLF message is never scanned
    # past its header for a pattern it does not use.
    crlf = raw.find(b"\n\r\n", start, end)
    lf = raw.find(b"\n\n", start, end if crlf < 0 else crlf)
    if lf >= 0:
        return lf + 1, lf + 2
    if crlf >= 0:
        return crlf + 1, crlf + 3
    return end, end


def split_header(raw: bytes) -> tuple[bytes, int]:
    """Split a message into its header block and the offset where the body starts.

    The header block excludes the separating empty line; ``raw[offset:]`` is the body
    (empty when the message has no empty line or nothing after it).
    """
    header_end, body_start = header_bounds(raw)
    return raw[:header_end], body_start


def iter_field_spans(header_block: bytes) -> Iterator[tuple[str, int, int]]:
    """Yield ``(lower-cased name, start, end)`` for each field in ``header_block``.

    ``header_block[start:end]`` is the whole field as sent, folding and final line
    ending included, which is what IMAP HEADER.FIELDS returns.  Scanning stops at the
    first empty line, so passing a whole message is safe.
    """
    limit, _ = header_bounds(header_block)
    for m in FIELD_RE.finditer(header_block, 0, limit):
        end = m.end()
        if end < len(header_block) and header_block[end] == _LF:
            end += 1
        yield m.group(1).decode("ascii").lower(), m.start(), end


def iter_fields(header_block: bytes) -> Iterator[tuple[str, bytes]]:
    """Yield ``(lower-cased name, raw value)`` per field (RFC 5322 §2.2).

    The value is everything after the colon, folding line breaks included (see
    :func:`unfold`), without the final line ending.  Lines that are not fields
    (no colon, bad name, stray continuation) are skipped.
    """
    limit, _ = header_bounds(header_block)
    for m in FIELD_RE.finditer(header_block, 0, limit):
        value = m.group(2)
        if value.endswith(b"\r"):
            value = value[:-1]
        yield m.group(1).decode("ascii").lower(), value


def get_field(header_block: bytes, name: str) -> bytes | None:
    """Raw value of the first field called ``name`` (case-insensitive), or None."""
    wanted = name.lower()
    for field, value in iter_fields(header_block):
        if field == wanted:
            return value
    return None


def get_all_fields(header_block: bytes, name: str) -> list[bytes]:
    """Raw values of every field called ``name``, in order (e.g. Received)."""
    wanted = name.lower()
    return [value for field, value in iter_fields(header_block) if field == wanted]


def unfold(value: bytes) -> bytes:
    """RFC 5322 §2.2.3: unfolding removes the CRLF of each fold, keeping the WSP."""
    if b"\n" not in value and b"\r" not in value:
        return value
    return value.replace(b"\r\n", b"").replace(b"\n", b"").replace(b"\r", b"")


# RFC 2047 §2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
# (RFC 2231 §5 lets the charset carry "*language").  Encoded text may not contain "?".
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?]*)\?=")
_NOT_BASE64 = bytes(c for c in range(256) if not (chr(c).isascii() and (chr(c).isalnum() or chr(c) in "+/")))


def _text(value: bytes) -> str:
    """Raw header bytes as text: UTF-8 per RFC 6532, else Latin-1 so nothing is lost."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _decode_payload(encoding: str, payload: str) -> bytes | None:
    data = payload.encode("utf-8", "replace")
    if encoding in "Bb":
        # Lenient base64: drop stray characters and mend padding rather than fail.
        data = data.translate(None, _NOT_BASE64)
        if len(data) % 4 == 1:  # a dangling sextet carries no whole octet
            data = data[:-1]
        try:
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        except binascii.Error:
            return None
    # RFC 2047 §4.2: Q is quoted-printable where "_" stands for space.
    return binascii.a2b_qp(data, header=True)


def decode_charset(data: bytes, charset: str) -> str:
    """Decode with a charset named in the message, never failing.

    Unknown or unusable names (and Python codecs that are not text charsets, such as
    "idna" or "rot13") decode as UTF-8: the likeliest truth today, and replacement
    characters keep the rest of the text searchable.
    """
    try:
        return data.decode(charset, "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")


def decode_words(value: bytes | str) -> str:
    """Decode RFC 2047 encoded-words in a header value to text, for SEARCH and display.

    Unfolds first.  Whitespace between two adjacent encoded-words is dropped (RFC 2047
    §6.2), and adjacent words in the same charset are joined before decoding because
    senders split multi-byte characters across words.  Undecodable words stay as
    written; unknown charsets decode as UTF-8 with replacement characters.
    """
    text = _text(unfold(value)) if isinstance(value, bytes) else value.replace("\r\n", "")
    if "=?" not in text:
        return text
    # Pieces are either plain text (charset None) or decoded bytes with their charset.
    pieces: list[tuple[str | None, str | bytes]] = []
    pos = 0
    last_was_word = False
    for m in _ENCODED_WORD_RE.finditer(text):
        between = text[pos : m.start()]
        data = _decode_payload(m.group(2), m.group(3))
        if data is None:
            pieces.append((None, text[pos : m.end()]))
            pos = m.end()
            last_was_word = False
            continue
        if between and not (last_was_word and not between.strip(" \t")):
            pieces.append((None, between))
        charset = m.group(1).split("*", 1)[0].lower()
        if pieces and pieces[-1][0] == charset and last_was_word:
            prev = pieces[-1][1]
            assert isinstance(prev, bytes)
            pieces[-1] = (charset, prev + data)
        else:
            pieces.append((charset, data))
        pos = m.end()
        last_was_word = True
    pieces.append((None, text[pos:]))
    out: list[str] = []
    for charset, piece in pieces:
        if isinstance(piece, bytes):
            out.append(decode_charset(piece, charset or "utf-8"))
        else:
            out.append(piece)
    return "".join(out)


# --------------------------------------------------------------------------- writing

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MAX_LINE = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")
_LITERAL_RE = re.compile(r"\[(?:IPv6:[0-9A-Fa-f:.]+|[0-9.]+)\]")
_ATOM_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")  # RFC 5322 §3.2.3 atext


def format_date(when: datetime) -> str:
    """RFC 5322 §3.3 date-time.  A naive datetime gets zone "-0000" (§3.3: unknown)."""
    offset = when.utcoffset()
    if offset is None:
        zone = "-0000"
    else:
        minutes = int(offset.total_seconds()) // 60
        sign = "+" if minutes >= 0 else "-"
        zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {zone}"
    )


def _comment_text(text: str, limit: int = 200) -> str:
    """Make peer-supplied text safe inside an RFC 5322 comment.

    Control characters (CR/LF above all: header injection) are dropped, and "(",
    ")" and "\\" are quoted-pairs (§3.2.1) so the comment cannot be closed early.
    """
    out = []
    for ch in text[:limit]:
        if ch < " " or ch == "\x7f":
            continue
        if ch in "()\\":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def _path_text(addr: str) -> str:
    """An envelope address for a trace field: no controls, no angle brackets."""
    return "".join(ch for ch in addr if ch >= " " and ch not in "<>\x7f")


def _fold(name: str, tokens: list[tuple[str, bool]]) -> bytes:
    """Join tokens with spaces into a field, folding between tokens at 78 characters.

    A token flagged splittable (a comment) may itself be folded at its spaces when it
    cannot fit on a line; other tokens (paths, ids) are never split.  Continuation
    lines start with a TAB, as most MTAs write trace fields.
    """
    words: list[str] = []
    for text, splittable in tokens:
        if splittable and len(text) + 1 > _MAX_LINE:
            words.extend(w for w in text.split(" ") if w)
        else:
            words.append(text)
    lines: list[str] = []
    current = name + ":"
    bare = True  # nothing but the field name / indentation on the current line
    for word in words:
        if bare or len(current) + 1 + len(word) <= _MAX_LINE:
            current += " " + word
            bare = False
        else:
            lines.append(current)
            current = "\t" + word
            bare = False
    lines.append(current)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _address_literal(ip: str) -> str:
    """RFC 5321 §4.1.3 address literal; IPv4-mapped IPv6 is shown as the IPv4 it is."""
    try:
        addr = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return "[" + _comment_text(ip, 64).replace("[", "").replace("]", "") + "]"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return f"[{addr.ipv4_mapped}]"
        return f"[IPv6:{addr.compressed}]"
    return f"[{addr}]"


def received_header(
    *,
    from_helo: str,
    from_ip: str,
    from_rdns: str | None,
    by_host: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    tls: str | None,
    when: datetime,
    hide_ip: bool = False,
) -> bytes:
    """The RFC 5321 §4.4 time-stamp line a receiving SMTP server prepends.

    ``Received: from HELO (RDNS [IP]) (TLS) by HOST with PROTOCOL id QID for <RCPT>; DATE``

    ``protocol`` is a WITH keyword from the IANA registry (RFC 3848: ESMTPS, ESMTPA,
    ESMTPSA; RFC 6531: UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA).  A HELO that is not
    a domain or address literal is not written as one: the From-domain becomes the
    client's address literal and the claimed name goes, quoted, into the comment, so
    the field stays parseable and nothing a client sends can break out of it.
    ``hide_ip`` (submission privacy) leaves out the client address and its PTR name.
    """
    if not _ATOM_RE.fullmatch(protocol):
        raise ValueError(f"protocol is not an atom: {protocol!r}")
    if not _ATOM_RE.fullmatch(queue_id):
        raise ValueError(f"queue id is not an atom: {queue_id!r}")
    by = by_host if _DOMAIN_RE.fullmatch(by_host) else "localhost"
    helo_ok = bool(_DOMAIN_RE.fullmatch(from_helo) or _LITERAL_RE.fullmatch(from_helo))
    tokens: list[tuple[str, bool]] = []
    if hide_ip:
        # An address literal as HELO would reveal the address we are hiding.
        helo_name = from_helo if helo_ok and not from_helo.startswith("[") else "unknown"
        tokens.append((f"from {helo_name}", False))
    else:
        literal = _address_literal(from_ip)
        rdns = from_rdns.rstrip(".") if from_rdns and _DOMAIN_RE.fullmatch(from_rdns) else None
        tcp_info = f"{rdns} {literal}" if rdns else literal
        if helo_ok:
            tokens.append((f"from {from_helo}", False))
            tokens.append((f"({tcp_info})", False))
        else:
            tokens.append((f"from {literal}", False))
            tokens.append((f"({tcp_info} helo={_comment_text(from_helo, 100)})", True))
    if tls:
        tokens.append((f"({_comment_text(tls)})", True))
    tokens.append((f"by {by}", False))
    tokens.append((f"with {protocol}", False))
    tokens.append((f"id {queue_id}", False))
    stamp = format_date(when)
    if recipient is not None:
        tokens.append((f"for <{_path_text(recipient)}>;", False))
    else:
        tokens[-1] = (tokens[-1][0] + ";", False)
    tokens.append((stamp, False))
    return _fold("Received", tokens)


def return_path_header(sender: str | None) -> bytes:
    """RFC 5321 §4.4 Return-Path, added at final delivery; ``<>`` for the null sender."""
    path = _path_text(sender) if sender else ""
    return f"Return-Path: <{path}>\r\n".encode()


def delivered_to_header(addr: str) -> bytes:
    """Delivered-To (the recipient address as it reached this mailbox), used for loop
    detection and by clients to tell which alias a message came through."""
    return f"Delivered-To: {_path_text(addr)}\r\n".encode()


def message_id(domain: str) -> str:
    """A new RFC 5322 §3.6.4 msg-id ``<random@domain>``.

    128 random bits make collisions negligible without a clock or a counter, which a
    sans-IO module cannot keep.
    """
    if not _DOMAIN_RE.fullmatch(domain) and not _LITERAL_RE.fullmatch(domain):
        raise ValueError(f"not a domain: {domain!r}")
    return f"<{secrets.token_hex(16)}@{domain.rstrip('.')}>"


def date_header(when: datetime) -> bytes:
    """RFC 5322 §3.6.1 origination date field."""
    return f"Date: {format_date(when)}\r\n".encode()
