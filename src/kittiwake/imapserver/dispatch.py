"""Command → handler, and the two things every command shares: the mapping of store
refusals to tagged NO responses with their RFC 5530 codes, and the update of the selected
mailbox before the tagged completion (RFC 9051 §7.5.1: EXPUNGE not during FETCH, STORE or
SEARCH — their UID forms are fine).

Handlers return the tagged completion, or None when they sent it themselves (STARTTLS and
COMPRESS, whose OK must precede a change of the byte stream; IDLE and AUTHENTICATE ended by
a protocol error).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kittiwake.imap import commands as c
from kittiwake.imap.response import (
    ALREADYEXISTS,
    CANNOT,
    HASCHILDREN,
    NONEXISTENT,
    OVERQUOTA,
    UNAVAILABLE,
    Status,
    Tagged,
)
from kittiwake.imapserver import authcmds, mailboxcmds, messagecmds, selectcmds
from kittiwake.imapserver.selected import BadSequence
from kittiwake.store.errors import (
    AlreadyExists,
    InvalidMailboxName,
    NotFound,
    StoreClosed,
    StoreError,
)
from kittiwake.store.imaptypes import CannotDoThat, MailboxHasChildren, OverQuota

if TYPE_CHECKING:
    from kittiwake.imapserver.session import Session

log = logging.getLogger(__name__)

Handler = Callable[[Any, Any], Awaitable[Tagged | None]]

HANDLERS: dict[type, Handler] = {
    c.Capability: authcmds.capability_cmd, c.Noop: authcmds.noop, c.Check: authcmds.noop,
    c.Logout: authcmds.logout, c.Id: authcmds.id_cmd, c.StartTls: authcmds.starttls,
    c.Login: authcmds.login, c.Authenticate: authcmds.authenticate,
    c.Enable: authcmds.enable, c.Namespace: authcmds.namespace,
    c.Compress: authcmds.compress, c.GetQuota: authcmds.getquota,
    c.GetQuotaRoot: authcmds.getquotaroot, c.SetQuota: authcmds.setquota,
    c.Create: mailboxcmds.create, c.Delete: mailboxcmds.delete,
    c.Rename: mailboxcmds.rename, c.Subscribe: mailboxcmds.subscribe,
    c.Unsubscribe: mailboxcmds.subscribe, c.List: mailboxcmds.list_cmd,
    c.Lsub: mailboxcmds.lsub, c.Status: mailboxcmds.status, c.Append: mailboxcmds.append,
    c.Select: selectcmds.select, c.Examine: selectcmds.select, c.Close: selectcmds.close,
    c.Unselect: selectcmds.unselect, c.Expunge: selectcmds.expunge, c.Idle: selectcmds.idle,
    c.Fetch: messagecmds.fetch, c.Store: messagecmds.store, c.Search: messagecmds.search,
    c.Copy: messagecmds.copy, c.Move: messagecmds.copy,
}

#: No update before these completions: the selection itself changes, or the connection ends.
_NO_SYNC = (c.Select, c.Examine, c.Close, c.Unselect, c.Logout)


def expunges_allowed(cmd: c.Command) -> bool:
    if isinstance(cmd, c.Fetch | c.Store | c.Search):
        return cmd.uid
    return True


def refusal(cmd: c.Command, exc: StoreError) -> Tagged:
    """A store refusal as the client hears it (RFC 5530 response codes)."""
    if isinstance(exc, NotFound):
        return Tagged(cmd.tag, Status.NO, "No such mailbox", NONEXISTENT)
    if isinstance(exc, AlreadyExists):
        return Tagged(cmd.tag, Status.NO, "Mailbox already exists", ALREADYEXISTS)
    if isinstance(exc, MailboxHasChildren):
        return Tagged(cmd.tag, Status.NO, "Mailbox has inferior mailboxes", HASCHILDREN)
    if isinstance(exc, InvalidMailboxName | CannotDoThat):
        return Tagged(cmd.tag, Status.NO, str(exc) or "Not possible", CANNOT)
    if isinstance(exc, OverQuota):
        return Tagged(cmd.tag, Status.NO, "Quota exceeded", OVERQUOTA)
    if isinstance(exc, StoreClosed):
        return Tagged(cmd.tag, Status.NO, "Server shutting down", UNAVAILABLE)
    return Tagged(cmd.tag, Status.NO, "Not possible", CANNOT)


async def handle(s: Session, cmd: c.Command) -> Tagged | None:
    handler = HANDLERS.get(type(cmd))
    if handler is None:
        return Tagged(cmd.tag, Status.BAD, "Command not supported")
    try:
        tagged = await handler(s, cmd)
    except BadSequence:
        tagged = Tagged(cmd.tag, Status.BAD, "Invalid message sequence number")
    except StoreError as exc:
        tagged = refusal(cmd, exc)
    if tagged is not None and s.selected is not None and not isinstance(cmd, _NO_SYNC):
        await s.sync(expunges=expunges_allowed(cmd))
    return tagged
