"""Values the store's IMAP operations take and return (see `kittiwake.store.imapstore`).

Kept apart from `models.py` so the IMAP work stays in its own modules.  Frozen and slotted:
they cross from the store's threads to the event loop and into sessions.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from kittiwake.store.errors import StoreError


class MailboxHasChildren(StoreError):
    """DELETE of a mailbox with inferiors (RFC 9051 §6.3.4; RFC 5530 [HASCHILDREN]).  We keep
    no \\Noselect placeholders, so such a delete is refused instead."""


class CannotDoThat(StoreError):
    """An operation the rules forbid on this mailbox: deleting INBOX, renaming a mailbox onto
    itself (RFC 9051 §6.3.4/§6.3.6; RFC 5530 [CANNOT])."""


class OverQuota(StoreError):
    """The account's storage quota would be exceeded (RFC 9208 §4.1.2 [OVERQUOTA])."""


class StoreMode(enum.Enum):
    """STORE FLAGS / +FLAGS / -FLAGS (RFC 9051 §6.4.6)."""

    REPLACE = "replace"
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class MailboxHandle:
    """A mailbox as a selecting session keeps it.  `id` survives RENAME, so a session never
    loses its mailbox to another session renaming it; `uidvalidity` never changes for an id."""

    id: int
    account: str  # folded address
    name: str
    uidvalidity: int


@dataclass(frozen=True, slots=True)
class MailboxListing:
    """One mailbox for LIST/LSUB: name, RFC 6154 attribute(s), subscription."""

    name: str
    special_use: str | None
    subscribed: bool


@dataclass(frozen=True, slots=True)
class ImapStatus:
    """STATUS data (RFC 9051 §6.3.11; RFC 8438 SIZE; RFC 7162 HIGHESTMODSEQ).  \\Recent is
    never set (IMAP4rev2 has none), so RECENT is always 0 for rev1 clients."""

    messages: int
    uidnext: int
    uidvalidity: int
    unseen: int
    deleted: int
    size: int
    highestmodseq: int
    recent: int = 0


@dataclass(frozen=True, slots=True)
class MessageState:
    """What a session caches per message: UID, flags and modseq."""

    uid: int
    flags: frozenset[str]
    modseq: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A mailbox at SELECT time, from one read transaction: its UIDs in order and the
    keywords in use (for FLAGS).  No per-message objects: SELECT of a 100,000-message
    mailbox should cost one list of integers."""

    handle: MailboxHandle
    uidnext: int
    highestmodseq: int
    uids: list[int]
    keywords: frozenset[str]


@functools.lru_cache(maxsize=4096)
def parse_flags(text: str) -> frozenset[str]:
    """Flags from their index text.  A mailbox has few distinct combinations, so the sets
    are shared, not rebuilt per message."""
    return frozenset(text.split())


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed after a modseq (RFC 7162 §3.1.4 CHANGEDSINCE; §3.2.5.2 QRESYNC):
    rows with a higher modseq (new messages and flag changes alike) and expunged UIDs."""

    highestmodseq: int
    uidnext: int
    changed: tuple[MessageState, ...]
    expunged: tuple[int, ...]
    #: Every UID in the mailbox, when records of expunges after the modseq asked about
    #: have been pruned (index.prune_expunged): `expunged` is then partial, and anything
    #: the caller knows of that is not here is gone.
    present: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class MessageData:
    """A message row for FETCH/SEARCH.  `structure` is the cached JSON text (None until
    parsed); `filename` the Maildir base name, only for reading the file through the store."""

    uid: int
    flags: frozenset[str]
    internaldate: float
    size: int
    modseq: int
    structure: str | None
    filename: str


@dataclass(frozen=True, slots=True)
class FlagResult:
    """STORE's outcome: messages whose flags changed (with their new modseq), and the UIDs
    an UNCHANGEDSINCE condition failed for (RFC 7162 §3.1.3 [MODIFIED])."""

    changed: tuple[MessageState, ...]
    unchanged: tuple[MessageState, ...]  # matched, but the flags were already so
    modified: tuple[int, ...]
    highestmodseq: int


@dataclass(frozen=True, slots=True)
class CopyResult:
    """COPY/MOVE outcome for [COPYUID] (RFC 4315 §3): source and new UIDs pairwise, in order."""

    uidvalidity: int
    source_uids: tuple[int, ...]
    dest_uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """APPEND outcome for [APPENDUID] (RFC 4315 §3)."""

    uidvalidity: int
    uid: int


@dataclass(frozen=True, slots=True)
class Quota:
    """RFC 9208 STORAGE of one account: `limit_bytes` 0 means unlimited."""

    used_bytes: int
    limit_bytes: int

    def allows(self, extra: int) -> bool:
        return self.limit_bytes <= 0 or self.used_bytes + extra <= self.limit_bytes
