"""The IMAP commands a client can send, one frozen dataclass each (RFC 9051 §6, with
IMAP4rev1 (RFC 3501) and the extensions Kittiwake offers).

Each command is also the event :meth:`ServerConnection.next_event` returns for it, with
every argument already checked and typed: mailbox names are Unicode (decoded from
modified UTF-7 or UTF-8 as the connection's mode requires), flags are canonical, FETCH
macros are expanded.  ``tag`` is always the client's tag, for the tagged completion.

``STATES`` says in which connection states each command is valid (RFC 9051 §3 and §6.1-
§6.4); :class:`ServerConnection` answers a command outside them with a tagged BAD.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from kittiwake.imap.types import FetchItem, QResync, SearchKey, SequenceSet, StoreMode

__all__ = [
    "STATES",
    "Append", "Authenticate", "Capability", "Check", "Close", "Command", "Compress", "Copy",
    "Create", "Delete", "Enable", "Examine", "Expunge", "Fetch", "GetQuota", "GetQuotaRoot",
    "Id", "Idle", "List", "Login", "Logout", "Lsub", "Move", "Namespace", "Noop", "Rename",
    "Search", "Select", "SetQuota", "StartTls", "State", "Status", "Store", "Subscribe",
    "Unselect", "Unsubscribe",
]


class State(enum.Enum):
    """Connection states (RFC 9051 §3)."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


# --------------------------------------------------------------------------- any state


@dataclass(frozen=True, slots=True)
class Capability:
    tag: str


@dataclass(frozen=True, slots=True)
class Noop:
    tag: str


@dataclass(frozen=True, slots=True)
class Logout:
    tag: str


@dataclass(frozen=True, slots=True)
class Id:
    """ID (RFC 2971): the client's field/value pairs, or None for ``ID NIL``."""

    tag: str
    params: tuple[tuple[str, str | None], ...] | None


# --------------------------------------------------------------------------- not authenticated


@dataclass(frozen=True, slots=True)
class StartTls:
    tag: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """AUTHENTICATE (RFC 9051 §6.2.2). ``initial_response`` is the decoded SASL-IR
    (RFC 4959) data: None when absent, ``b""`` for ``=``."""

    tag: str
    mechanism: str
    initial_response: bytes | None = None


@dataclass(frozen=True, slots=True)
class Login:
    tag: str
    username: str
    password: str

    def __repr__(self) -> str:  # never let a password reach a log line
        return f"Login(tag={self.tag!r}, username={self.username!r}, password='***')"


# --------------------------------------------------------------------------- authenticated


@dataclass(frozen=True, slots=True)
class Enable:
    """ENABLE (RFC 5161; RFC 9051 §6.3.1): capability names as sent."""

    tag: str
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Select:
    """SELECT with its RFC 7162 parameters: ``condstore`` for ``(CONDSTORE)``, ``qresync``
    for ``(QRESYNC (...))`` (which implies CONDSTORE)."""

    tag: str
    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Examine:
    """EXAMINE: SELECT, read-only (RFC 9051 §6.3.3)."""

    tag: str
    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Create:
    """CREATE, with ``special_use`` from ``(USE (...))`` (RFC 6154 §3)."""

    tag: str
    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delete:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    tag: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class List:
    """LIST, basic (RFC 9051 §6.3.9) or extended (RFC 5258; RFC 6154; RFC 5819).

    ``select_options``/``return_options`` are upper-case option names (SUBSCRIBED,
    REMOTE, RECURSIVEMATCH, SPECIAL-USE / SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS);
    ``status_items`` the items of ``RETURN (STATUS (...))``. ``extended`` is True when the
    client used any of the extended syntax, which changes what the reply must contain
    (RFC 5258 §3: CHILDINFO, no implicit \\HasChildren).
    """

    tag: str
    reference: str
    patterns: tuple[str, ...]
    select_options: frozenset[str] = frozenset()
    return_options: frozenset[str] = frozenset()
    status_items: tuple[str, ...] | None = None
    extended: bool = False


@dataclass(frozen=True, slots=True)
class Lsub:
    """LSUB (RFC 3501 §6.3.9; gone from IMAP4rev2, kept for rev1 clients)."""

    tag: str
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Namespace:
    tag: str


@dataclass(frozen=True, slots=True)
class Status:
    """STATUS (RFC 9051 §6.3.11): upper-case item names, in the order asked."""

    tag: str
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Append:
    """APPEND (RFC 9051 §6.3.12). ``binary`` when the message came as a literal8 (RFC 3516
    §4.4); ``utf8`` for RFC 6855 §4 ``UTF8 (~{n}...)`` data."""

    tag: str
    mailbox: str
    message: bytes
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None
    binary: bool = False
    utf8: bool = False

    def __repr__(self) -> str:  # a message body does not belong in logs
        return (f"Append(tag={self.tag!r}, mailbox={self.mailbox!r}, flags={self.flags!r}, "
                f"internal_date={self.internal_date!r}, size={len(self.message)})")


