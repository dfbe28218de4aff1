"""The store (layer L2): domains, accounts and aliases (`Directory`), and mailboxes as
Maildir++ files indexed in SQLite (`MailStore`).

Layout on disk — the contract users rely on:
    <data>/kittiwake.db            SQLite (WAL): domains, accounts, aliases, mailbox index
    <data>/mail/<domain>/<user>/   Maildir++: INBOX at the top, folders .Sent .Drafts ...

Everything above the store uses this package's API only; nothing else opens the files or
the SQL, so the backend can change (PostgreSQL) without touching its callers.
"""

from kittiwake.store.directory import Directory
from kittiwake.store.errors import (
    AlreadyExists,
    DomainNotEmpty,
    InvalidAddress,
    InvalidMailboxName,
    NotFound,
    SchemaTooNew,
    StoreClosed,
    StoreError,
)
from kittiwake.store.mailstore import MailStore
from kittiwake.store.models import (
    Account,
    Alias,
    DeliveredMessage,
    DeliveryRequest,
    MailboxInfo,
    MailboxStatus,
    MessageRow,
    RescanResult,
    Resolution,
    StoreSettings,
    StoreStats,
)
from kittiwake.store.passwords import Credentials, PasswordScheme

__all__ = [
    "Account",
    "Alias",
    "AlreadyExists",
    "Credentials",
    "DeliveredMessage",
    "DeliveryRequest",
    "Directory",
    "DomainNotEmpty",
    "InvalidAddress",
    "InvalidMailboxName",
    "MailStore",
    "MailboxInfo",
    "MailboxStatus",
    "MessageRow",
    "NotFound",
    "PasswordScheme",
    "RescanResult",
    "Resolution",
    "SchemaTooNew",
    "StoreClosed",
    "StoreError",
    "StoreSettings",
    "StoreStats",
]
