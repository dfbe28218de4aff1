"""Parsing helpers for the SMTP server core: command arguments (RFC 5321 §4.1.1-2, with the
ESMTP parameters of RFC 1870, 6152, 6531, 3461, 4954, 3030) and the DATA byte stream
(RFC 5321 §4.5.2 dot-stuffing, §4.1.1.4 end of data).

Everything here is pure: functions take text/bytes and return values or raise
`CommandError(reply)` carrying the catalogue reply to send.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from kittiwake.smtp import replies as r
from kittiwake.smtp.replies import Reply


class CommandError(Exception):
    """A command's arguments are unacceptable; `reply` says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.lines[0])
        self.reply = reply


Params = dict[str, str | None]

# RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
# RFC 3461 §4 xtext: xchar is "!".."~" except "+" and "="; hexchar is "+" and two upper hex.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*\Z")
# RFC 4422 §3.1 sasl-mech = 1*20 (UPPER-ALPHA / DIGIT / "-" / "_"); compared case-insensitively.
_SASL_MECH = re.compile(r"[A-Za-z0-9_-]{1,20}\Z")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]*={0,2}|=)\Z")
_DIGITS = re.compile(r"[0-9]{1,20}\Z")
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_MAX_ENVID = 100  # RFC 3461 §4.4
_MAX_ORCPT = 500  # RFC 3461 §4.2


def split_command(line: str) -> tuple[str, str]:
    """Split a command line into (upper-cased verb, argument text).

    Trailing spaces are tolerated (many clients send "RSET "). A verb that is not plain ASCII
    letters can never match (and "ſ".upper() == "S" must not turn into a command).
    """
    line = line.rstrip(" ")
    verb, _, arg = line.partition(" ")
    if not verb.isascii() or not verb.isalpha():
        return "", arg
    return verb.upper(), arg.lstrip(" ")


def is_printable(text: str) -> bool:
    """No controls (C0, DEL, C1) and no invalid UTF-8 (lone surrogates from surrogateescape)."""
    for ch in text:
        if ch.isascii():
            if ch < " " or ch == "\x7f":
                return False
        elif unicodedata.category(ch) in ("Cc", "Cs"):
            return False
    return True


def split_path_args(arg: str, keyword: str) -> tuple[str, Params]:
    """Split `FROM:<path> params` / `TO:<path> params` into the path text and parameters.

    RFC 5321 §4.1.1.2 has no space after the colon, but "MAIL FROM: <a@b>" is common enough
    that every major MTA accepts it. The path ends at the first '>' outside a quoted string,
    so `<"a>b"@x>` works.
    """
    prefix = keyword + ":"
    if arg[: len(prefix)].upper() != prefix:
        raise CommandError(r.SYNTAX_ERROR)
    rest = arg[len(prefix):].lstrip(" ")
    if not rest.startswith("<"):
        raise CommandError(r.BAD_SENDER_SYNTAX if keyword == "FROM" else r.BAD_ADDRESS_SYNTAX)
    end = _path_end(rest)
    if end < 0:
        raise CommandError(r.BAD_SENDER_SYNTAX if keyword == "FROM" else r.BAD_ADDRESS_SYNTAX)
    path, tail = rest[: end + 1], rest[end + 1:]
    if tail and not tail.startswith(" "):
        raise CommandError(r.SYNTAX_ERROR)
    return path, parse_params(tail)


def _path_end(text: str) -> int:
    quoted = False
    i = 1
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
        i += 1
    return -1


def parse_params(text: str) -> Params:
    """RFC 5321 §4.1.2 Mail-parameters: SP-separated `keyword[=value]`; keywords upper-cased.

    Values may contain UTF-8 (RFC 6531 §3.3 esmtp-value); each parameter's own check decides.
    A repeated keyword is a syntax error: which one would we obey?
    """
    params: Params = {}
    for item in text.split(" "):
        if item == "":
            continue
        key, eq, value = item.partition("=")
        if not _KEYWORD.match(key):
            raise CommandError(r.SYNTAX_ERROR)
        if eq and (value == "" or "=" in value or not is_printable(value)):
            raise CommandError(r.SYNTAX_ERROR)
        key = key.upper()
        if key in params:
            raise CommandError(r.SYNTAX_ERROR)
        params[key] = value if eq else None
    return params


