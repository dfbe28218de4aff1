"""The token reader under the IMAP command parser (RFC 9051 §4 data formats, §9 grammar).

A command arrives from the framer (:mod:`kittiwake.imap.framing`) as its lines and the
literals between them: ``lines[i]`` ends with the literal marker whose data is
``literals[i]``.  The :class:`Cursor` walks those segments, so literal data is never
copied back into a line and never scanned as syntax — the framer has already decided
where each literal starts and ends, and the parser only has to agree (a marker must end
its line, RFC 9051 §4.3).

Every syntax error raises :class:`Bad`, which the parser turns into a tagged BAD; the
cursor itself holds no state beyond the command, so an error can never desynchronise
the connection.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone

from kittiwake.imap import mutf7
from kittiwake.imap.types import STAR, SYSTEM_FLAGS, SequenceSet

__all__ = ["ATOM_CHARS", "MAX_NUMBER", "MAX_NUMBER64", "Bad", "Cursor", "decode_text"]

MAX_NUMBER = 2**32 - 1  # RFC 9051 §9: number, nz-number (unsigned 32-bit)
MAX_NUMBER64 = 2**63 - 1  # number64, mod-sequence-value (RFC 7162 §7: 63 bits)

# ATOM-CHAR: CHAR (%x01-7F) minus atom-specials: ( ) { SP CTL % * " \ ] (RFC 9051 §9).
ATOM_CHARS = rb"\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e"
_ATOM = re.compile(rb"[" + ATOM_CHARS + rb"]+")
_ASTRING_ATOM = re.compile(rb"[" + ATOM_CHARS + rb"\x5d]+")  # ASTRING-CHAR adds "]"
_LIST_ATOM = re.compile(rb"[" + ATOM_CHARS + rb"\x25\x2a\x5d]+")  # list-char: + % * ]
_FLAG = re.compile(rb"\\?[" + ATOM_CHARS + rb"]+")
# QUOTED-CHAR: TEXT-CHAR (no CR, LF, NUL) except " and \, or \ followed by one of them.
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_UNESCAPE = re.compile(rb'\\(["\\])')
_LITERAL = re.compile(rb"(~?)\{([0-9]+)(\+?)\}")
_NUMBER = re.compile(rb"[0-9]+")
_SEQSET = re.compile(rb"[0-9*:,$]+")
_SEQ_ELEMENT = re.compile(r"([0-9]+|\*)(?::([0-9]+|\*))?")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
# date-time: DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE;
# a one-digit day without its leading space is accepted too (seen from real clients).
_DATE_TIME = re.compile(
    rb'"( ?[0-9]|[0-9]{2})-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_MONTHS = {m: i for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}
# RFC 9051 §5.1 / RFC 5198: no control characters in mailbox names.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Bad(Exception):
    """A syntax error: the command is answered with a BAD carrying ``text`` (and the
    response code ``code`` when one applies, e.g. ``LIMIT``)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


def decode_text(raw: bytes, charset: str | None = None) -> str:
    """A string argument as text: UTF-8 (RFC 9051 strings are UTF-8; RFC 6855), or the
    SEARCH CHARSET when one was named and Python knows it."""
    try:
        if charset is not None and charset.upper() not in ("UTF-8", "US-ASCII"):
            return raw.decode(codecs.lookup(charset).name)
        return raw.decode("utf-8")
    except (LookupError, UnicodeDecodeError):
        raise Bad("string is not valid in its charset") from None


