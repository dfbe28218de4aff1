"""IMAP server responses as values, and the string encodings they need (RFC 9051 §7 and
§4.3; RFC 3501 for IMAP4rev1 clients; RFC 3516 literal8).

Responses are values (DESIGN.md "Replies are values"): the session builds a
:class:`Tagged`, :class:`Untagged`, :class:`Continuation` or :class:`Data` and hands it
to :meth:`ServerConnection.send`, which serialises it and applies the state change a
tagged completion implies.  Builders for the data responses (FETCH, ESEARCH, LIST,
STATUS, ...) live in :mod:`kittiwake.imap.builders`.

Strings are written in the one form the grammar allows for their content (RFC 9051
§4.3): a quoted string when every octet is a TEXT-CHAR (or, once the client speaks
UTF-8, part of valid UTF-8) and the value is short; otherwise a literal.  Only a literal8
(``~{n}``, RFC 3516) may carry NUL, and only BINARY data uses it.
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from kittiwake.imap import mutf7
from kittiwake.imap.types import SequenceSet

__all__ = [
    "ALERT", "ALREADYEXISTS", "AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "CANNOT",
    "CLIENTBUG", "CLOSED", "COMPRESSIONACTIVE", "CONTACTADMIN", "CORRUPTION",
    "EXPIRED", "EXPUNGEISSUED", "HASCHILDREN", "INUSE", "LIMIT", "NOMODSEQ",
    "NONEXISTENT", "NOPERM", "NOTSAVED", "OVERQUOTA", "PARSE", "PRIVACYREQUIRED",
    "QUOTED_MAX", "READ_ONLY", "READ_WRITE", "SERVERBUG", "TOOBIG", "TRYCREATE",
    "UIDNOTSTICKY", "UNAVAILABLE", "UNKNOWN_CTE", "USEATTR",
    "Continuation", "Data", "Response", "ResponseCode", "Status", "Tagged", "Untagged",
    "appenduid", "astring", "badcharset", "capability", "compress_ordered", "copyuid",
    "highestmodseq", "literal", "mailbox_name", "modified", "nstring", "permanentflags",
    "quoted", "string", "to_bytes", "uidnext", "uidvalidity", "unseen",
]

#: Longer strings go as literals: quoted strings are meant for short values, and a
#: literal costs the client no unescaping.
QUOTED_MAX = 1024

# TEXT-CHAR = CHAR (%x01-7F) except CR and LF (RFC 9051 §9).
_TEXT_ASCII = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_TEXT_8BIT = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\xff]*")
_ATOM = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e]+")  # ASTRING-CHAR
_CRLF_NUL = re.compile(r"[\r\n\x00]+")


class Status(enum.Enum):
    """resp-cond-state / resp-cond-bye / PREAUTH (RFC 9051 §7.1)."""

    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    PREAUTH = "PREAUTH"
    BYE = "BYE"


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """A ``[name data]`` response code (RFC 9051 §7.1); ``data`` is already IMAP syntax."""

    name: str
    data: str = ""

    def __str__(self) -> str:
        return f"{self.name} {self.data}" if self.data else self.name


# RFC 9051 §7.1 (and RFC 5530, RFC 4315, RFC 7162, RFC 6154, RFC 4978, RFC 9208, RFC 4469).
ALERT = ResponseCode("ALERT")
ALREADYEXISTS = ResponseCode("ALREADYEXISTS")
AUTHENTICATIONFAILED = ResponseCode("AUTHENTICATIONFAILED")
AUTHORIZATIONFAILED = ResponseCode("AUTHORIZATIONFAILED")
CANNOT = ResponseCode("CANNOT")
CLIENTBUG = ResponseCode("CLIENTBUG")
CLOSED = ResponseCode("CLOSED")
COMPRESSIONACTIVE = ResponseCode("COMPRESSIONACTIVE")
CONTACTADMIN = ResponseCode("CONTACTADMIN")
CORRUPTION = ResponseCode("CORRUPTION")
EXPIRED = ResponseCode("EXPIRED")
EXPUNGEISSUED = ResponseCode("EXPUNGEISSUED")
HASCHILDREN = ResponseCode("HASCHILDREN")
INUSE = ResponseCode("INUSE")
LIMIT = ResponseCode("LIMIT")
NOMODSEQ = ResponseCode("NOMODSEQ")
NONEXISTENT = ResponseCode("NONEXISTENT")
NOPERM = ResponseCode("NOPERM")
NOTSAVED = ResponseCode("NOTSAVED")
OVERQUOTA = ResponseCode("OVERQUOTA")
PARSE = ResponseCode("PARSE")
PRIVACYREQUIRED = ResponseCode("PRIVACYREQUIRED")
READ_ONLY = ResponseCode("READ-ONLY")
READ_WRITE = ResponseCode("READ-WRITE")
SERVERBUG = ResponseCode("SERVERBUG")
TOOBIG = ResponseCode("TOOBIG")
TRYCREATE = ResponseCode("TRYCREATE")
UIDNOTSTICKY = ResponseCode("UIDNOTSTICKY")
UNAVAILABLE = ResponseCode("UNAVAILABLE")
UNKNOWN_CTE = ResponseCode("UNKNOWN-CTE")
USEATTR = ResponseCode("USEATTR")


def uidvalidity(value: int) -> ResponseCode:
    return ResponseCode("UIDVALIDITY", str(value))


def uidnext(value: int) -> ResponseCode:
    return ResponseCode("UIDNEXT", str(value))


def unseen(number: int) -> ResponseCode:
    """IMAP4rev1 only (RFC 3501 §7.1): the first unseen message's number."""
    return ResponseCode("UNSEEN", str(number))


