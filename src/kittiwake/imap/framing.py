"""Splitting the client's byte stream into commands (RFC 9051 §2.2.1, §4.3; RFC 7888).

An IMAP command is a line, or lines joined by literals: a line ending in ``{n}``
(synchronising: the client waits for our ``+`` before sending the n octets), ``{n+}``
(non-synchronising, LITERAL+/LITERAL-: the octets follow at once) or ``~{n}`` (literal8,
RFC 3516) carries on after n octets of data.  The framer finds those boundaries before
any parsing, so the parser never has to guess where data ends, and enforces the limits
— line length, literal size, command size — in a way that keeps us in step with the
client whatever we refuse:

* a refused *synchronising* literal is answered BAD at once; the client, never having
  received ``+``, does not send the data, so we simply expect a new command;
* a refused *non-synchronising* literal's octets are already on their way: they are
  skipped, then the rest of that command (further lines and non-synchronising literals)
  is discarded (RFC 7888 §4). One so large that skipping it is unreasonable ends the
  connection instead, which RFC 7888 §4 also allows;
* an over-long line is answered BAD and discarded up to its end (remembering its last
  octets, so that a literal it announces is skipped too).

A literal is refused before its data arrives when the command could never run (unknown
command, or not valid in the current state), so a client does not upload a message
only to hear that it was not logged in.  The decisions depend only on the octets and the
state, never on how the octets were split into reads.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from kittiwake.imap.commands import State
from kittiwake.imap.events import ParseError, SendContinuation
from kittiwake.imap.parser import check_command, peek_command
from kittiwake.imap.response import TOOBIG

__all__ = ["LITERAL_MINUS_MAX", "TOO_LONG", "FramedCommand", "Framer", "FramingLimits"]

#: RFC 7888 §5 (LITERAL-), RFC 9051 §4.3: non-synchronising literals up to 4096 octets.
LITERAL_MINUS_MAX = 4096

_MARKER = re.compile(rb"(~?)\{([0-9]+)(\+?)\}$")
_TAIL = 64  # octets of an over-long line kept to spot a literal marker at its end


class _TooLong:
    """Sentinel: the line exceeded the limit (it is being discarded)."""


TOO_LONG = _TooLong()


@dataclass(frozen=True, slots=True)
class FramingLimits:
    max_line_length: int = 64 * 1024  # one line, literal data excluded
    max_literal_size: int = 64 * 1024  # any literal but APPEND's message
    max_append_size: int = 50 * 1024 * 1024  # APPEND's message (the max message size)
    max_command_size: int = 1024 * 1024  # lines + literals, plus max_append_size for APPEND
    literal_plus: bool = True  # False: only LITERAL- (non-sync literals <= 4096 octets)
    max_discard: int = 128 * 1024 * 1024  # larger refused non-sync literals end the session


@dataclass(frozen=True, slots=True)
class FramedCommand:
    """A whole command: ``lines[i]`` (line ending removed) ends with the marker of
    ``literals[i]``; the last line has none."""

    lines: tuple[bytes, ...]
    literals: tuple[bytes, ...]


class _Mode(enum.Enum):
    LINE = "line"  # reading a command line
    LITERAL = "literal"  # reading a literal's octets
    SKIP = "skip"  # discarding a refused non-synchronising literal's octets
    DISCARD = "discard"  # discarding the rest of a refused command
    DEAD = "dead"  # out of step for good (fatal error): read nothing more


class Framer:
    """The incremental splitter; the connection appends to :attr:`buf`."""

    __slots__ = ("_lines", "_literals", "_mode", "_name", "_need", "_scan", "_size",
                 "_skip_line", "_tag", "_tail", "buf", "limits")

    def __init__(self, limits: FramingLimits) -> None:
        self.limits = limits
        self.buf = bytearray()
        self._scan = 0  # where to resume looking for LF in buf
        self._mode = _Mode.LINE
        self._need = 0
        self._tail = b""
        self._skip_line = False
        self._reset()

    def _reset(self) -> None:
        self._lines: list[bytes] = []
        self._literals: list[bytes] = []
        self._size = 0
        self._tag: str | None = None
        self._name: str | None = None

    def take(self) -> bytes:
        """Everything buffered, removed (COMPRESS: these octets are compressed)."""
        data = bytes(self.buf)
        self.buf.clear()
        self._scan = 0
        self._mode = _Mode.LINE
        self._reset()
        return data

    # --- simple lines (IDLE's DONE, AUTHENTICATE responses) ---------------------------------

    def read_line(self, limit: int) -> bytes | _TooLong | None:
        """One CRLF- (or LF-) terminated line without its ending; TOO_LONG once for a
        line over ``limit`` (the rest of which is then dropped); None if incomplete."""
        buf = self.buf
        while True:
            i = buf.find(b"\n", self._scan)
            if self._skip_line:
                if i < 0:
                    buf.clear()
                    self._scan = 0
                    return None
                del buf[:i + 1]
                self._scan = 0
                self._skip_line = False
                continue
            if i < 0:
                if len(buf) > limit:
                    buf.clear()
                    self._scan = 0
                    self._skip_line = True
                    return TOO_LONG
                self._scan = len(buf)
                return None
            line = bytes(buf[:i])
            del buf[:i + 1]
            self._scan = 0
            if line.endswith(b"\r"):
                line = line[:-1]
            return TOO_LONG if len(line) > limit else line

    # --- commands -------------------------------------------------------------------------

    def next(self, state: State) -> FramedCommand | ParseError | SendContinuation | None:
        """The next framing outcome, or None when more octets are needed."""
        buf = self.buf
        limits = self.limits
        while True:
            mode = self._mode
            if mode is _Mode.DEAD:
                return None
            if mode is _Mode.LITERAL:
                if len(buf) < self._need:
                    return None
                self._literals.append(bytes(buf[:self._need]))
                del buf[:self._need]
                self._scan = 0
                self._mode = _Mode.LINE
                continue
            if mode is _Mode.SKIP:
                n = min(self._need, len(buf))
                del buf[:n]
                self._scan = 0
                self._need -= n
                if self._need:
                    return None
                self._mode = _Mode.DISCARD
                self._tail = b""
                continue
            i = buf.find(b"\n", self._scan)
            if mode is _Mode.DISCARD:
                if i < 0:
                    self._tail = (self._tail + bytes(buf[-_TAIL:]))[-_TAIL:]
                    buf.clear()
                    self._scan = 0
                    return None
                tail = (self._tail + bytes(buf[max(0, i - _TAIL):i]))[-_TAIL:]
                del buf[:i + 1]
                self._scan = 0
                self._tail = b""
                error = self._after_discarded_line(tail.removesuffix(b"\r"))
                if error is not None:
                    return error
                continue
            # LINE
            if i < 0 and len(buf) <= limits.max_line_length + 1:
                self._scan = len(buf)
                return None
            if i < 0 or i > limits.max_line_length + 1 or (
                    i == limits.max_line_length + 1 and buf[i - 1] != 0x0D):
                return self._line_too_long()
            line = bytes(buf[:i])
            del buf[:i + 1]
            self._scan = 0
            if line.endswith(b"\r"):
                line = line[:-1]
            outcome = self._line(line, state)
            if outcome is not None:
                return outcome

    def _line(self, line: bytes, state: State
              ) -> FramedCommand | ParseError | SendContinuation | None:
        """A complete line of the current command: finish it, or start its literal."""
        if not self._lines:
            self._tag, self._name = peek_command(line)
        self._lines.append(line)
        self._size += len(line) + 2
        m = _MARKER.search(line)
        if m is None:
            framed = FramedCommand(tuple(self._lines), tuple(self._literals))
            self._reset()
            return framed
        digits = m.group(2)
        size = int(digits) if len(digits) <= 19 else 2**64
        sync = not m.group(3)
        refusal = self._refusal(size, sync, state, self._is_message(line, m.start()))
        if refusal is not None:
            text, code = refusal
            return self._refuse(text, code, size, sync)
        self._size += size
        self._mode = _Mode.LITERAL
        self._need = size
        return SendContinuation() if sync else None

    def _is_message(self, line: bytes, marker: int) -> bool:
        """Whether the literal announced at ``line[marker:]`` is APPEND's message. The
        only other literal APPEND can have is its mailbox name, the first argument (flags
        are atoms and the date-time is quoted): ``tag APPEND {n}``."""
        if self._name != "APPEND":
            return False
        if len(self._lines) > 1:
            return True
        head = line[:marker].rstrip(b" ").split(b" ")
        return len(head) != 2

    def _refusal(self, size: int, sync: bool, state: State,
                 message: bool) -> tuple[str, bool] | None:
        """Why the literal just announced cannot be accepted: (text, TOOBIG?) or None."""
        problem = check_command(self._name, state)
        if problem is not None:
            return problem, False
        limits = self.limits
        append = self._name == "APPEND"
        if size > (limits.max_append_size if message else limits.max_literal_size):
            return "literal too large", True
        if not sync and not limits.literal_plus and size > LITERAL_MINUS_MAX:
            # RFC 7888 §4 (LITERAL-): larger non-synchronising literals are a BAD.
            return "non-synchronizing literal over 4096 octets", True
        budget = limits.max_command_size + (limits.max_append_size if append else 0)
        if self._size + size > budget:
            return "command too large", True
        return None

    def _refuse(self, text: str, toobig: bool, size: int, sync: bool) -> ParseError:
        tag = self._tag
        self._reset()
        code = TOOBIG if toobig else None
        if sync:
            # The client waits for "+", which it will not get: its command is over.
            self._mode = _Mode.LINE
            return ParseError(tag, text, code)
        if size > self.limits.max_discard:
            self._mode = _Mode.DEAD
            return ParseError(tag, text, code, fatal=True)
        self._mode = _Mode.SKIP
        self._need = size
        return ParseError(tag, text, code)

    def _line_too_long(self) -> ParseError:
        """Answer an over-long line now and discard it (and the rest of its command)."""
        tag = self._tag
        if not self._lines:
            # Only a prefix every split of the stream has in full (over-long means more
            # than max_line_length + 1 octets are buffered), and only a tag followed by
            # its space: a cut-off tag must not be echoed as if it were the tag.
            prefix = bytes(self.buf[:min(self.limits.max_line_length + 2, 256)])
            tag, _ = peek_command(prefix)
            if tag is not None and not prefix.startswith(tag.encode("ascii") + b" "):
                tag = None
        self._reset()
        self._mode = _Mode.DISCARD
        self._tail = b""
        return ParseError(tag, "line too long", TOOBIG)

    def _after_discarded_line(self, tail: bytes) -> ParseError | None:
        """A discarded line ended. A non-synchronising literal it announces is skipped
        as well; otherwise the refused command is over."""
        m = _MARKER.search(tail)
        if m is None or not m.group(3):
            self._mode = _Mode.LINE
            return None
        digits = m.group(2)
        size = int(digits) if len(digits) <= 19 else 2**64
        if size > self.limits.max_discard:
            self._mode = _Mode.DEAD
            return ParseError(None, "literal too large to skip", TOOBIG, fatal=True)
        self._mode = _Mode.SKIP
        self._need = size
        return None
