"""The directory: domains, accounts, aliases, and recipient resolution.

Synchronous by design: `resolve`, `is_local_domain` and `account_exists` run on the event
loop for every RCPT TO, and each is a handful of primary-key lookups on a WAL database —
microseconds, cheaper than a thread hop.  One SQLite connection per Directory, guarded by a
lock so the slow, CPU-bound password checks can be pushed to a thread
(`await asyncio.to_thread(directory.verify_password, ...)`) without corrupting it.

Resolution order for `resolve(address)` (first match wins):
  1. an account with exactly that address;
  2. an alias with exactly that source, its targets expanded recursively;
  3. subaddress `user+tag@d` (RFC 5233) retried as `user@d`, account then alias;
  4. the catch-all alias `@d`.
Alias targets go through the same steps when in a local domain, and count as remote
otherwise.  Expansion is depth-limited and each alias expands at most once per lookup, so
loops and diamonds terminate and the result has no duplicates.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from kittiwake.store import db, index
from kittiwake.store.addresses import (
    account_dir,
    fold,
    fold_domain,
    fold_remote,
    fold_source,
    split,
)
from kittiwake.store.errors import AlreadyExists, DomainNotEmpty, InvalidAddress, NotFound
from kittiwake.store.models import Account, Alias, Resolution
from kittiwake.store.passwords import Credentials, PasswordScheme

log = logging.getLogger(__name__)

MAX_ALIAS_DEPTH = 10


def _like_suffix(domain: str) -> str:
    """A LIKE pattern matching sources in `domain` ('x@d' and '@d'), wildcards escaped."""
    escaped = domain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "%@" + escaped


class Directory:
    def __init__(
        self,
        db_path: Path | str,
        *,
        mail_root: Path | None = None,
        passwords: PasswordScheme | None = None,
        subaddress_separator: str = "+",
        durable: bool = True,
    ) -> None:
        """`mail_root` defaults to `<dir of db>/mail`, the documented layout."""
        self.db_path = Path(db_path)
        self.mail_root = mail_root if mail_root is not None else self.db_path.parent / "mail"
        self._passwords: PasswordScheme = passwords if passwords is not None else Credentials()
        self._separator = subaddress_separator
        self._durable = durable
        self._lock = threading.Lock()
        self._conn = db.connect(self.db_path, durable=durable, check_same_thread=False)
        self._dummy_hash: str | None = None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Directory:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _write(self, statements: Sequence[tuple[str, tuple[object, ...]]]) -> list[int]:
        """Run statements in one IMMEDIATE transaction; return each one's rowcount."""
        counts = []
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    counts.append(self._conn.execute(sql, params).rowcount)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return counts

    def _one(self, sql: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            row: tuple[Any, ...] | None = self._conn.execute(sql, params).fetchone()
            return row

    # ------------------------------------------------------------------ domains

    def add_domain(self, name: str) -> None:
        domain = fold_domain(name)
        try:
            self._write(
                [("INSERT INTO domains (name, created) VALUES (?, ?)", (domain, time.time()))]
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"domain {domain} exists") from None

    def del_domain(self, name: str, *, force: bool = False) -> None:
        """Remove a domain.  With accounts in it, refuse unless `force`, which also deletes its
        accounts and aliases — but never their files: mail is only destroyed by
        `del_account(purge=True)`."""
        domain = fold_domain(name)
        if not self.is_local_domain(domain):
            raise NotFound(f"no domain {domain}")
        row = self._one("SELECT COUNT(*) FROM accounts WHERE domain = ?", (domain,))
        if row and row[0] and not force:
            raise DomainNotEmpty(f"domain {domain} has {row[0]} accounts")
        self._write(
            [
                ("DELETE FROM aliases WHERE source LIKE ? ESCAPE '\\'", (_like_suffix(domain),)),
                ("DELETE FROM accounts WHERE domain = ?", (domain,)),
                ("DELETE FROM domains WHERE name = ?", (domain,)),
            ]
        )

    def list_domains(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT name FROM domains ORDER BY name")]

    def is_local_domain(self, name: str) -> bool:
        try:
            domain = fold_domain(name)
        except InvalidAddress:
            return False
        return self._one("SELECT 1 FROM domains WHERE name = ?", (domain,)) is not None

    # ------------------------------------------------------------------ accounts

    def add_account(self, address: str, password: str, *, quota_bytes: int = 0) -> None:
        """Create the account, its Maildir++ tree and the default mailboxes.

        If files from a deleted account of the same address are still on disk they are kept
        and walked in by the next rescan; use `del_account(purge=True)` to really remove mail.
        """
        key = fold(address)
        _, domain = split(key)
        if not self.is_local_domain(domain):
            raise NotFound(f"no domain {domain}")
        if self.account_exists(key):
            raise AlreadyExists(f"account {key} exists")
        # Hashing is slow on purpose and the tree is file-system work: both outside the lock.
        password_hash = self._passwords.hash(password)
        scram = self._passwords.scram(password)
        index.create_default_folders(account_dir(self.mail_root, key), durable=self._durable)
        now = time.time()
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT INTO accounts (address, domain, password_hash, scram, quota_bytes,"
                    " created) VALUES (?, ?, ?, ?, ?, ?)",
                    (key, domain, password_hash, scram, quota_bytes, now),
                )
                assert cur.lastrowid is not None
                index.create_default_mailboxes(conn, cur.lastrowid, now)
                conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                raise AlreadyExists(f"account {key} exists") from None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        log.info("account added address=%s", key)

    def del_account(self, address: str, *, purge: bool = False) -> None:
        """Delete the account and its index rows (cascade); files stay unless `purge`."""
        key = fold(address)
        (count,) = self._write([("DELETE FROM accounts WHERE address = ?", (key,))])
        if not count:
            raise NotFound(f"no account {key}")
        if purge:
            shutil.rmtree(account_dir(self.mail_root, key), ignore_errors=True)
        log.info("account deleted address=%s purge=%s", key, purge)

    def list_accounts(self, domain: str | None = None) -> list[Account]:
        sql = "SELECT address, domain, quota_bytes, used_bytes, created FROM accounts"
        params: tuple[object, ...] = ()
        if domain is not None:
            sql += " WHERE domain = ?"
            params = (fold_domain(domain),)
        with self._lock:
            return [Account(*r) for r in self._conn.execute(sql + " ORDER BY address", params)]

    def account(self, address: str) -> Account | None:
        """The account with its quota and usage (for a RCPT-time quota check), or None."""
        try:
            key = fold(address)
        except InvalidAddress:
            return None
        row = self._one(
            "SELECT address, domain, quota_bytes, used_bytes, created FROM accounts"
            " WHERE address = ?",
            (key,),
        )
        return Account(*row) if row else None

    def account_exists(self, address: str) -> bool:
        try:
            key = fold(address)
        except InvalidAddress:
            return False
        return self._one("SELECT 1 FROM accounts WHERE address = ?", (key,)) is not None

    def set_password(self, address: str, password: str) -> None:
        key = fold(address)
        password_hash, scram = self._passwords.hash(password), self._passwords.scram(password)
        sql = "UPDATE accounts SET password_hash = ?, scram = ? WHERE address = ?"
        (count,) = self._write([(sql, (password_hash, scram, key))])
        if not count:
            raise NotFound(f"no account {key}")

    def set_quota(self, address: str, quota_bytes: int) -> None:
        key = fold(address)
        (count,) = self._write(
            [("UPDATE accounts SET quota_bytes = ? WHERE address = ?", (quota_bytes, key))]
        )
        if not count:
            raise NotFound(f"no account {key}")

    def verify_password(self, address: str, password: str) -> bool:
        """Check a password.  CPU-heavy (argon2id): call it via asyncio.to_thread.

        An unknown account still costs one verification against a dummy hash, so response
        time does not reveal which addresses exist.
        """
        try:
            key = fold(address)
        except InvalidAddress:
            key = ""
        row = (
            self._one("SELECT password_hash FROM accounts WHERE address = ?", (key,))
            if key
            else None
        )
        if row is None:
            if self._dummy_hash is None:
                self._dummy_hash = self._passwords.hash("kittiwake-dummy-password")
            self._passwords.verify(self._dummy_hash, password)
            return False
        return self._passwords.verify(str(row[0]), password)

    def scram_credentials(self, address: str) -> str | None:
        """The stored SCRAM-SHA-256 text (parse with `kittiwake.credentials`), or None."""
        try:
            key = fold(address)
        except InvalidAddress:
            return None
        row = self._one("SELECT scram FROM accounts WHERE address = ?", (key,))
        return str(row[0]) if row else None

    # ------------------------------------------------------------------ aliases

    def add_alias(self, source: str, targets: list[str]) -> None:
        """Add `source` → each target (idempotent per pair).  `source` is `local@d` or `@d`
        (catch-all) in a local domain.  Targets in local domains are folded like accounts;
        remote targets keep their local part's case, which belongs to the remote site."""
        src = fold_source(source)
        _, domain = split(src)
        if not self.is_local_domain(domain):
            raise NotFound(f"no domain {domain}")
        if not targets:
            raise ValueError("an alias needs at least one target")
        if not src.startswith("@") and self.account_exists(src):
            # The account would always win the lookup: the alias could never take effect.
            raise AlreadyExists(f"{src} is an account")
        rows = []
        for target in targets:
            t = fold_remote(target)
            if self.is_local_domain(split(t)[1]):
                t = fold(t)
            rows.append(("INSERT OR IGNORE INTO aliases (source, target) VALUES (?, ?)", (src, t)))
        self._write(rows)

    def del_alias(self, source: str, target: str | None = None) -> None:
        src = fold_source(source)
        if target is None:
            (count,) = self._write([("DELETE FROM aliases WHERE source = ?", (src,))])
        else:
            # Remote targets are stored with their case; local ones folded: accept either.
            t = fold_remote(target)
            sql = (
                "DELETE FROM aliases WHERE source = ? AND (target = ? OR lower(target) = lower(?))"
            )
            (count,) = self._write([(sql, (src, t, t))])
        if not count:
            raise NotFound(f"no alias {src}" + (f" → {target}" if target else ""))

    def list_aliases(self, domain: str | None = None) -> list[Alias]:
        sql = "SELECT source, target FROM aliases"
        params: tuple[str, ...] = ()
        if domain is not None:
            sql, params = (
                sql + " WHERE source LIKE ? ESCAPE '\\'",
                (_like_suffix(fold_domain(domain)),),
            )
        grouped: dict[str, list[str]] = {}
        with self._lock:
            for source, target in self._conn.execute(sql + " ORDER BY source, target", params):
                grouped.setdefault(source, []).append(target)
        return [Alias(source, tuple(targets)) for source, targets in grouped.items()]

    # ------------------------------------------------------------------ resolution

    def resolve(self, address: str) -> Resolution:
        """Where mail for `address` goes; empty if it is not ours (unknown user, or a domain
        that is not local — relaying is the caller's decision, not the directory's)."""
        try:
            key = fold(address)
        except InvalidAddress:
            return Resolution()
        local: dict[str, None] = {}  # dicts: ordered sets
        remote: dict[str, None] = {}
        with self._lock:
            if not self._domain_known(split(key)[1]):
                return Resolution()
            self._expand(key, 0, set(), local, remote)
        return Resolution(tuple(local), tuple(remote))

    def _domain_known(self, domain: str) -> bool:
        return (
            self._conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone()
            is not None
        )

    def _expand(
        self,
        address: str,
        depth: int,
        seen: set[str],
        local: dict[str, None],
        remote: dict[str, None],
    ) -> None:
        local_part, domain = split(address)
        if not self._domain_known(domain):
            remote[address] = None
            return
        local_part = local_part.lower()
        candidates = [f"{local_part}@{domain}"]
        base, sep, _tag = local_part.partition(self._separator)
        if sep and base:
            candidates.append(f"{base}@{domain}")
        candidates.append(f"@{domain}")
        conn = self._conn
        for candidate in candidates:
            if (
                not candidate.startswith("@")
                and conn.execute(
                    "SELECT 1 FROM accounts WHERE address = ?", (candidate,)
                ).fetchone()
            ):
                local[candidate] = None
                return
            targets = [
                r[0]
                for r in conn.execute("SELECT target FROM aliases WHERE source = ?", (candidate,))
            ]
            if not targets:
                continue
            if candidate in seen:  # a loop, or reached again through another branch
                return
            if depth >= MAX_ALIAS_DEPTH:
                log.warning("alias expansion too deep at source=%s; branch dropped", candidate)
                return
            seen.add(candidate)
            for target in targets:
                self._expand(target, depth + 1, seen, local, remote)
            return