def highestmodseq(value: int) -> ResponseCode:
    return ResponseCode("HIGHESTMODSEQ", str(value))


def permanentflags(flags: Iterable[str], *, keywords: bool = True) -> ResponseCode:
    """PERMANENTFLAGS; ``keywords`` adds ``\\*``: the client may create new keywords."""
    items = list(flags) + (["\\*"] if keywords else [])
    return ResponseCode("PERMANENTFLAGS", "(" + " ".join(items) + ")")


def capability(capabilities: Iterable[str]) -> ResponseCode:
    return ResponseCode("CAPABILITY", " ".join(capabilities))


def badcharset(charsets: Iterable[str] = ("UTF-8", "US-ASCII")) -> ResponseCode:
    return ResponseCode("BADCHARSET", "(" + " ".join(charsets) + ")")


def appenduid(uidvalidity: int, uids: Iterable[int]) -> ResponseCode:
    """APPENDUID (RFC 4315 §3): the new message's UID (or UIDs, for MULTIAPPEND)."""
    return ResponseCode("APPENDUID", f"{uidvalidity} {compress_ordered(uids)}")


def copyuid(uidvalidity: int, source: Iterable[int], dest: Iterable[int]) -> ResponseCode:
    """COPYUID (RFC 4315 §3). The two sets correspond element by element, so they are
    compressed in the order given, never sorted."""
    return ResponseCode("COPYUID",
                        f"{uidvalidity} {compress_ordered(source)} {compress_ordered(dest)}")


def modified(numbers: Iterable[int] | SequenceSet) -> ResponseCode:
    """MODIFIED (RFC 7162 §3.1.3): the messages an UNCHANGEDSINCE STORE left alone."""
    if not isinstance(numbers, SequenceSet):
        numbers = SequenceSet.from_numbers(numbers)
    return ResponseCode("MODIFIED", str(numbers))


