"""Exceptions raised by the store.

Callers (inbound, the IMAP/POP3 sessions, the CLI) map these to their own replies; keeping
them in one small module lets them catch store failures without importing SQLite or knowing
which backend is in use.  Anything else escaping the store (OSError, sqlite3.Error) is an I/O
failure or a bug and, per the design, is answered with a transient error by the caller.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class: a store operation was refused for a reason the caller can report."""


class InvalidAddress(StoreError, ValueError):
    """The text is not `local@domain`, or cannot be kept safely on disk."""


class InvalidMailboxName(StoreError, ValueError):
    """A mailbox name that cannot be mapped to a Maildir++ folder (empty part, control char)."""


class NotFound(StoreError, LookupError):
    """The domain, account, alias, mailbox or message does not exist."""


class AlreadyExists(StoreError):
    """The domain, account or alias is already there."""


class DomainNotEmpty(StoreError):
    """`del_domain` without force while accounts still live in the domain."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer Kittiwake; refusing to touch it."""


class StoreClosed(StoreError):
    """The MailStore is not started, or is shutting down."""
