"""The IMAP command parser: one framed command in, a typed command or a ParseError out
(RFC 9051 §6 and the §9 grammar; RFC 3501 compatibility; extensions: RFC 2971 ID,
RFC 4315 UIDPLUS, RFC 4959 SASL-IR, RFC 4978 COMPRESS, RFC 5161 ENABLE, RFC 5258 LIST-
EXTENDED, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE, RFC 6851 MOVE, RFC 6855 UTF8,
RFC 7162 CONDSTORE/QRESYNC, RFC 9208 QUOTA).

:func:`parse_command` never raises: whatever the octets, the result is a command or a
:class:`~kittiwake.imap.events.ParseError` that carries the tag when one could be read,
so the client gets a tagged BAD and the connection goes on (RFC 9051 §7.1.3).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kittiwake import sasl
from kittiwake.imap import commands as c
from kittiwake.imap.commands import STATES, Command, State
from kittiwake.imap.events import ParseError
from kittiwake.imap.fetch import parse_fetch_items, parse_fetch_modifiers
from kittiwake.imap.lexer import ATOM_CHARS, MAX_NUMBER, MAX_NUMBER64, Bad, Cursor, decode_text
from kittiwake.imap.response import ResponseCode
from kittiwake.imap.search import parse_return_options, parse_search_program
from kittiwake.imap.types import STAR, QResync, SequenceSet, StoreMode

__all__ = ["STATUS_ITEMS", "ParseContext", "check_command", "parse_command", "peek_command"]

# tag = 1*<any ASTRING-CHAR except "+"> (RFC 9051 §9).
_TAG = re.compile(rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+")
_HEAD = re.compile(_TAG.pattern + rb" ([" + ATOM_CHARS + rb"]+)")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")

#: RFC 9051 §6.3.11 status-att, RFC 3501 RECENT, RFC 7162 HIGHESTMODSEQ, RFC 8438 SIZE.
STATUS_ITEMS = frozenset({"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE",
                          "HIGHESTMODSEQ", "RECENT"})
_SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_BASE_OPTIONS = frozenset({"SUBSCRIBED", "SPECIAL-USE"})  # RFC 5258 §3.1, RFC 6154 §3
_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
_STORE_NAMES = {"FLAGS": StoreMode.REPLACE, "+FLAGS": StoreMode.ADD, "-FLAGS": StoreMode.REMOVE}


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What parsing depends on besides the octets: the connection state (for the RFC
    9051 §3 state rules), whether mailbox names are UTF-8 (IMAP4rev2 or UTF8=ACCEPT
    enabled), the extensions enabled (QRESYNC changes what is valid), and limits."""

    state: State = State.NOT_AUTHENTICATED
    utf8: bool = False
    enabled: frozenset[str] = frozenset()
    max_nesting: int = 64
    max_ranges: int = 10_000
    sasl_ir: bool = True
    binary: bool = True


def peek_command(line: bytes) -> tuple[str | None, str | None]:
    """The tag and the upper-case command name at the start of a command's first line
    (either may be None). The framer uses it to refuse a literal before the client sends
    it, and to choose the literal size limit (APPEND's message may be large)."""
    m = _TAG.match(line)
    if m is None:
        return None, None
    tag = m.group().decode("ascii")
    head = _HEAD.match(line)
    return tag, head.group(1).decode("ascii").upper() if head else None


def check_command(name: str | None, state: State) -> str | None:
    """Why a command name cannot run in ``state``, or None. Shared by the framer's early
    check and the parser so both give the same answer."""
    if name is None:
        return "missing command"
    states = STATES.get(name)
    if states is None:
        return "unknown command"
    if state not in states:
        return f"{name} is not allowed in the {state.value} state"
    return None