def check_mail_params(params: Params, *, max_size: int, dsn: bool, smtputf8: bool,
                      auth: bool) -> None:
    """Validate MAIL FROM parameters (unknown → 555, RFC 5321 §4.1.1.11)."""
    for key, value in params.items():
        if key == "SIZE":
            # RFC 1870 §6: a declared size over our limit is refused at MAIL time with 552.
            if value is None or not _DIGITS.match(value):
                raise CommandError(r.SYNTAX_ERROR)
            if int(value) > max_size:
                raise CommandError(r.MESSAGE_TOO_BIG)
        elif key == "BODY":
            # RFC 6152 8BITMIME; BINARYMIME (RFC 3030) is not offered.
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise CommandError(r.SYNTAX_ERROR)
        elif key == "SMTPUTF8" and smtputf8:
            if value is not None:  # RFC 6531 §3.4: no value
                raise CommandError(r.SYNTAX_ERROR)
        elif key == "RET" and dsn:
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise CommandError(r.SYNTAX_ERROR)
        elif key == "ENVID" and dsn:
            if value is None or len(value) > _MAX_ENVID or not _XTEXT.match(value):
                raise CommandError(r.SYNTAX_ERROR)
        elif key == "AUTH" and auth:
            # RFC 4954 §5: AUTH=<> or AUTH=xtext(mailbox); passed through to the session.
            if value is None or not _XTEXT.match(value):
                raise CommandError(r.SYNTAX_ERROR)
        else:
            raise CommandError(r.PARAM_NOT_RECOGNIZED)


def check_rcpt_params(params: Params, *, dsn: bool) -> None:
    """Validate RCPT TO parameters: only the RFC 3461 DSN ones exist here."""
    for key, value in params.items():
        if key == "NOTIFY" and dsn:
            # RFC 3461 §4.1: "NEVER" alone, or a list of SUCCESS/FAILURE/DELAY.
            if value is None:
                raise CommandError(r.SYNTAX_ERROR)
            words = value.upper().split(",")
            if words != ["NEVER"] and (not set(words) <= _NOTIFY_VALUES
                                        or len(set(words)) != len(words)):
                raise CommandError(r.SYNTAX_ERROR)
        elif key == "ORCPT" and dsn:
            if value is None or len(value) > _MAX_ORCPT or not _valid_orcpt(value):
                raise CommandError(r.SYNTAX_ERROR)
        else:
            raise CommandError(r.PARAM_NOT_RECOGNIZED)


def _valid_orcpt(value: str) -> bool:
    # RFC 3461 §4.2: addr-type ";" xtext; RFC 6533 §3 lets addr-type "utf-8" carry UTF-8.
    addr_type, semi, addr = value.partition(";")
    if not semi or not _KEYWORD.match(addr_type) or addr == "":
        return False
    if addr_type.lower() == "utf-8" and not addr.isascii():
        return is_printable(addr)
    return bool(_XTEXT.match(addr))


def parse_bdat(arg: str) -> tuple[int, bool]:
    """RFC 3030 §3: `BDAT chunk-size [SP "LAST"]`."""
    parts = arg.split(" ")
    if not parts or not _DIGITS.match(parts[0]) or len(parts) > 2:
        raise CommandError(r.SYNTAX_ERROR)
    if len(parts) == 2 and parts[1].upper() != "LAST":
        raise CommandError(r.SYNTAX_ERROR)
    return int(parts[0]), len(parts) == 2


def parse_auth(arg: str) -> tuple[str, str | None]:
    """RFC 4954 §4: `AUTH mechanism [SP initial-response]`; "=" is an empty response."""
    parts = arg.split(" ")
    if not parts or not _SASL_MECH.match(parts[0]) or len(parts) > 2:
        raise CommandError(r.SYNTAX_ERROR)
    initial = parts[1] if len(parts) == 2 else None
    if initial is not None and not _BASE64.match(initial):
        raise CommandError(r.SYNTAX_ERROR)
    return parts[0].upper(), initial


