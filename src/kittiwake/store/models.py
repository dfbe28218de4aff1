"""Values the store takes and returns.

Frozen, slotted dataclasses: they cross threads (writer → event loop) and layers (store →
inbound/IMAP/CLI), so nobody may mutate them underneath another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kittiwake.store.maildir import INBOX


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """What the store needs from the config.

    `fsync=False` skips file/directory fsyncs and relaxes SQLite to synchronous=NORMAL: for
    tests and throw-away development data only — it voids the "250 means durable" promise.
    `max_batch` bounds one group commit so a flood cannot make the first caller wait for
    thousands of files behind it.  `write_threads` is the pool that writes and fsyncs message
    files in parallel (the fsyncs release the GIL).
    """

    data_dir: Path
    fsync: bool = True
    max_batch: int = 256
    write_threads: int = 8
    # "syncfs": one syncfs(2) per batch makes every file and rename durable (Linux);
    # "fsync": per-file and per-directory fsyncs. Falls back to fsync where syncfs is absent.
    sync: str = "syncfs"
    hostname: str | None = None  # for Maildir names; None → socket.gethostname()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "kittiwake.db"

    @property
    def mail_root(self) -> Path:
        return self.data_dir / "mail"


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    """One message for one local account (the caller has already resolved aliases)."""

    account: str
    content: bytes
    mailbox: str = INBOX
    flags: frozenset[str] = frozenset()
    internaldate: float | None = None  # None → now


@dataclass(frozen=True, slots=True)
class DeliveredMessage:
    account: str
    mailbox: str
    uid: int
    path: Path


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A message as the index knows it.  `filename` is the Maildir base name; the file itself
    may sit in new/ or cur/ with any info, so read it through the store, not by path."""

    uid: int
    filename: str
    flags: frozenset[str]
    size: int
    internaldate: float
    modseq: int


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    exists: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    name: str
    special_use: str | None  # RFC 6154 attribute such as "\\Sent"
    subscribed: bool


@dataclass(frozen=True, slots=True)
class RescanResult:
    added: int = 0
    removed: int = 0
    reflagged: int = 0


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters for the group-commit path; tests and metrics read them."""

    batches: int = 0
    messages: int = 0
    file_fsyncs: int = 0
    dir_fsyncs: int = 0
    commits: int = 0
    failures: int = 0
    syncfs: int = 0


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where mail for one address goes: local account addresses and remote addresses.
    Both empty means "no such user"."""

    local: tuple[str, ...] = ()
    remote: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.local or self.remote)


@dataclass(frozen=True, slots=True)
class Account:
    address: str
    domain: str
    quota_bytes: int  # 0 = unlimited
    used_bytes: int
    created: float


@dataclass(frozen=True, slots=True)
class Alias:
    source: str  # "sales@d" or "@d" (catch-all)
    targets: tuple[str, ...] = field(default=())