def parse_command(lines: Sequence[bytes], literals: Sequence[bytes],
                  ctx: ParseContext) -> Command | ParseError:
    """Parse one framed command: ``lines[i]`` ends with the marker of ``literals[i]``."""
    cur = Cursor(lines, literals, utf8=ctx.utf8, max_nesting=ctx.max_nesting,
                 max_ranges=ctx.max_ranges)
    m = _TAG.match(cur.line)
    if m is None:
        return ParseError(None, "missing or invalid tag")
    tag = m.group().decode("ascii")
    cur.pos = m.end()
    try:
        if cur.peek() != 0x20:
            raise Bad("missing command" if cur.at_end() else "invalid tag")
        cur.pos += 1
        name = cur.keyword() if not cur.at_end() else None
        problem = check_command(name, ctx.state)
        if problem is not None or name is None:
            raise Bad(problem or "missing command")
        command = _HANDLERS[name](cur, tag, ctx)
        cur.end()
        return command
    except Bad as e:
        return ParseError(tag, e.text, ResponseCode(e.code) if e.code else None)


# --------------------------------------------------------------------------- handlers


def _no_args(cls: Callable[[str], Command]) -> Callable[[Cursor, str, ParseContext], Command]:
    def handler(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
        return cls(tag)
    return handler


def _id(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    """``ID ( *(string SP nstring) ) / NIL`` (RFC 2971 §4)."""
    cur.sp()
    if cur.peek() != 0x28:
        if cur.keyword() != "NIL":
            raise Bad("expected a parameter list or NIL")
        return c.Id(tag, None)
    cur.char(b"(")
    params: list[tuple[str, str | None]] = []
    while not cur.try_char(b")"):
        if params:
            cur.sp()
        key = decode_text(cur.string())
        cur.sp()
        value = cur.nstring()
        params.append((key, decode_text(value) if value is not None else None))
    return c.Id(tag, tuple(params))


def _authenticate(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    """``AUTHENTICATE auth-type [SP (base64 / "=")]`` (RFC 9051 §6.2.2; RFC 4959 §3)."""
    cur.sp()
    mechanism = cur.keyword()
    if not cur.try_sp():
        return c.Authenticate(tag, mechanism)
    if not ctx.sasl_ir:
        raise Bad("SASL-IR is not enabled")
    m = _BASE64.match(cur.line, cur.pos)
    raw = m.group() if m else b""
    cur.pos += len(raw)
    decoded = sasl.decode_response(raw, initial=True) if raw else None
    if decoded is None:
        raise Bad("invalid base64 in initial response")
    return c.Authenticate(tag, mechanism, decoded)


def _login(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    cur.sp()
    user = cur.text()
    cur.sp()
    return c.Login(tag, user, cur.text())


def _enable(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    cur.sp()
    names = [cur.atom()]
    while cur.try_sp():
        names.append(cur.atom())
    return c.Enable(tag, tuple(names))


def _select(cls: type[c.Select] | type[c.Examine]) -> Callable[[Cursor, str, ParseContext],
                                                                  Command]:
    def handler(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
        mailbox, condstore, qresync = _select_args(cur, ctx)
        return cls(tag, mailbox, condstore, qresync)
    return handler


def _select_args(cur: Cursor, ctx: ParseContext) -> tuple[str, bool, QResync | None]:
    """``SP mailbox [SP "(" select-param *(SP select-param) ")"]`` (RFC 4466 §2.1;
    RFC 7162 §3.1.8 CONDSTORE, §3.2.5 QRESYNC)."""
    cur.sp()
    mailbox = cur.mailbox()
    condstore = False
    qresync: QResync | None = None
    if cur.try_sp():
        cur.char(b"(")
        while True:
            param = cur.keyword()
            if param == "CONDSTORE" and not condstore:
                condstore = True
            elif param == "QRESYNC" and qresync is None:
                # RFC 7162 §3.2.5: BAD unless the client has enabled QRESYNC.
                if "QRESYNC" not in ctx.enabled:
                    raise Bad("QRESYNC is not enabled")
                cur.sp()
                qresync = _qresync(cur)
            else:
                raise Bad(f"unknown or repeated SELECT parameter {param}")
            if cur.try_char(b")"):
                break
            cur.sp()
    return mailbox, condstore, qresync


def _qresync(cur: Cursor) -> QResync:
    """``"(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"``."""
    cur.char(b"(")
    validity = cur.number(MAX_NUMBER, nonzero=True)
    cur.sp()
    modseq = cur.number(MAX_NUMBER64, nonzero=True)
    known: SequenceSet | None = None
    match: tuple[SequenceSet, SequenceSet] | None = None
    if cur.try_sp():
        if cur.peek() != 0x28:
            known = _no_star(cur.sequence_set(allow_saved=False))
            if cur.try_sp():
                match = _seq_match(cur)
        else:
            match = _seq_match(cur)
    cur.char(b")")
    return QResync(validity, modseq, known, *(match or (None, None)))


def _seq_match(cur: Cursor) -> tuple[SequenceSet, SequenceSet]:
    cur.char(b"(")
    seqs = _no_star(cur.sequence_set(allow_saved=False))
    cur.sp()
    uids = _no_star(cur.sequence_set(allow_saved=False))
    cur.char(b")")
    return seqs, uids


def _no_star(seqset: SequenceSet) -> SequenceSet:
    # RFC 7162 §7: known-uids and seq-match-data sets are of known numbers: no "*".
    if any(STAR in r for r in seqset.ranges):
        raise Bad('"*" is not allowed in QRESYNC parameters')
    return seqset


def _create(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    """``CREATE mailbox [SP "(" "USE" SP "(" use-attr... ")" ")"]`` (RFC 6154 §3)."""
    cur.sp()
    mailbox = cur.mailbox()
    uses: list[str] = []
    if cur.try_sp():
        cur.char(b"(")
        param = cur.keyword()
        if param != "USE":
            raise Bad(f"unknown CREATE parameter {param}")
        cur.sp()
        cur.char(b"(")
        while not cur.try_char(b")"):
            if uses:
                cur.sp()
            uses.append(_use_attr(cur))
        cur.char(b")")
    return c.Create(tag, mailbox, tuple(uses))


_USE_ATTRS = {a.lower(): a for a in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk",
                                     "\\Sent", "\\Trash", "\\Important")}


def _use_attr(cur: Cursor) -> str:
    """use-attr (RFC 6154 §6, RFC 8457 \\Important): a backslash atom, canonical case."""
    if not cur.try_char(b"\\"):
        raise Bad("expected a special-use attribute")
    name = "\\" + cur.atom()
    return _USE_ATTRS.get(name.lower(), name)


def _mailbox_cmd(cls: Callable[[str, str], Command]) -> Callable[[Cursor, str, ParseContext],
                                                                 Command]:
    def handler(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
        cur.sp()
        return cls(tag, cur.mailbox())
    return handler


def _rename(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    cur.sp()
    old = cur.mailbox()
    cur.sp()
    return c.Rename(tag, old, cur.mailbox())


def _option_list(cur: Cursor, allowed: frozenset[str], what: str) -> list[str]:
    cur.char(b"(")
    options: list[str] = []
    while not cur.try_char(b")"):
        if options:
            cur.sp()
        option = cur.keyword()
        if option not in allowed:  # RFC 5258 §3: unknown options are a BAD
            raise Bad(f"unknown LIST {what} option {option}")
        options.append(option)
    return options


def _list(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    """``LIST [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]``
    (RFC 9051 §6.3.9; RFC 5258 §3; RFC 5819 §2; RFC 6154 §3)."""
    cur.sp()
    extended = False
    select: list[str] = []
    if cur.peek() == 0x28:
        extended = True
        select = _option_list(cur, _SELECT_OPTIONS, "selection")
        if "RECURSIVEMATCH" in select and not _BASE_OPTIONS.intersection(select):
            raise Bad("RECURSIVEMATCH needs a base selection option")  # RFC 5258 §3.1
        cur.sp()
    reference = cur.decode_mailbox(cur.astring(), pattern=True)
    cur.sp()
    if cur.try_char(b"("):
        extended = True
        patterns = [cur.list_mailbox()]
        while not cur.try_char(b")"):
            cur.sp()
            patterns.append(cur.list_mailbox())
    else:
        patterns = [cur.list_mailbox()]
    returns: list[str] = []
    status_items: tuple[str, ...] | None = None
    if cur.try_sp():
        if cur.keyword() != "RETURN":
            raise Bad("expected RETURN")
        extended = True
        cur.sp()
        cur.char(b"(")
        while not cur.try_char(b")"):
            if returns:
                cur.sp()
            option = cur.keyword()
            if option not in _RETURN_OPTIONS:
                raise Bad(f"unknown LIST return option {option}")
            if option == "STATUS":
                cur.sp()
                status_items = _status_items(cur)
            returns.append(option)
    return c.List(tag, reference, tuple(patterns), frozenset(select), frozenset(returns),
                  status_items, extended)


def _lsub(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    cur.sp()
    reference = cur.decode_mailbox(cur.astring(), pattern=True)
    cur.sp()
    return c.Lsub(tag, reference, cur.list_mailbox())


def _status_items(cur: Cursor) -> tuple[str, ...]:
    cur.char(b"(")
    items: list[str] = []
    while True:
        item = cur.keyword()
        if item not in STATUS_ITEMS:
            raise Bad(f"unknown STATUS item {item}")
        if item not in items:
            items.append(item)
        if cur.try_char(b")"):
            return tuple(items)
        cur.sp()


def _status(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    cur.sp()
    mailbox = cur.mailbox()
    cur.sp()
    return c.Status(tag, mailbox, _status_items(cur))


def _append(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    """``APPEND mailbox [SP flag-list] [SP date-time] SP (literal / literal8 /
    "UTF8" SP "(" literal8 ")")`` (RFC 9051 §6.3.12; RFC 3516 §4.4; RFC 6855 §4)."""
    cur.sp()
    mailbox = cur.mailbox()
    cur.sp()
    flags: tuple[str, ...] = ()
    if cur.peek() == 0x28:
        flags = cur.flag_list()
        cur.sp()
    when = None
    if cur.peek() == 0x22:
        when = cur.date_time()
        cur.sp()
    utf8 = cur.peek_upper(b"UTF8 (")
    if utf8:
        cur.pos += 6
        message, binary = cur.literal(allow_binary=True)
        cur.char(b")")
    else:
        if not cur.at_literal():
            raise Bad("APPEND needs the message as a literal")
        message, binary = cur.literal(allow_binary=ctx.binary)
    return c.Append(tag, mailbox, message, flags, when, binary, utf8)


def _compress(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    cur.sp()
    return c.Compress(tag, cur.keyword())


def _getquota(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    cur.sp()
    return c.GetQuota(tag, cur.text())


def _setquota(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    """``SETQUOTA root "(" [resource SP limit *(SP resource SP limit)] ")"`` (RFC 9208)."""
    cur.sp()
    root = cur.text()
    cur.sp()
    cur.char(b"(")
    limits: list[tuple[str, int]] = []
    while not cur.try_char(b")"):
        if limits:
            cur.sp()
        name = cur.keyword()
        cur.sp()
        limits.append((name, cur.number(MAX_NUMBER64)))
    return c.SetQuota(tag, root, tuple(limits))


# --- selected state ---------------------------------------------------------------------------


def _expunge(cur: Cursor, tag: str, ctx: ParseContext, uid: bool = False) -> Command:
    if not uid:
        return c.Expunge(tag)
    cur.sp()
    return c.Expunge(tag, cur.sequence_set())


def _search(cur: Cursor, tag: str, ctx: ParseContext, uid: bool = False) -> Command:
    """``SEARCH [SP "RETURN" SP "(" opts ")"] SP search-program`` (RFC 9051 §6.4.4)."""
    cur.sp()
    returns: frozenset[str] | None = None
    if cur.peek_upper(b"RETURN "):
        cur.keyword()
        cur.sp()
        returns = parse_return_options(cur)
        cur.sp()
    criteria, charset, known = parse_search_program(cur)
    return c.Search(tag, criteria, uid, charset, returns, known)


def _fetch(cur: Cursor, tag: str, ctx: ParseContext, uid: bool = False) -> Command:
    cur.sp()
    seqset = cur.sequence_set()
    cur.sp()
    items = parse_fetch_items(cur)
    changed_since: int | None = None
    vanished = False
    if cur.try_sp():
        changed_since, vanished = parse_fetch_modifiers(cur)
        # RFC 7162 §3.2.6: VANISHED only in UID FETCH, with CHANGEDSINCE, under QRESYNC.
        if vanished and (not uid or changed_since is None or "QRESYNC" not in ctx.enabled):
            raise Bad("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC")
    return c.Fetch(tag, seqset, items, uid, changed_since, vanished)


def _store(cur: Cursor, tag: str, ctx: ParseContext, uid: bool = False) -> Command:
    """``STORE sequence-set [SP "(" "UNCHANGEDSINCE" SP n ")"] SP ["+"/"-"] "FLAGS"
    [".SILENT"] SP (flag-list / flag *(SP flag))`` (RFC 9051 §6.4.6; RFC 7162 §3.1.3)."""
    cur.sp()
    seqset = cur.sequence_set()
    cur.sp()
    unchanged: int | None = None
    if cur.try_char(b"("):
        if cur.keyword() != "UNCHANGEDSINCE":
            raise Bad("unknown STORE modifier")
        cur.sp()
        unchanged = cur.number(MAX_NUMBER64)
        cur.char(b")")
        cur.sp()
    name = cur.keyword()
    silent = name.endswith(".SILENT")
    mode = _STORE_NAMES.get(name.removesuffix(".SILENT"))
    if mode is None:
        raise Bad(f"unknown STORE data item {name}")
    cur.sp()
    if cur.peek() == 0x28:
        flags = cur.flag_list()
    else:
        found = [cur.flag()]
        while cur.try_sp():
            flag = cur.flag()
            if flag not in found:
                found.append(flag)
        flags = tuple(found)
    return c.Store(tag, seqset, mode, flags, silent, uid, unchanged)


def _copy_move(cls: type[c.Copy] | type[c.Move]) -> Callable[..., Command]:
    def handler(cur: Cursor, tag: str, ctx: ParseContext, uid: bool = False) -> Command:
        cur.sp()
        seqset = cur.sequence_set()
        cur.sp()
        return cls(tag, seqset, cur.mailbox(), uid)
    return handler


_UID_HANDLERS: dict[str, Callable[..., Command]] = {
    "FETCH": _fetch, "STORE": _store, "SEARCH": _search, "COPY": _copy_move(c.Copy),
    "MOVE": _copy_move(c.Move), "EXPUNGE": _expunge,
}


def _uid(cur: Cursor, tag: str, ctx: ParseContext) -> Command:
    cur.sp()
    name = cur.keyword()
    handler = _UID_HANDLERS.get(name)
    if handler is None:
        raise Bad(f"unknown UID command {name}")
    return handler(cur, tag, ctx, uid=True)


_HANDLERS: dict[str, Callable[[Cursor, str, ParseContext], Command]] = {
    "CAPABILITY": _no_args(c.Capability), "NOOP": _no_args(c.Noop),
    "LOGOUT": _no_args(c.Logout), "ID": _id, "STARTTLS": _no_args(c.StartTls),
    "AUTHENTICATE": _authenticate, "LOGIN": _login, "ENABLE": _enable,
    "SELECT": _select(c.Select), "EXAMINE": _select(c.Examine), "CREATE": _create,
    "DELETE": _mailbox_cmd(c.Delete), "RENAME": _rename,
    "SUBSCRIBE": _mailbox_cmd(c.Subscribe), "UNSUBSCRIBE": _mailbox_cmd(c.Unsubscribe),
    "LIST": _list, "LSUB": _lsub, "NAMESPACE": _no_args(c.Namespace), "STATUS": _status,
    "APPEND": _append, "IDLE": _no_args(c.Idle), "COMPRESS": _compress,
    "GETQUOTA": _getquota, "GETQUOTAROOT": _mailbox_cmd(c.GetQuotaRoot),
    "SETQUOTA": _setquota, "CHECK": _no_args(c.Check), "CLOSE": _no_args(c.Close),
    "UNSELECT": _no_args(c.Unselect), "EXPUNGE": _expunge, "SEARCH": _search,
    "FETCH": _fetch, "STORE": _store, "COPY": _copy_move(c.Copy),
    "MOVE": _copy_move(c.Move), "UID": _uid,
}
assert set(_HANDLERS) == set(STATES)
