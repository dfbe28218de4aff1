"""The durable outbound spool: one file per queued message, one row per recipient.

Layout (DESIGN.md, Storage)::

    <data>/queue/tmp/<queue_id>   being written; never queued mail
    <data>/queue/<queue_id>       the message, exactly as it will be sent
    <data>/kittiwake.db           queue_messages + queue_recipients (WAL, shared with the store)

The promise "250 only when durable" (DESIGN.md; RFC 5321 §6.1: once we say 250 the message
is ours and must not be lost) holds for queued mail too.  `enqueue` returns only after

  1. the content is written to tmp/ and fsynced,
  2. hard-linked to its final name (link, unlike rename, refuses to replace another
     message's file) and the queue directory fsynced,
  3. the message and recipient rows are committed (synchronous=FULL: fsynced WAL).

Crash analysis follows from that order.  A row is never committed for a file that is not
durable, so a committed row always has its file.  A crash between 2 and 3 leaves a complete
file without a row: no 250 was sent for it (the caller answers after `enqueue` returns), the
client will retry, and `recover` deletes it.  Files left in tmp/ are partial writes and are
deleted too.  Removal runs the other way round — rows first, then the file — so the only
debris a crash can leave is, again, a file without a row.

A row whose file is missing can only mean outside damage (a disk fault, an administrator's
rm).  We cannot deliver it, but the sender was told 250, so `recover` bounces those
recipients (status 5.3.0) and the sender gets a DSN without the returned content, instead of
the message vanishing silently.

Concurrency: the runner calls in from worker threads and the CLI from another process.  File
I/O runs outside the lock; SQL runs on one connection under a lock, each write in a
BEGIN IMMEDIATE transaction, and SQLite's busy timeout serialises processes.  `due` leases
what it hands out (`lease_until`), so a second call — another thread, a second queue run —
cannot start a parallel delivery of the same recipients; `recover` clears leases left by a
crash, and a lease also simply runs out.

The tables and their migrations live in `queue/db.py`.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from kittiwake.address import AddressError, parse_address
from kittiwake.dsn import Kind, bounce_allowed, should_notify
from kittiwake.queue.db import connect
from kittiwake.queue.models import (
    Delivered,
    DsnDue,
    Origin,
    Outcome,
    Permanent,
    QueuedMessage,
    QueuedRecipient,
    QueuedRecipientSpec,
    QueueItem,
    QueueSummary,
    RecipientState,
    RecoveryReport,
    Transient,
    format_reply,
    parse_reply,
)
from kittiwake.smtp.replies import Reply

__all__ = ["LOST_MESSAGE", "Spool"]

log = logging.getLogger(__name__)

# Queue ids become file names: letters, digits, "_" and "-" only, and never "tmp".
_QUEUE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_ORIGINS = frozenset({"smtp", "submission", "sendmail", "bounce"})

LOST_MESSAGE = Reply(554, "5.3.0", "Queue file lost; the message cannot be delivered")

_RCPT_COLUMNS = ("id, queue_id, recipient, domain, orcpt, notify, state, attempts, next_attempt,"
                 " last_reply, last_host, first_seen, warned, last_attempt, dsn")
_MSG_COLUMNS = "queue_id, sender, envid, ret, smtputf8, eight_bit, size, arrival, origin, auth_user"


class Spool:
    """The queue on disk.  Thread-safe; open one per process and `close()` it."""

    def __init__(self, data_dir: Path, fsync: bool = True) -> None:
        self._dir = data_dir / "queue"
        self._tmp = self._dir / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._db = connect(data_dir / "kittiwake.db", durable=fsync)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- enqueue ----------------------------------------------------------------------------

    def enqueue(
        self,
        queue_id: str,
        content: bytes,
        sender: str,
        recipients: Sequence[QueuedRecipientSpec],
        *,
        envid: str | None = None,
        ret: str | None = None,
        smtputf8: bool = False,
        eight_bit: bool = False,
        origin: Origin = "smtp",
        auth_user: str | None = None,
        now: float,
    ) -> None:
        """Queue `content` for `recipients`; durable when this returns (see module doc).

        Recipients are de-duplicated (one delivery per address even if RCPT TO named it
        twice).  Raises ValueError for a bad queue id, origin or recipient, FileExistsError
        when the id is taken, and whatever the disk raises; on any error nothing is queued.
        """
        _check_queue_id(queue_id)
        if origin not in _ORIGINS:
            raise ValueError(f"unknown origin: {origin!r}")
        if ret is not None and ret.upper() not in ("FULL", "HDRS"):
            raise ValueError(f"RET must be FULL or HDRS: {ret!r}")
        rows: dict[str, tuple[str, QueuedRecipientSpec]] = {}
        for spec in recipients:
            if spec.recipient not in rows:
                rows[spec.recipient] = (_domain_of(spec.recipient), spec)
        if not rows:
            raise ValueError("a queued message needs at least one recipient")

        final = self._dir / queue_id
        self._write_durably(queue_id, content)
        try:
            with self._transaction() as db:
                db.execute(
                    f"INSERT INTO queue_messages ({_MSG_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (queue_id, sender, envid, ret.upper() if ret else None, int(smtputf8),
                     int(eight_bit), len(content), now, origin, auth_user),
                )
                db.executemany(
                    "INSERT INTO queue_recipients (queue_id, recipient, domain, orcpt, notify,"
                    " next_attempt, first_seen) VALUES (?,?,?,?,?,?,?)",
                    [(queue_id, rcpt, domain, spec.orcpt, spec.notify, now, now)
                     for rcpt, (domain, spec) in rows.items()],
                )
        except BaseException:
            # The file is ours (link refused to replace anything); without a row it must go.
            _unlink(final)
            raise
        log.info("event=queued queue_id=%s from=<%s> nrcpt=%d size=%d origin=%s",
                 queue_id, sender, len(rows), len(content), origin)

    def _write_durably(self, queue_id: str, content: bytes) -> None:
        tmp = self._tmp / queue_id
        final = self._dir / queue_id
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, final)  # FileExistsError if the id is taken: never clobber
        finally:
            _unlink(tmp)
        if self._fsync:
            _fsync_dir(self._dir)

    # --- the runner's side ------------------------------------------------------------------

    def due(self, now: float, limit: int = 100, *, lease: float = 900.0,
            max_recipients: int = 100) -> list[QueueItem]:
        """Claim recipients whose next attempt has come, grouped per (message, domain).

        At most `limit` groups; a group larger than `max_recipients` is split (RFC 5321
        §4.5.3.1.8 only promises 100 recipients per transaction).  The claimed recipients
        are leased for `lease` seconds, which must outlast one delivery attempt; the
        runner reports each back with `record_results`.
        """
        with self._transaction() as db:
            groups = db.execute(
                "SELECT queue_id, domain, MIN(next_attempt) AS t FROM queue_recipients"
                " WHERE state = 'queued' AND next_attempt <= ? AND lease_until <= ?"
                " GROUP BY queue_id, domain ORDER BY t LIMIT ?",
                (now, now, limit),
            ).fetchall()
            items: list[QueueItem] = []
            messages: dict[str, QueuedMessage] = {}
            for queue_id, domain, _ in groups:
                rcpts = [_recipient(row) for row in db.execute(
                    f"SELECT {_RCPT_COLUMNS} FROM queue_recipients WHERE queue_id = ?"
                    " AND domain = ? AND state = 'queued' AND next_attempt <= ?"
                    " AND lease_until <= ? ORDER BY id",
                    (queue_id, domain, now, now),
                )]
                db.executemany("UPDATE queue_recipients SET lease_until = ? WHERE id = ?",
                               [(now + lease, r.id) for r in rcpts])
                if queue_id not in messages:
                    messages[queue_id] = self._message(db, queue_id)
                for start in range(0, len(rcpts), max_recipients):
                    chunk = tuple(rcpts[start:start + max_recipients])
                    items.append(QueueItem(messages[queue_id], domain, chunk))
        return items

    def record_results(self, queue_id: str, results: Sequence[tuple[str, Outcome]],
                       now: float) -> None:
        """Store the outcome of one attempt per recipient and release their lease.

        Also decides which notification each recipient is owed (RFC 3461 §4.1 NOTIFY, never
        to the null sender); `pending_dsns` hands those out.  Results for a message deleted
        meanwhile (`kittiwake queue delete` during the attempt) or for recipients no longer
        queued are dropped; a recipient the message never had is a KeyError (a bug).
        """
        with self._transaction() as db:
            sender_row = db.execute("SELECT sender FROM queue_messages WHERE queue_id = ?",
                                    (queue_id,)).fetchone()
            if sender_row is None:
                log.warning("event=results_dropped queue_id=%s reason=message_gone", queue_id)
                return
            may_notify = bounce_allowed(sender_row[0])
            rows = {r[0]: r[1:] for r in db.execute(
                "SELECT recipient, id, state, notify, warned, dsn FROM queue_recipients"
                " WHERE queue_id = ?", (queue_id,))}
            for recipient, outcome in results:
                if recipient not in rows:
                    raise KeyError(recipient)
                rid, state, notify, warned, dsn = rows[recipient]
                if state != RecipientState.QUEUED:
                    continue

                def owed(kind: Kind, notify: str | None = notify) -> bool:
                    return may_notify and should_notify(kind, notify)

                reply = format_reply(outcome.reply)
                if isinstance(outcome, Delivered):
                    new_dsn = "success" if not outcome.remote_dsn and owed("success") else None
                    db.execute(
                        "UPDATE queue_recipients SET state = 'delivered', attempts = attempts + 1,"
                        " last_reply = ?, last_host = ?, last_attempt = ?, dsn = ?,"
                        " lease_until = 0 WHERE id = ?",
                        (reply, outcome.host, now, new_dsn, rid),
                    )
                elif isinstance(outcome, Transient):
                    warn = outcome.warn and not warned
                    if warn and dsn is None and owed("delay"):
                        dsn = "delay"
                    db.execute(
                        "UPDATE queue_recipients SET attempts = attempts + 1, next_attempt = ?,"
                        " last_reply = ?, last_host = ?, last_attempt = ?, warned = ?,"
                        " dsn = ?, lease_until = 0 WHERE id = ?",
                        (outcome.next_attempt, reply, outcome.host, now,
                         int(bool(warned) or warn), dsn, rid),
                    )
                else:
                    assert isinstance(outcome, Permanent)
                    db.execute(
                        "UPDATE queue_recipients SET state = 'bounced', attempts = attempts + 1,"
                        " last_reply = ?, last_host = ?, last_attempt = ?, dsn = ?,"
                        " lease_until = 0 WHERE id = ?",
                        (reply, outcome.host, now, "failure" if owed("failure") else None, rid),
                    )
        for recipient, outcome in results:
            log.info("event=attempt queue_id=%s to=<%s> result=%s host=%s reply=\"%s\"",
                     queue_id, recipient, type(outcome).__name__.lower(),
                     outcome.host or "-", format_reply(outcome.reply).split("\n")[0])
        self._remove_finished([queue_id])

    def pending_dsns(self, limit: int = 100) -> list[DsnDue]:
        """Notifications owed, one per (message, kind).  Send each, then call `dsn_done`.

        Call from one thread: a crash between sending and `dsn_done` repeats a DSN, which
        is the safe direction (never a lost bounce).
        """
        with self._lock:
            db = self._db
            pairs = db.execute(
                "SELECT DISTINCT queue_id, dsn FROM queue_recipients WHERE dsn IS NOT NULL"
                " ORDER BY queue_id LIMIT ?", (limit,)).fetchall()
            out = []
            for queue_id, kind in pairs:
                rcpts = tuple(_recipient(row) for row in db.execute(
                    f"SELECT {_RCPT_COLUMNS} FROM queue_recipients WHERE queue_id = ?"
                    " AND dsn = ? ORDER BY id", (queue_id, kind)))
                out.append(DsnDue(self._message(db, queue_id), kind, rcpts))
        return out

    def dsn_done(self, queue_id: str, kind: Kind, recipient_ids: Sequence[int]) -> None:
        """The DSN of `kind` for these recipients is safely queued or stored: forget it."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE queue_recipients SET dsn = NULL WHERE id = ? AND queue_id = ? AND dsn = ?",
                [(rid, queue_id, kind) for rid in recipient_ids],
            )
        self._remove_finished([queue_id])

    # --- reading ----------------------------------------------------------------------------

    def message_path(self, queue_id: str) -> Path:
        _check_queue_id(queue_id)
        return self._dir / queue_id

    def read_message(self, queue_id: str) -> bytes:
        """The queued content; FileNotFoundError once the message is gone."""
        return self.message_path(queue_id).read_bytes()

    def list_queue(self) -> list[QueueSummary]:
        """Every message still in the queue, oldest first (`kittiwake queue list`)."""
        with self._lock:
            ids = [r[0] for r in self._db.execute(
                "SELECT queue_id FROM queue_messages ORDER BY arrival, queue_id")]
            return [self._summary(self._db, queue_id) for queue_id in ids]

    def show(self, queue_id: str) -> QueueSummary | None:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM queue_messages WHERE queue_id = ?",
                                   (queue_id,)).fetchone()
            return None if row is None else self._summary(self._db, queue_id)

    # --- administration ---------------------------------------------------------------------

    def retry(self, queue_id: str | None, now: float) -> int:
        """Make queued recipients due now (`queue retry ID`, or `queue flush` with None).
        Returns how many recipients were rescheduled."""
        with self._transaction() as db:
            if queue_id is None:
                cur = db.execute("UPDATE queue_recipients SET next_attempt = ?"
                                 " WHERE state = 'queued'", (now,))
            else:
                cur = db.execute("UPDATE queue_recipients SET next_attempt = ?"
                                 " WHERE state = 'queued' AND queue_id = ?", (now, queue_id))
            count = cur.rowcount
        log.info("event=retry queue_id=%s nrcpt=%d", queue_id or "*", count)
        return count

    def delete(self, queue_id: str) -> bool:
        """Drop a message without notifying anyone (like `postsuper -d`).  False if unknown.

        Rows are marked deleted and their owed notifications cancelled first; then rows and
        file are removed (rows before file, see module doc).
        """
        with self._transaction() as db:
            found = db.execute("SELECT 1 FROM queue_messages WHERE queue_id = ?",
                               (queue_id,)).fetchone()
            if found is None:
                return False
            db.execute("UPDATE queue_recipients SET state = 'deleted', lease_until = 0"
                       " WHERE queue_id = ? AND state = 'queued'", (queue_id,))
            db.execute("UPDATE queue_recipients SET dsn = NULL WHERE queue_id = ?", (queue_id,))
        log.info("event=deleted queue_id=%s", queue_id)
        self._remove_finished([queue_id])
        return True

    def cleanup(self, now: float | None = None, *, grace: float = 3600.0) -> int:
        """Remove messages with nothing left to do (no queued recipient, no DSN owed): rows
        first, then the file.  Returns how many were removed.

        With `now`, also delete files without a row (and tmp/ files) older than `grace`
        seconds: debris of a crash between link and commit.  Younger ones may be an enqueue
        still in progress in another process, so they are left for a later pass.
        """
        with self._lock:
            ids = [r[0] for r in self._db.execute(
                "SELECT queue_id FROM queue_messages m WHERE NOT EXISTS (SELECT 1 FROM"
                " queue_recipients r WHERE r.queue_id = m.queue_id"
                " AND (r.state = 'queued' OR r.dsn IS NOT NULL))")]
        removed = self._remove_finished(ids)
        if now is not None:
            self._remove_debris(now - grace)
        return removed

    def recover(self, now: float, *, grace: float = 60.0) -> RecoveryReport:
        """Bring the spool to a consistent state at start-up, before the runner starts.

        - tmp/ files and files without a row were never acknowledged: deleted (only those
          older than `grace` seconds, in case another process is enqueuing right now);
        - leases held by the previous run are released, so its in-flight recipients are
          retried now rather than when the lease would have run out (at-least-once: a
          message may be sent twice if we crashed after the remote 250, never zero times);
        - rows whose file is missing are bounced (see module doc) and logged as errors;
        - finished messages are removed.
        """
        tmp_removed, orphans_removed = self._remove_debris(now - grace)
        with self._transaction() as db:
            leases = db.execute("UPDATE queue_recipients SET lease_until = 0"
                                " WHERE lease_until > 0").rowcount
            live = [r[0] for r in db.execute(
                "SELECT DISTINCT m.queue_id FROM queue_messages m JOIN"
                " queue_recipients r ON r.queue_id = m.queue_id"
                " WHERE r.state = 'queued' OR r.dsn IS NOT NULL")]
            lost = [q for q in live if not (self._dir / q).exists()]
            for queue_id in lost:
                sender = db.execute("SELECT sender FROM queue_messages WHERE queue_id = ?",
                                    (queue_id,)).fetchone()[0]
                for rid, notify in db.execute(
                        "SELECT id, notify FROM queue_recipients WHERE queue_id = ?"
                        " AND state = 'queued'", (queue_id,)).fetchall():
                    owed = bounce_allowed(sender) and should_notify("failure", notify)
                    db.execute(
                        "UPDATE queue_recipients SET state = 'bounced', last_reply = ?,"
                        " last_attempt = ?, dsn = ? WHERE id = ?",
                        (format_reply(LOST_MESSAGE), now, "failure" if owed else None, rid))
                log.error("event=queue_file_lost queue_id=%s action=bounced", queue_id)
        self.cleanup()
        report = RecoveryReport(tmp_removed, orphans_removed, tuple(lost), leases)
        log.info("event=queue_recovered tmp_removed=%d orphans_removed=%d lost=%d leases=%d",
                 tmp_removed, orphans_removed, len(lost), leases)
        return report

    # --- internals --------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (SQLITE_BUSY, I/O error) leaves the transaction open.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _message(self, db: sqlite3.Connection, queue_id: str) -> QueuedMessage:
        row = db.execute(f"SELECT {_MSG_COLUMNS} FROM queue_messages WHERE queue_id = ?",
                         (queue_id,)).fetchone()
        if row is None:
            raise KeyError(queue_id)
        return QueuedMessage(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]),
                             int(row[6]), float(row[7]), row[8], row[9])

    def _summary(self, db: sqlite3.Connection, queue_id: str) -> QueueSummary:
        rcpts = tuple(_recipient(row) for row in db.execute(
            f"SELECT {_RCPT_COLUMNS} FROM queue_recipients WHERE queue_id = ? ORDER BY id",
            (queue_id,)))
        return QueueSummary(self._message(db, queue_id), rcpts)

    def _remove_finished(self, queue_ids: Sequence[str]) -> int:
        """Delete finished messages' rows (committed), then their files."""
        if not queue_ids:
            return 0
        gone: list[str] = []
        with self._transaction() as db:
            for queue_id in queue_ids:
                busy = db.execute(
                    "SELECT 1 FROM queue_recipients WHERE queue_id = ?"
                    " AND (state = 'queued' OR dsn IS NOT NULL) LIMIT 1", (queue_id,)).fetchone()
                if busy is None and db.execute("DELETE FROM queue_messages WHERE queue_id = ?",
                                               (queue_id,)).rowcount:
                    gone.append(queue_id)
        for queue_id in gone:
            _unlink(self._dir / queue_id)
            log.info("event=removed queue_id=%s", queue_id)
        return len(gone)

    def _remove_debris(self, older_than: float) -> tuple[int, int]:
        tmp_removed = 0
        for entry in os.scandir(self._tmp):
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime <= older_than:
                _unlink(Path(entry.path))
                tmp_removed += 1
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT queue_id FROM queue_messages")}
        orphans = 0
        for entry in os.scandir(self._dir):
            if (entry.name in known or not entry.is_file(follow_symlinks=False)
                    or entry.stat().st_mtime > older_than):
                continue
            # Re-check under the lock: an enqueue may have committed since `known` was read.
            with self._lock:
                row = self._db.execute("SELECT 1 FROM queue_messages WHERE queue_id = ?",
                                       (entry.name,)).fetchone()
            if row is None:
                _unlink(Path(entry.path))
                orphans += 1
                log.warning("event=orphan_removed file=%s reason=no_row_never_acknowledged",
                            entry.name)
        return tmp_removed, orphans


# --- module helpers (pure functions; no state) ------------------------------------------------


def _recipient(row: Any) -> QueuedRecipient:
    return QueuedRecipient(
        id=int(row[0]), queue_id=row[1], recipient=row[2], domain=row[3], orcpt=row[4],
        notify=row[5], state=RecipientState(row[6]), attempts=int(row[7]),
        next_attempt=float(row[8]), last_reply=parse_reply(row[9]) if row[9] else None,
        last_host=row[10], first_seen=float(row[11]), warned=bool(row[12]),
        last_attempt=None if row[13] is None else float(row[13]), dsn=row[14],
    )


def _domain_of(recipient: str) -> str:
    """The lower-cased A-label domain: what MX lookup needs and what groups a transaction."""
    try:
        return parse_address(recipient, smtputf8=True).ascii_domain.lower()
    except AddressError as e:
        raise ValueError(f"cannot queue for {recipient!r}: {e}") from None


def _check_queue_id(queue_id: str) -> None:
    if not _QUEUE_ID.match(queue_id) or queue_id.lower() == "tmp":
        raise ValueError(f"bad queue id: {queue_id!r}")


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