class Cursor:
    """A read position in one framed command."""

    __slots__ = ("_lines", "_literals", "_seg", "depth", "line", "max_nesting",
                 "max_ranges", "pos", "utf8")

    def __init__(self, lines: Sequence[bytes], literals: Sequence[bytes], *,
                 utf8: bool = False, max_nesting: int = 64, max_ranges: int = 10_000) -> None:
        self._lines = lines
        self._literals = literals
        self._seg = 0
        self.line = lines[0]
        self.pos = 0
        self.utf8 = utf8
        self.depth = 0
        self.max_nesting = max_nesting
        self.max_ranges = max_ranges

    # --- position ---------------------------------------------------------------------------

    def peek(self) -> int:
        """The next octet of the current line, or -1 at its end."""
        return self.line[self.pos] if self.pos < len(self.line) else -1

    def peek_upper(self, word: bytes) -> bool:
        """Whether the line continues with ``word`` (ASCII, case-insensitive)."""
        end = self.pos + len(word)
        return self.line[self.pos:end].upper() == word

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self._seg == len(self._lines) - 1

    def end(self) -> None:
        if not self.at_end():
            raise Bad("unexpected extra arguments")

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise Bad("expected a space" if not self.at_end() else "missing arguments")
        self.pos += 1

    def try_sp(self) -> bool:
        """Consume a space if there is one (for optional trailing arguments)."""
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def char(self, ch: bytes) -> None:
        if self.peek() != ch[0]:
            raise Bad(f"expected {ch.decode()!r}")
        self.pos += 1

    def try_char(self, ch: bytes) -> bool:
        if self.peek() == ch[0]:
            self.pos += 1
            return True
        return False

    def enter(self) -> None:
        """Open one nesting level (parenthesis, NOT/OR operand); limited so that a hostile
        command cannot exhaust the recursion of the parser or of the search evaluator."""
        self.depth += 1
        if self.depth > self.max_nesting:
            raise Bad("too deeply nested", "LIMIT")

    def leave(self) -> None:
        self.depth -= 1

    def _match(self, pattern: re.Pattern[bytes]) -> re.Match[bytes] | None:
        m = pattern.match(self.line, self.pos)
        if m is not None:
            self.pos = m.end()
        return m

    # --- atoms and strings ------------------------------------------------------------------

    def atom(self) -> str:
        m = self._match(_ATOM)
        if m is None:
            raise Bad("expected an atom" if not self.at_end() else "missing arguments")
        return m.group().decode("ascii")

    def keyword(self) -> str:
        """An atom in upper case: command names and keywords are case-insensitive."""
        return self.atom().upper()

    def quoted(self) -> bytes:
        m = self._match(_QUOTED)
        if m is None:
            raise Bad("malformed quoted string")
        return _UNESCAPE.sub(rb"\1", m.group(1))

    def literal(self, allow_binary: bool = False) -> tuple[bytes, bool]:
        """A literal's data and whether it was a literal8 (``~{n}``, RFC 3516 §4.3)."""
        m = _LITERAL.match(self.line, self.pos)
        if m is None:
            raise Bad("malformed literal")
        if m.end() != len(self.line) or self._seg >= len(self._literals):
            raise Bad("a literal must end its line")  # RFC 9051 §4.3: {n} CRLF octets
        data = self._literals[self._seg]
        binary = bool(m.group(1))
        if binary and not allow_binary:
            raise Bad("literal8 is only allowed for APPEND data")
        if not binary and b"\x00" in data:
            raise Bad("NUL in a literal (RFC 9051 §4.3: use literal8)")
        self._seg += 1
        self.line = self._lines[self._seg]
        self.pos = 0
        return data, binary

    def at_literal(self) -> bool:
        """A literal (``{`` or literal8 ``~{``) starts here; a lone ``~`` is an atom char."""
        ch = self.peek()
        return ch == 0x7B or (ch == 0x7E and self.line[self.pos + 1:self.pos + 2] == b"{")

    def at_string(self) -> bool:
        return self.peek() == 0x22 or self.at_literal()

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        if self.at_literal():
            return self.literal()[0]
        raise Bad("expected a string" if not self.at_end() else "missing arguments")

    def astring(self) -> bytes:
        if self.at_string():
            return self.string()
        m = self._match(_ASTRING_ATOM)
        if m is None:
            raise Bad("expected a string or atom" if not self.at_end() else "missing arguments")
        return m.group()

    def nstring(self) -> bytes | None:
        if self.peek_upper(b"NIL") and not self._atom_continues(3):
            self.pos += 3
            return None
        return self.string()

    def _atom_continues(self, n: int) -> bool:
        return _ASTRING_ATOM.match(self.line, self.pos + n) is not None

    def text(self) -> str:
        """An astring as UTF-8 text."""
        return decode_text(self.astring())

    # --- numbers and sets -------------------------------------------------------------------

    def number(self, limit: int = MAX_NUMBER, nonzero: bool = False) -> int:
        m = self._match(_NUMBER)
        if m is None:
            raise Bad("expected a number" if not self.at_end() else "missing arguments")
        digits = m.group()
        if len(digits) > 20 or int(digits) > limit:
            raise Bad("number out of range")
        value = int(digits)
        if nonzero and value == 0:
            raise Bad("zero is not allowed here")
        return value

    def sequence_set(self, allow_saved: bool = True) -> SequenceSet:
        """sequence-set (RFC 9051 §9), or ``$`` (RFC 5182 §2) when allowed."""
        m = self._match(_SEQSET)
        if m is None:
            raise Bad("expected a sequence set" if not self.at_end() else "missing arguments")
        text = m.group().decode("ascii")
        if text == "$":
            if not allow_saved:
                raise Bad("$ is not allowed here")
            return SequenceSet(saved=True)
        elements = text.split(",")
        if len(elements) > self.max_ranges:
            raise Bad("too many ranges in sequence set", "LIMIT")
        ranges: list[tuple[int, int]] = []
        for element in elements:
            em = _SEQ_ELEMENT.fullmatch(element)
            if em is None:
                raise Bad("malformed sequence set")
            first = _seq_number(em.group(1))
            second = _seq_number(em.group(2)) if em.group(2) is not None else first
            ranges.append((first, second))
        return SequenceSet(tuple(ranges))

    # --- dates ------------------------------------------------------------------------------

    def date(self) -> date:
        """``date`` (RFC 9051 §9): d-Mon-yyyy, optionally quoted."""
        quoted = self.try_char(b'"')
        m = self._match(_DATE)
        if m is None or (quoted and not self.try_char(b'"')):
            raise Bad("malformed date")
        month = _MONTHS.get(m.group(2).decode("ascii").upper())
        try:
            if month is None:
                raise ValueError
            return date(int(m.group(3)), month, int(m.group(1)))
        except ValueError:
            raise Bad("invalid date") from None

    def date_time(self) -> datetime:
        """``date-time`` (RFC 9051 §9), e.g. ``"17-Jul-1996 02:44:25 -0700"``."""
        m = self._match(_DATE_TIME)
        if m is None:
            raise Bad("malformed date-time")
        day, mon, year, hh, mm, ss, sign, zh, zm = (g.decode("ascii") for g in m.groups())
        month = _MONTHS.get(mon.upper())
        try:
            if month is None or int(zm) >= 60:
                raise ValueError
            offset = timedelta(hours=int(zh), minutes=int(zm))
            zone = timezone(-offset if sign == "-" else offset)
            return datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=zone)
        except ValueError:
            raise Bad("invalid date-time") from None

    # --- flags and names --------------------------------------------------------------------

    def flag(self, *, system: bool = True, recent: bool = False) -> str:
        """A flag (RFC 9051 §2.3.2): system flags in canonical case; keywords as sent.

        ``\\Recent`` cannot be set by a client (RFC 3501 §2.3.2) and an unknown
        ``\\Name`` is a flag-extension no client may store, so both are refused unless the
        caller says otherwise.
        """
        m = self._match(_FLAG)
        if m is None:
            raise Bad("expected a flag" if not self.at_end() else "missing arguments")
        text = m.group().decode("ascii")
        if not text.startswith("\\"):
            return text
        if not system:
            raise Bad("a system flag is not allowed here")
        canonical = SYSTEM_FLAGS.get(text.lower())
        if canonical is None or (canonical == "\\Recent" and not recent):
            raise Bad(f"invalid system flag {text}")
        return canonical

    def flag_list(self) -> tuple[str, ...]:
        """``(flag *(SP flag))``, possibly empty; duplicates dropped."""
        self.char(b"(")
        flags: list[str] = []
        if not self.try_char(b")"):
            while True:
                flag = self.flag()
                if flag not in flags:
                    flags.append(flag)
                if self.try_char(b")"):
                    break
                self.sp()
        return tuple(flags)

    def decode_mailbox(self, raw: bytes, *, pattern: bool = False) -> str:
        """A mailbox name or LIST pattern as Unicode.

        With IMAP4rev2 or UTF8=ACCEPT enabled, names are UTF-8 (RFC 9051 §5.1, RFC 6855
        §3) and ``&`` is an ordinary character; otherwise they are modified UTF-7 (RFC 3501
        §5.1.3).  INBOX is case-insensitive (RFC 9051 §5.1) and becomes "INBOX".
        """
        if self.utf8:
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise Bad("mailbox name is not UTF-8") from None
        else:
            try:
                name = mutf7.decode(raw.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise Bad("mailbox name is not valid modified UTF-7") from None
        if _CONTROL.search(name):
            raise Bad("control character in mailbox name")
        if not pattern and name.upper() == "INBOX":
            return "INBOX"
        return name

    def mailbox(self) -> str:
        return self.decode_mailbox(self.astring())

    def list_mailbox(self) -> str:
        """``list-mailbox``: list-chars (with wildcards) or a string."""
        if self.at_string():
            return self.decode_mailbox(self.string(), pattern=True)
        m = self._match(_LIST_ATOM)
        if m is None:
            raise Bad("expected a mailbox pattern")
        return self.decode_mailbox(m.group(), pattern=True)


def _seq_number(text: str) -> int:
    if text == "*":
        return STAR
    if len(text) > 10 or not 0 < int(text) <= MAX_NUMBER:
        raise Bad("sequence number out of range")
    return int(text)
