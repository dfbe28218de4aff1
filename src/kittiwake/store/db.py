"""The SQLite database behind the store: connection settings, schema and migrations.

One file, `<data>/kittiwake.db`, in WAL mode so the directory lookups made on the event loop
(RCPT TO) never wait for the delivery writer, and the writer never waits for readers.

Durability choice — `synchronous=FULL`:
    In WAL mode `NORMAL` only fsyncs the WAL at checkpoints, so after a power cut the last
    committed transactions can disappear.  For the index that would not lose mail (the files
    are already durable and a rescan walks them in again) but it would break IMAP: a UID we
    already announced could be rolled back and handed to a *different* message, and flag
    changes would silently revert.  `FULL` fsyncs the WAL on every COMMIT, which is exactly our
    promise ("250 only after the index row is committed").  Its cost is one fsync per
    transaction, and group commit in the writer makes that one fsync per *batch*, so we keep
    the simple rule instead of NORMAL plus hand-rolled checkpoint discipline.

Migrations are an append-only list: each entry moves the schema from version N-1 to N and
runs in its own IMMEDIATE transaction together with the version bump, so a crash mid-upgrade
leaves the previous version intact.  Later parts (the queue) add their tables by appending a
migration here; never edit one that has shipped.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kittiwake.store.errors import SchemaTooNew

BUSY_TIMEOUT_MS = 5000
"""How long a connection waits for another writer (CLI vs. server) before giving up."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "domains, accounts, aliases, mailbox index",
        (
            """CREATE TABLE domains (
                name    TEXT PRIMARY KEY,
                created REAL NOT NULL
            ) WITHOUT ROWID""",
            # address is the folded `local@domain`; domain duplicated for list/delete by domain.
            # used_bytes is the account's mailbox usage, kept current by every transaction that
            # adds or removes message rows so a quota check is a single indexed read.
            """CREATE TABLE accounts (
                id            INTEGER PRIMARY KEY,
                address       TEXT NOT NULL UNIQUE,
                domain        TEXT NOT NULL REFERENCES domains(name),
                password_hash TEXT NOT NULL,
                scram         TEXT NOT NULL,
                quota_bytes   INTEGER NOT NULL DEFAULT 0,
                used_bytes    INTEGER NOT NULL DEFAULT 0,
                created       REAL NOT NULL
            )""",
            "CREATE INDEX accounts_domain ON accounts(domain)",
            # One row per (source, target): 'sales@d' or the catch-all '@d'.
            """CREATE TABLE aliases (
                source TEXT NOT NULL,
                target TEXT NOT NULL,
                PRIMARY KEY (source, target)
            ) WITHOUT ROWID""",
            """CREATE TABLE mailboxes (
                id            INTEGER PRIMARY KEY,
                account_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                name          TEXT NOT NULL,
                uidvalidity   INTEGER NOT NULL,
                uidnext       INTEGER NOT NULL DEFAULT 1,
                highestmodseq INTEGER NOT NULL DEFAULT 1,
                special_use   TEXT,
                subscribed    INTEGER NOT NULL DEFAULT 1,
                UNIQUE (account_id, name)
            )""",
            # filename is the Maildir base name (no ':2,' info), so flag changes that rename
            # the file do not touch the key.
            """CREATE TABLE messages (
                mailbox_id   INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
                uid          INTEGER NOT NULL,
                filename     TEXT NOT NULL,
                flags        TEXT NOT NULL DEFAULT '',
                internaldate REAL NOT NULL,
                size         INTEGER NOT NULL,
                modseq       INTEGER NOT NULL,
                structure    TEXT,
                PRIMARY KEY (mailbox_id, uid)
            ) WITHOUT ROWID""",
            # RFC 7162 CHANGEDSINCE / QRESYNC scans by modseq within one mailbox.
            "CREATE INDEX messages_modseq ON messages(mailbox_id, modseq)",
            # Rescan matches files to rows by name; also stops one file getting two UIDs.
            "CREATE UNIQUE INDEX messages_filename ON messages(mailbox_id, filename)",
        ),
    ),
    Migration(
        2,
        "expunged UIDs with their modseq (RFC 7162 QRESYNC VANISHED)",
        (
            # One row per removed message, written by a trigger so that *every* path that
            # deletes rows (IMAP EXPUNGE/MOVE, POP3 UPDATE, rescan of vanished files) is
            # recorded.  Its modseq is the mailbox's highestmodseq + 1 at the time of the
            # delete: each of those paths raises highestmodseq by at least one in the same
            # transaction, so the value is the modseq of the expunge itself.
            """CREATE TABLE expunged (
                mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
                uid        INTEGER NOT NULL,
                modseq     INTEGER NOT NULL,
                PRIMARY KEY (mailbox_id, uid)
            ) WITHOUT ROWID""",
            "CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq)",
            # Rows removed with their mailbox (cascade) are not recorded: the mailbox,
            # and with it its UIDVALIDITY, is gone.
            """CREATE TRIGGER messages_expunged AFTER DELETE ON messages
            WHEN EXISTS (SELECT 1 FROM mailboxes WHERE id = OLD.mailbox_id)
            BEGIN
                INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq)
                SELECT OLD.mailbox_id, OLD.uid, highestmodseq + 1
                FROM mailboxes WHERE id = OLD.mailbox_id;
            END""",
            # RFC 9051 §2.3.1.1: a mailbox re-created under an old name needs a greater
            # UIDVALIDITY than any it had.  The largest value of every deleted mailbox is
            # kept here, so `index.create_mailbox` still sees it once the rows are gone.
            """CREATE TABLE retired_uidvalidity (
                id          INTEGER PRIMARY KEY CHECK (id = 1),
                uidvalidity INTEGER NOT NULL
            )""",
            """CREATE TRIGGER mailboxes_retired AFTER DELETE ON mailboxes
            BEGIN
                INSERT INTO retired_uidvalidity (id, uidvalidity) VALUES (1, OLD.uidvalidity)
                ON CONFLICT (id) DO UPDATE SET uidvalidity = MAX(uidvalidity, excluded.uidvalidity);
            END""",
        ),
    ),
    Migration(
        3,
        "IMAP response cache and the indexer's progress (store/indexer.py)",
        (
            # ENVELOPE, BODYSTRUCTURE and BODY as IMAP text, UTF-8 octets (the 7-bit form;
            # `ascii` says the UTF-8 form is identical), so FETCH of these for a mailbox reads
            # neither files nor JSON; and, apart so that those rows stay small, the raw
            # header block for BODY[HEADER.FIELDS ...].  Derived from the immutable file,
            # filled after delivery by the background indexer.
            """CREATE TABLE imap_cache (
                mailbox_id    INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
                uid           INTEGER NOT NULL,
                envelope      BLOB NOT NULL,
                bodystructure BLOB NOT NULL,
                body          BLOB NOT NULL,
                ascii         INTEGER NOT NULL,
                PRIMARY KEY (mailbox_id, uid)
            ) WITHOUT ROWID""",
            """CREATE TABLE imap_header (
                mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
                uid        INTEGER NOT NULL,
                header     BLOB NOT NULL,
                PRIMARY KEY (mailbox_id, uid)
            ) WITHOUT ROWID""",
            # Only the fields clients list mailboxes with (imapcache.COMMON_FIELDS), a third
            # of a header, in a table of its own so that reading it reads nothing else.
            """CREATE TABLE imap_common (
                mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
                uid        INTEGER NOT NULL,
                common     BLOB NOT NULL,
                PRIMARY KEY (mailbox_id, uid)
            ) WITHOUT ROWID""",
            """CREATE TRIGGER messages_uncache AFTER DELETE ON messages
            BEGIN
                DELETE FROM imap_cache WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid;
                DELETE FROM imap_header WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid;
                DELETE FROM imap_common WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid;
            END""",
            # FETCH 1:* (FLAGS) and SELECT read these columns of every message; a covering
            # index spares them the cached structure JSON that makes message rows large.
            "CREATE INDEX messages_meta ON messages(mailbox_id, uid, flags, modseq,"
            " internaldate, size)",
            # UIDs only grow, so "indexed every message up to this UID" is the whole state.
            """CREATE TABLE index_state (
                mailbox_id  INTEGER PRIMARY KEY REFERENCES mailboxes(id) ON DELETE CASCADE,
                indexed_uid INTEGER NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "cached structures in a table of their own",
        (
            # The structure JSON (~1-2 kB) made `messages` rows wide, and a WITHOUT ROWID
            # table keeps whole rows in its interior pages too: a point lookup walked ~6
            # levels of mostly uncached pages (1.3 ms per lookup from disk at 100,000
            # messages), and the indexer's fill of a walked-in row grew it in place,
            # splitting pages.  Apart, `messages` is narrow enough to need no covering
            # index (one B-tree less to write per delivery and walk-in) and the fill
            # appends.  Rows go with their message (messages_uncache) or mailbox (cascade).
            """CREATE TABLE structures (
                mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
                uid        INTEGER NOT NULL,
                structure  TEXT NOT NULL,
                PRIMARY KEY (mailbox_id, uid)
            ) WITHOUT ROWID""",
            "INSERT INTO structures (mailbox_id, uid, structure)"
            " SELECT mailbox_id, uid, structure FROM messages WHERE structure IS NOT NULL",
            "DROP INDEX messages_meta",
            "ALTER TABLE messages DROP COLUMN structure",
            "DROP TRIGGER messages_uncache",
            """CREATE TRIGGER messages_uncache AFTER DELETE ON messages
            BEGIN
                DELETE FROM structures WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid;
                DELETE FROM imap_cache WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid;
                DELETE FROM imap_header WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid;
                DELETE FROM imap_common WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid;
            END""",
        ),
    ),
    Migration(
        5,
        "a bound on the expunge records kept per mailbox",
        (
            # index.prune_expunged keeps the newest EXPUNGED_KEEP records of a mailbox and
            # raises this floor past those it drops: asked for changes since a modseq below
            # it, the store answers with the UIDs still present instead (imaptypes.Changes).
            "ALTER TABLE mailboxes ADD COLUMN expunged_floor INTEGER NOT NULL DEFAULT 0",
        ),
    ),
)


T = TypeVar("T")


@contextlib.contextmanager
def derived(conn: sqlite3.Connection) -> Iterator[None]:
    """synchronous=NORMAL for a transaction of derived data — the IMAP response cache, the
    full-text index, the indexer's progress — which can always be made again from the
    mail files.  Its commit then skips the WAL fsync (a few ms each, the bulk of filling
    the cache for 100,000 messages).  Safe for everything else: WAL frames are synced in
    order, so the next FULL commit (a delivery) makes these durable too, and a NORMAL
    checkpoint still syncs the database before the WAL is reused; a power loss can at
    worst roll back the last such transactions, whole."""
    level = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    if level > 1:
        conn.execute("PRAGMA synchronous=NORMAL")
    try:
        yield
    finally:
        if level > 1:
            # The level cannot change inside a transaction; one left open here must not
            # leave the connection at NORMAL for the deliveries that follow.  (Should this
            # ROLLBACK fail, their BEGIN fails too: refused mail, never a silent 250.)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute(f"PRAGMA synchronous={level}")


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn` in one write transaction (BEGIN IMMEDIATE … COMMIT, ROLLBACK on failure)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return result


def connect(
    path: Path, *, durable: bool = True, check_same_thread: bool = True
) -> sqlite3.Connection:
    """Open the database with our pragmas and bring the schema up to date.

    `isolation_level=None` turns off Python's implicit transactions: every write path says
    BEGIN IMMEDIATE / COMMIT itself, so the point at which mail becomes durable is explicit.
    `durable=False` (tests, benchmarks with fsync off) drops to synchronous=NORMAL.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        timeout=BUSY_TIMEOUT_MS / 1000,
        check_same_thread=check_same_thread,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply every migration newer than the database; return the resulting version.

    Each step re-reads the version inside its IMMEDIATE transaction, so two processes starting
    at once (server and CLI) cannot both apply the same step.
    """
    latest = migrations[-1].version if migrations else 0
    if schema_version(conn) == latest:  # the usual case: no write lock taken
        return latest
    for migration in migrations:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn)
            if current > latest:
                raise SchemaTooNew(
                    f"database schema v{current} is newer than this program (v{latest})"
                )
            if migration.version == current + 1:
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version) VALUES (?)", (migration.version,)
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(conn)


class ThreadConnections:
    """One connection per pool thread, opened on first use.

    sqlite3 connections must not be shared between threads without a lock, and a lock would
    serialise the pool; WAL makes many connections cheap.  They are closed by `close_all`
    from whichever thread shuts the pool down, hence check_same_thread=False — each is still
    only ever used by the thread that opened it.
    """

    def __init__(self, path: Path, *, durable: bool) -> None:
        self._path = path
        self._durable = durable
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, durable=self._durable, check_same_thread=False)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close_all(self) -> None:
        """Call only after the threads using them have stopped."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