@dataclass(frozen=True, slots=True)
class Idle:
    tag: str


@dataclass(frozen=True, slots=True)
class Compress:
    """COMPRESS (RFC 4978): the algorithm name, upper case (DEFLATE is the only one)."""

    tag: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class GetQuota:
    tag: str
    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    """SETQUOTA (RFC 9208 §4.3): (resource name upper case, limit) pairs."""

    tag: str
    root: str
    limits: tuple[tuple[str, int], ...]


# --------------------------------------------------------------------------- selected


@dataclass(frozen=True, slots=True)
class Check:
    tag: str


@dataclass(frozen=True, slots=True)
class Close:
    tag: str


@dataclass(frozen=True, slots=True)
class Unselect:
    tag: str


@dataclass(frozen=True, slots=True)
class Expunge:
    """EXPUNGE, or UID EXPUNGE (RFC 4315 §2.1; RFC 9051 §6.4.9) when ``uids`` is set."""

    tag: str
    uids: SequenceSet | None = None


@dataclass(frozen=True, slots=True)
class Search:
    """SEARCH / UID SEARCH (RFC 9051 §6.4.4).

    ``returns`` is None without a RETURN clause; otherwise the ESEARCH (RFC 4731) options
    (MIN MAX ALL COUNT SAVE), where the empty set means ALL. ``charset`` is the CHARSET
    named, upper case; strings in ``criteria`` were decoded with it, and
    ``charset_known`` is False when Python has no such codec (the session answers NO
    [BADCHARSET]; RFC 9051 §6.4.4).
    """

    tag: str
    criteria: SearchKey
    uid: bool = False
    charset: str | None = None
    returns: frozenset[str] | None = None
    charset_known: bool = True


@dataclass(frozen=True, slots=True)
class Fetch:
    """FETCH / UID FETCH (RFC 9051 §6.4.5), macros expanded, with the RFC 7162 modifiers
    CHANGEDSINCE and VANISHED (the latter only with UID FETCH and CHANGEDSINCE)."""

    tag: str
    sequence_set: SequenceSet
    items: tuple[FetchItem, ...]
    uid: bool = False
    changed_since: int | None = None
    vanished: bool = False


@dataclass(frozen=True, slots=True)
class Store:
    """STORE / UID STORE (RFC 9051 §6.4.6) with UNCHANGEDSINCE (RFC 7162 §3.1.3)."""

    tag: str
    sequence_set: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    silent: bool = False
    uid: bool = False
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Move:
    """MOVE / UID MOVE (RFC 6851; RFC 9051 §6.4.8)."""

    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


Command = (
    Capability | Noop | Logout | Id | StartTls | Authenticate | Login | Enable | Select
    | Examine | Create | Delete | Rename | Subscribe | Unsubscribe | List | Lsub | Namespace
    | Status | Append | Idle | Compress | GetQuota | GetQuotaRoot | SetQuota | Check | Close
    | Unselect | Expunge | Search | Fetch | Store | Copy | Move
)

_ANY = frozenset(State) - {State.LOGOUT}
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})

#: Command name -> states in which it is valid (RFC 9051 §6.1-§6.4; RFC 2971 ID in any
#: state; RFC 2177 IDLE and RFC 4978 COMPRESS once authenticated).  ENABLE is valid only
#: before a mailbox is selected (RFC 9051 §6.3.1).
STATES: dict[str, frozenset[State]] = {
    "CAPABILITY": _ANY, "NOOP": _ANY, "LOGOUT": _ANY, "ID": _ANY,
    "STARTTLS": _NOT_AUTH, "AUTHENTICATE": _NOT_AUTH, "LOGIN": _NOT_AUTH,
    "ENABLE": frozenset({State.AUTHENTICATED}),
    "SELECT": _AUTH, "EXAMINE": _AUTH, "CREATE": _AUTH, "DELETE": _AUTH, "RENAME": _AUTH,
    "SUBSCRIBE": _AUTH, "UNSUBSCRIBE": _AUTH, "LIST": _AUTH, "LSUB": _AUTH,
    "NAMESPACE": _AUTH, "STATUS": _AUTH, "APPEND": _AUTH, "IDLE": _AUTH, "COMPRESS": _AUTH,
    "GETQUOTA": _AUTH, "GETQUOTAROOT": _AUTH, "SETQUOTA": _AUTH,
    "CHECK": _SELECTED, "CLOSE": _SELECTED, "UNSELECT": _SELECTED, "EXPUNGE": _SELECTED,
    "SEARCH": _SELECTED, "FETCH": _SELECTED, "STORE": _SELECTED, "COPY": _SELECTED,
    "MOVE": _SELECTED, "UID": _SELECTED,
}