def compress_ordered(numbers: Iterable[int]) -> str:
    """``1:3,7,9:10`` for ``1 2 3 7 9 10``, keeping the given order: runs of consecutive
    ascending numbers collapse, nothing is reordered (RFC 4315 §3 COPYUID pairs)."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in runs)


# --------------------------------------------------------------------------- strings


def quoted(value: bytes) -> bytes:
    """A quoted string; the caller has checked the content is quotable."""
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(data: bytes, *, binary: bool = False) -> bytes:
    """``{n}`` CRLF data, or ``~{n}`` for a literal8 (RFC 3516 §4.3)."""
    return b"%s{%d}\r\n%s" % (b"~" if binary else b"", len(data), data)


def _quotable(data: bytes, utf8: bool) -> bool:
    if len(data) > QUOTED_MAX:
        return False
    if _TEXT_ASCII.fullmatch(data):
        return True
    if not utf8 or not _TEXT_8BIT.fullmatch(data):
        return False
    try:  # RFC 9051 QUOTED-CHAR admits 8-bit octets only as UTF-8 sequences
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def string(value: str | bytes, *, utf8: bool = False) -> bytes:
    """An IMAP string: quoted when its content allows, else a literal.

    ``utf8`` is True once the client has enabled IMAP4rev2 or UTF8=ACCEPT: then UTF-8
    may be quoted (RFC 9051 §4.3; RFC 6855 §3); an IMAP4rev1 client gets a literal for
    anything 8-bit. NUL can be in neither form, so it is dropped (CHAR8 excludes it).
    """
    data = value.encode("utf-8") if isinstance(value, str) else value
    if b"\x00" in data:
        data = data.replace(b"\x00", b"")
    return quoted(data) if _quotable(data, utf8) else literal(data)


def nstring(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    return b"NIL" if value is None else string(value, utf8=utf8)


def astring(value: str | bytes, *, utf8: bool = False) -> bytes:
    """An atom when the value is one (and not NIL, which would read as nil), else a string."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if _ATOM.fullmatch(data) and data.upper() != b"NIL":
        return data
    return string(data, utf8=utf8)


def mailbox_name(name: str, *, utf8: bool = False) -> bytes:
    """A mailbox name as the client expects it: UTF-8 after ENABLE IMAP4rev2/UTF8=ACCEPT
    (RFC 9051 §5.1; RFC 6855 §3), modified UTF-7 before (RFC 3501 §5.1.3). Always quoted
    (or a literal) except INBOX, which clients compare as an atom."""
    if name.upper() == "INBOX":
        return b"INBOX"
    return string(name if utf8 else mutf7.encode(name), utf8=utf8)


def _text(text: str, code: ResponseCode | None, default: str) -> bytes:
    """resp-text: ``["[" code "]" SP] text``. Text is server-chosen but may quote client
    input, so CR/LF/NUL are removed, and it is kept ASCII so that IMAP4rev1 clients can
    read it; a leading "[" would read as a response code, so it is neutralised."""
    clean = _CRLF_NUL.sub(" ", text).strip() or default
    if code is None and clean.startswith("["):
        clean = "(" + clean[1:]
    body = clean.encode("ascii", "replace")
    if code is None:
        return body
    return b"[" + _CRLF_NUL.sub(" ", str(code)).encode("utf-8") + b"] " + body


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class Tagged:
    """A command's completion: ``tag OK|NO|BAD [code] text`` (RFC 9051 §7.1)."""

    tag: str
    status: Status
    text: str = ""
    code: ResponseCode | None = None

    def to_bytes(self) -> bytes:
        return b"%s %s %s\r\n" % (self.tag.encode("ascii", "replace"),
                                  self.status.value.encode(),
                                  _text(self.text, self.code, "completed"))


@dataclass(frozen=True, slots=True)
class Untagged:
    """``* OK|NO|BAD|PREAUTH|BYE [code] text`` (RFC 9051 §7.1)."""

    status: Status
    text: str = ""
    code: ResponseCode | None = None

    def to_bytes(self) -> bytes:
        return b"* %s %s\r\n" % (self.status.value.encode(),
                                 _text(self.text, self.code, self.status.value.lower()))


@dataclass(frozen=True, slots=True)
class Continuation:
    """A command continuation request (RFC 9051 §7.6): ``+ text``, or ``+ base64`` for a
    SASL challenge when ``data`` is given (an empty challenge is ``+ `` alone)."""

    text: str = ""
    data: bytes | None = None

    def to_bytes(self) -> bytes:
        if self.data is not None:
            return b"+ " + base64.b64encode(self.data) + b"\r\n"
        return b"+ " + _text(self.text, None, "Ready") + b"\r\n"


@dataclass(frozen=True, slots=True)
class Data:
    """An untagged data response, ``* `` + payload (already IMAP syntax) + CRLF."""

    payload: bytes

    def to_bytes(self) -> bytes:
        return b"* " + self.payload + b"\r\n"

    def __repr__(self) -> str:
        head = self.payload[:60]
        return f"Data({head!r}{'...' if len(self.payload) > 60 else ''})"


Response = Tagged | Untagged | Continuation | Data


def to_bytes(response: Response) -> bytes:
    return response.to_bytes()