@dataclass(slots=True)
class DataReader:
    """Decodes a DATA stream: removes dot-stuffing and finds the end of data.

    RFC 5321 §4.5.2: a line starting with "." has that dot removed; §4.1.1.4: only
    <CRLF>.<CRLF> ends the data, where the first CRLF ends the last line of the message
    (so the content keeps it). A bare CR or LF never starts a line: treating "\\n.\\n" or
    "\\r\\n.\\n" as an end is exactly the SMTP smuggling bug (CVE-2023-51764/51765/51766).

    At most three bytes are held back (a trailing CR, or CRLF "." CR), so memory stays bounded
    however large the message is. Once an error is found, content
    is no longer passed on (the session will discard the message) but input is still consumed
    up to the terminator.
    """

    max_size: int
    max_line: int
    reject_bare_line_endings: bool
    at_line_start: bool = True  # the DATA command's CRLF precedes the first line
    line_len: int = 0  # octets of the current line as transmitted (stuffing included)
    size: int = 0  # unstuffed octets so far
    error: Reply | None = None
    done: bool = False

    def feed(self, buf: bytearray) -> bytes:
        """Consume what can be decided from `buf` (deleting it) and return the content."""
        out = bytearray()
        pos, n = 0, len(buf)
        while pos < n:
            if self.at_line_start:
                if buf[pos] == 0x2E:  # "."
                    head = bytes(buf[pos:pos + 3])
                    if head == b".\r\n":
                        pos += 3
                        self.done = True
                        break
                    if len(head) < 3 and b".\r\n".startswith(head):
                        break  # cannot decide yet
                    pos += 1  # a stuffed dot: removed, but it counts toward the line length
                    self.line_len = 1
                self.at_line_start = False
                continue
            # Everything up to the next <CRLF>.<CRLF> is content, processed with C-speed
            # bytes operations however the lines look. Without a terminator in sight, a tail
            # that may begin one is held back: a lone CR, or the "." / ".\r" after a CRLF
            # (left for the line-start logic above).
            idx = buf.find(b"\r\n.\r\n", pos)
            if idx >= 0:
                end = idx + 2
            elif buf.endswith(b"\r\n.", pos):
                end = n - 1
            elif buf.endswith(b"\r\n.\r", pos):
                end = n - 2
            elif buf[n - 1] == 0x0D:
                end = n - 1
            else:
                end = n
            if end == pos:
                break
            raw = bytes(buf[pos:end])
            content = self._check(raw)
            if content:
                out += content
            pos = end
            self.at_line_start = raw.endswith(b"\r\n")
        del buf[:pos]
        return bytes(out)

    def _check(self, region: bytes) -> bytes | None:
        """Check a raw (still stuffed) region; return its unstuffed content, or None once the
        message has failed."""
        if self.error is not None:
            return None  # only looking for the terminator now
        crlf = region.count(b"\r\n")
        # A region never ends in a lone CR (held back) and never starts with the LF of a
        # previous region's CR, so counting is exact: every CR and LF must be in a CRLF.
        if self.reject_bare_line_endings and (
                region.count(b"\r") != crlf or region.count(b"\n") != crlf):
            self.error = r.BARE_LINE_ENDING
            return None
        # RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF. A bare LF
        # (when allowed through) also ends a line for this purpose: that is how every
        # consumer of the message will split it.
        first = region.find(b"\n")
        if first < 0:
            self.line_len += len(region)
            longest = self.line_len
        else:
            last = region.rfind(b"\n")
            longest = self.line_len + first + 1
            if last != first:
                longest = max(longest, 1 + max(map(len, region[first + 1:last].split(b"\n"))))
            self.line_len = len(region) - last - 1
            longest = max(longest, self.line_len)
        if longest > self.max_line:
            self.error = r.TEXT_LINE_TOO_LONG
            return None
        # RFC 5321 §4.5.2 unstuffing. Removing a "." after CRLF cannot create or break a CRLF
        # pair, so the checks above were valid on the raw bytes.
        content = region.replace(b"\r\n.", b"\r\n")
        self.size += len(content)
        if self.size > self.max_size:
            self.error = r.MESSAGE_TOO_BIG
            return None
        return content
