"""Maildir and Maildir++ on disk: unique names, flags in the `:2,` info, folders, walking.

References: the Maildir spec (https://cr.yp.to/proto/maildir.html) for delivery and file
names; Courier's Maildir++ (folders as `.Name` subdirectories of the INBOX, `maildirfolder`
marker, `,S=<size>` in names) which Dovecot, mutt and mbsync all understand.  Keeping to
these conventions is what lets a user walk away with their mail.

This module does file-system work only; it knows nothing of the index or of SQLite.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from kittiwake.store.errors import InvalidMailboxName

INBOX = "INBOX"
SUBDIRS = ("tmp", "new", "cur")
TMP_MAX_AGE = 36 * 3600
"""Maildir spec: a tmp/ file untouched for 36 hours is a failed delivery and may be removed."""

# Maildir spec "info" letters ↔ IMAP flags.  P ("passed": resent/forwarded/bounced) has no IMAP
# system flag; $Forwarded (RFC 5788 registry) is the keyword clients use for the same idea.
_INFO_TO_FLAG: Mapping[str, str] = MappingProxyType(
    {
        "D": "\\Draft",
        "F": "\\Flagged",
        "P": "$Forwarded",
        "R": "\\Answered",
        "S": "\\Seen",
        "T": "\\Deleted",
    }
)
_FLAG_TO_INFO: Mapping[str, str] = MappingProxyType(
    {flag.lower(): letter for letter, flag in _INFO_TO_FLAG.items()}
)
SYSTEM_FLAGS = frozenset({"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"})
_CANONICAL: Mapping[str, str] = MappingProxyType(
    {f.lower(): f for f in (*SYSTEM_FLAGS, "$Forwarded")}
)


# ---------------------------------------------------------------------------- flags


def canonical_flags(flags: Iterable[str]) -> frozenset[str]:
    """Normalise flags as the index stores them.

    IMAP flags are case-insensitive (RFC 9051 §2.3.2), so system flags are spelled one way;
    \\Recent is a per-session property, never stored.  A flag containing white space cannot be
    an IMAP atom and would corrupt the space-separated column, so it is refused.
    """
    out = set()
    for flag in flags:
        if not flag or any(c.isspace() for c in flag):
            raise ValueError(f"bad flag {flag!r}")
        low = flag.lower()
        if low == "\\recent":
            continue
        out.add(_CANONICAL.get(low, flag))
    return frozenset(out)


def format_flags(flags: Iterable[str]) -> str:
    """The `messages.flags` text: system flags first, then keywords, each sorted."""
    flags = canonical_flags(flags)
    return " ".join(sorted(flags, key=lambda f: (not f.startswith("\\"), f.lower())))


def parse_flags(text: str) -> frozenset[str]:
    return frozenset(text.split())


def info_for(flags: Iterable[str]) -> str:
    """The Maildir info for `flags`, e.g. "2,FS": letters in ASCII order, as the spec requires.
    Keywords other than $Forwarded are kept in the index only."""
    letters = {_FLAG_TO_INFO[f.lower()] for f in flags if f.lower() in _FLAG_TO_INFO}
    return "2," + "".join(sorted(letters))


def flags_from_info(info: str | None) -> frozenset[str]:
    """Flags from a Maildir info.  Lower-case letters are Dovecot keyword indexes into its own
    dovecot-keywords file, which we do not share: ignored, like any unknown letter."""
    if not info or not info.startswith("2,"):
        return frozenset()
    return frozenset(_INFO_TO_FLAG[c] for c in info[2:] if c in _INFO_TO_FLAG)


def split_name(name: str) -> tuple[str, str | None]:
    """`base:2,FS` → ("base", "2,FS"); a name without info → (name, None)."""
    base, colon, info = name.partition(":")
    return base, (info if colon else None)


def file_name(base: str, flags: Iterable[str] | None) -> str:
    """The name in cur/ (`base:2,<info>`) for flags, or the bare base for new/ when None."""
    return base if flags is None else f"{base}:{info_for(flags)}"


# ---------------------------------------------------------------------------- unique names


class UniqueNames:
    """Generates Maildir base names: `<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>`.

    Unique per the spec's recipe — time, pid and a per-process delivery counter — so no two
    deliveries of this process, nor of another program on this host, collide.  The counter is
    an `itertools.count`, whose `next()` is atomic under the GIL, so the writer's pool threads
    can share one instance.  `,S=` lets Maildir++ readers learn the size without a stat().
    """

    def __init__(self, hostname: str | None = None) -> None:
        host = hostname or socket.gethostname() or "localhost"
        # Maildir spec: '/' and ':' are unsafe in the host part; Dovecot adds ',' (its field
        # separator).  Octal escapes as the spec suggests.
        self.hostname = host.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")
        self._counter = itertools.count(1)

    def next(self, size: int, now: float | None = None) -> str:
        now = time.time() if now is None else now
        sec = int(now)
        usec = int((now - sec) * 1_000_000)
        return f"{sec}.M{usec}P{os.getpid()}Q{next(self._counter)}.{self.hostname},S={size}"


# ---------------------------------------------------------------------------- folders


def folder_dir(root: Path, mailbox: str) -> Path:
    """Maildir++ directory of an IMAP mailbox name, hierarchy separator "/".

    "INBOX" (any case, RFC 9051 §5.1) is the account root; "Sent" → ".Sent"; "a/b" → ".a.b".
    Maildir++ uses "." as its own separator, so a literal "." inside a name part is written
    "%2E" (and "%" as "%25") to keep "a.b" and "a/b" apart.
    """
    if mailbox.upper() == INBOX:
        return root
    parts = mailbox.split("/")
    for part in parts:
        if not part or any(ord(c) < 32 or c == "\x7f" for c in part):
            raise InvalidMailboxName(f"bad mailbox name {mailbox!r}")
    escaped = (p.replace("%", "%25").replace(".", "%2E") for p in parts)
    return root / ("." + ".".join(escaped))


def create_maildir(path: Path, *, folder: bool, durable: bool = True) -> None:
    """Create tmp/new/cur (mode 0700: mail is private); folders also get the Maildir++
    `maildirfolder` marker that tells quota-aware tools the parent holds the quota.

    `durable` fsyncs the new entries: a delivery's directory fsync makes its file durable
    inside new/, which is worth nothing if new/ itself could vanish in a crash.
    """
    for sub in SUBDIRS:
        (path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder:
        (path / "maildirfolder").touch(mode=0o600, exist_ok=True)
    if durable:
        fsync_dir(path)


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def fsync_dir(path: Path) -> None:
    """Make a rename into `path` durable (POSIX: the entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- walking


@dataclass(frozen=True, slots=True)
class WalkEntry:
    """One message file found on disk."""

    base: str  # the name without ':2,' info: the index key
    path: Path
    flags: frozenset[str]  # from the info; only meaningful for files in cur/
    in_cur: bool
    mtime: float
    size: int


def walk(folder: Path) -> list[WalkEntry]:
    """Message files in new/ and cur/ (never tmp/: those are unfinished deliveries).

    Dot files are skipped (the spec reserves them).  new/ is listed before cur/: a reader
    moving a file new/ → cur/ while we look is then seen at least once, never missed.  A base
    seen in both is reported from cur/, whose copy carries the flags.
    """
    found: dict[str, WalkEntry] = {}
    for sub in ("new", "cur"):
        try:
            entries = list(os.scandir(folder / sub))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # moved by a reader while we looked
                continue
            base, info = split_name(entry.name)
            flags = flags_from_info(info) if sub == "cur" else frozenset()
            found[base] = WalkEntry(
                base, Path(entry.path), flags, sub == "cur", st.st_mtime, st.st_size
            )
    return list(found.values())


def locate(folder: Path, base: str, flags: Iterable[str]) -> Path | None:
    """Find the file of an indexed message.

    Readers move files from new/ to cur/ and rewrite the info, so the name is not fixed: try
    the name our own flags predict, then new/, then scan cur/ for the base.
    """
    flags = frozenset(flags)
    for candidate in (folder / "cur" / file_name(base, flags), folder / "new" / base):
        if candidate.is_file():
            return candidate
    prefix = base + ":"
    try:
        with os.scandir(folder / "cur") as it:
            for entry in it:
                if entry.name == base or entry.name.startswith(prefix):
                    return Path(entry.path)
    except FileNotFoundError:
        pass
    return None


def clean_tmp(folder: Path, now: float | None = None, max_age: float = TMP_MAX_AGE) -> int:
    """Delete tmp/ files older than `max_age`; return how many.  Younger ones may belong to a
    delivery in progress (ours or another program's) and are left alone.  The spec says "not
    accessed"; with noatime mounts atime is stale, so the newer of atime and mtime counts."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(folder / "tmp"))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            if now - max(st.st_atime, st.st_mtime) > max_age:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
