"""Mailbox commands of the authenticated state: CREATE, DELETE, RENAME, SUBSCRIBE,
UNSUBSCRIBE, LIST (RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE),
LSUB (RFC 3501), STATUS (RFC 8438 SIZE, RFC 7162 HIGHESTMODSEQ) and APPEND (RFC 4315
APPENDUID; RFC 9208 OVERQUOTA).

Names use "/" as the hierarchy delimiter and one personal namespace with an empty prefix
(RFC 9051 §5.1; NAMESPACE).  LIST answers from the index (one read); patterns are matched
here: ``*`` matches anything, ``%`` anything but the delimiter (RFC 9051 §6.3.9), and a
superior of a matching name that does not exist itself is shown \\NonExistent so clients
can draw the tree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kittiwake.imap import builders
from kittiwake.imap import commands as c
from kittiwake.imap.response import (
    CANNOT,
    OVERQUOTA,
    TRYCREATE,
    USEATTR,
    Status,
    Tagged,
    appenduid,
)
from kittiwake.store.errors import NotFound
from kittiwake.store.imaptypes import ImapStatus, MailboxListing, OverQuota

if TYPE_CHECKING:
    from kittiwake.imapserver.session import Session

DELIMITER = "/"
SPECIAL_USES = frozenset({"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent",
                          "\\Trash"})


def ok(cmd: c.Command, text: str) -> Tagged:
    return Tagged(cmd.tag, Status.OK, text)


async def create(s: Session, cmd: c.Create) -> Tagged:
    assert s.account is not None
    use = None
    if cmd.special_use:
        canon = {u.lower(): u for u in SPECIAL_USES}
        uses = [canon.get(u.lower()) for u in cmd.special_use]
        if any(u is None for u in uses):  # RFC 6154 §3: NO [USEATTR]
            return Tagged(cmd.tag, Status.NO, "Unsupported special-use attribute", USEATTR)
        use = " ".join(u for u in uses if u)
    if cmd.mailbox.upper() == "INBOX":
        return Tagged(cmd.tag, Status.NO, "INBOX always exists", CANNOT)
    await s.store.create_mailbox(s.account, cmd.mailbox, use)
    return ok(cmd, "CREATE completed")


async def delete(s: Session, cmd: c.Delete) -> Tagged:
    assert s.account is not None
    selected: int | None = None
    if s.selected is not None:
        # By id, not name: the selected mailbox may have been renamed since SELECT.
        try:
            selected = (await s.store.mailbox(s.account, cmd.mailbox)).id
        except NotFound:
            pass
    await s.store.delete_mailbox(s.account, cmd.mailbox)
    if s.selected is not None and s.selected.handle.id == selected:
        # RFC 9051 §6.3.4 allows deleting the selected mailbox.  The session stays in the
        # selected state (only CLOSE/UNSELECT/SELECT leave it) with a view that no longer
        # changes; commands on its messages find them gone.
        s.selected.gone = True
    return ok(cmd, "DELETE completed")


async def rename(s: Session, cmd: c.Rename) -> Tagged:
    assert s.account is not None
    await s.store.rename_mailbox(s.account, cmd.old, cmd.new)
    return ok(cmd, "RENAME completed")


async def subscribe(s: Session, cmd: c.Subscribe | c.Unsubscribe) -> Tagged:
    assert s.account is not None
    on = isinstance(cmd, c.Subscribe)
    await s.store.set_subscribed(s.account, cmd.mailbox, on)
    return ok(cmd, "SUBSCRIBE completed" if on else "UNSUBSCRIBE completed")


# --------------------------------------------------------------------------- LIST


class Pattern:
    """One LIST pattern, matched by following every way through it at once (a set of
    positions), so a name costs at most len(name) x len(pattern) steps.  A backtracking
    regex (``.*`` per ``*``) takes exponential time on patterns like ``*****b``, which
    any logged-in client may send, and would stall every session of the server."""

    __slots__ = ("_fold", "_tokens")

    def __init__(self, pattern: str, *, ignore_case: bool = False) -> None:
        self._fold = ignore_case
        tokens: list[str] = []
        for ch in pattern.lower() if ignore_case else pattern:
            if ch in "*%" and tokens and tokens[-1] in "*%":
                # Adjacent wildcards match what the wider one alone does.
                tokens[-1] = "*" if "*" in (ch, tokens[-1]) else "%"
            else:
                tokens.append(ch)
        self._tokens = tokens

    def _closure(self, states: set[int]) -> set[int]:
        tokens = self._tokens
        out = set(states)
        for p in states:
            while p < len(tokens) and tokens[p] in "*%":  # a wildcard may match nothing
                p += 1
                out.add(p)
        return out

    def fullmatch(self, name: str) -> bool:
        tokens = self._tokens
        end = len(tokens)
        states = self._closure({0})
        for ch in name.lower() if self._fold else name:
            step: set[int] = set()
            for p in states:
                if p == end:
                    continue
                tok = tokens[p]
                if tok == "*" or (tok == "%" and ch != DELIMITER):
                    step.add(p)
                elif tok == ch:
                    step.add(p + 1)
            if not step:
                return False
            states = self._closure(step)
        return end in states


class Matcher:
    """LIST patterns.  RFC 9051 §5.1: INBOX is case-insensitive, also as the superior of
    INBOX/..., so names under it are matched without regard to case."""

    def __init__(self, patterns: list[str]) -> None:
        self._exact = [Pattern(p) for p in patterns if p]
        self._folded = [Pattern(p, ignore_case=True) for p in patterns if p]

    def __call__(self, name: str) -> bool:
        if name == "INBOX" or name.startswith("INBOX/"):
            return any(rx.fullmatch(name) for rx in self._folded)
        return any(rx.fullmatch(name) for rx in self._exact)


def _attributes(entry: MailboxListing | None, name: str, children: bool,
                subscribed_attr: bool, special: bool) -> list[str]:
    attrs: list[str] = []
    if entry is None:
        attrs.append("\\NonExistent")
    attrs.append("\\HasChildren" if children else "\\HasNoChildren")
    if subscribed_attr and entry is not None and entry.subscribed:
        attrs.append("\\Subscribed")
    if special and entry is not None and entry.special_use:
        attrs.extend(entry.special_use.split())
    return attrs


async def list_cmd(s: Session, cmd: c.List) -> Tagged:
    assert s.account is not None
    patterns = [cmd.reference + p for p in cmd.patterns]
    if cmd.patterns == ("",) and not cmd.extended:
        # RFC 9051 §6.3.9: the hierarchy delimiter and root name.
        s.send(builders.list_data("", DELIMITER, ["\\Noselect"], utf8=s.utf8))
        return ok(cmd, "LIST completed")
    entries = {m.name: m for m in await s.store.list_mailboxes(s.account, discover=True)}
    names = set(entries)
    for name in list(names):  # superiors that are only implied (walked-in folders)
        parts = name.split(DELIMITER)
        names.update(DELIMITER.join(parts[:i]) for i in range(1, len(parts)))
    parents = {n.rsplit(DELIMITER, 1)[0] for n in names if DELIMITER in n}
    matches = Matcher(patterns)
    sel = cmd.select_options
    ret = cmd.return_options
    subscribed_only = "SUBSCRIBED" in sel
    special_only = "SPECIAL-USE" in sel
    subscribed_attr = subscribed_only or "SUBSCRIBED" in ret
    # RFC 6154 §2: special-use attributes MAY always be returned; clients rely on them.
    special_attr = True
    status_items = cmd.status_items
    if status_items and "HIGHESTMODSEQ" in status_items:
        s.condstore = True
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        entry = entries.get(name)
        childinfo: list[str] = []
        if not matches(name):
            continue
        if subscribed_only and (entry is None or not entry.subscribed):
            # RFC 5258 §3.5 RECURSIVEMATCH: shown because a descendant is subscribed.
            if "RECURSIVEMATCH" in sel and any(
                    e.subscribed for n, e in entries.items()
                    if n.startswith(name + DELIMITER)):
                childinfo = ["SUBSCRIBED"]
            else:
                continue
        if special_only and (entry is None or not entry.special_use):
            continue
        attrs = _attributes(entry, name, name in parents, subscribed_attr, special_attr)
        if entry is None and not cmd.extended:
            attrs = ["\\Noselect" if a == "\\NonExistent" else a for a in attrs]
        s.send(builders.list_data(name, DELIMITER, attrs, utf8=s.utf8, childinfo=childinfo))
        if status_items and entry is not None:
            try:
                st = await s.store.status(await s.store.mailbox(s.account, name))
            except NotFound:
                continue
            s.send(builders.status_data(name, _status_items(st, status_items), utf8=s.utf8))
    return ok(cmd, "LIST completed")


async def lsub(s: Session, cmd: c.Lsub) -> Tagged:
    assert s.account is not None
    matches = Matcher([cmd.reference + cmd.pattern])
    entries = await s.store.list_mailboxes(s.account)
    names = {m.name for m in entries}
    for m in entries:
        if m.subscribed and matches(m.name):
            children = any(n.startswith(m.name + DELIMITER) for n in names)
            attrs = ["\\HasChildren" if children else "\\HasNoChildren"]
            s.send(builders.list_data(m.name, DELIMITER, attrs, utf8=s.utf8, command="LSUB"))
    return ok(cmd, "LSUB completed")


# --------------------------------------------------------------------------- STATUS


def _status_items(st: ImapStatus, items: tuple[str, ...]) -> list[tuple[str, int]]:
    values = {"MESSAGES": st.messages, "UIDNEXT": st.uidnext, "UIDVALIDITY": st.uidvalidity,
              "UNSEEN": st.unseen, "DELETED": st.deleted, "SIZE": st.size,
              "HIGHESTMODSEQ": st.highestmodseq, "RECENT": st.recent}
    return [(item, values[item]) for item in items if item in values]


async def status(s: Session, cmd: c.Status) -> Tagged:
    assert s.account is not None
    if "HIGHESTMODSEQ" in cmd.items:
        s.condstore = True  # RFC 7162 §3.1: a CONDSTORE-enabling command
    handle = await s.store.mailbox(s.account, cmd.mailbox)
    st = await s.store.status(handle)
    s.send(builders.status_data(handle.name, _status_items(st, cmd.items), utf8=s.utf8))
    return ok(cmd, "STATUS completed")


# --------------------------------------------------------------------------- APPEND


async def append(s: Session, cmd: c.Append) -> Tagged:
    assert s.account is not None
    try:
        handle = await s.store.mailbox(s.account, cmd.mailbox)
    except NotFound:
        return Tagged(cmd.tag, Status.NO, "No such mailbox", TRYCREATE)
    flags = [f for f in cmd.flags if f.lower() != "\\recent"]
    when = cmd.internal_date.timestamp() if cmd.internal_date is not None else None
    try:
        result = await s.store.append(s.account, handle.name, cmd.message, flags=flags,
                                      internaldate=when)
    except OverQuota:
        return Tagged(cmd.tag, Status.NO, "Quota exceeded", OVERQUOTA)
    except NotFound:
        return Tagged(cmd.tag, Status.NO, "No such mailbox", TRYCREATE)
    return Tagged(cmd.tag, Status.OK, "APPEND completed",
                  appenduid(result.uidvalidity, [result.uid]))
