"""Password storage and authentication throttling: pure helpers for the account store.

* argon2id password hashes (RFC 9106) for PLAIN/LOGIN, via argon2-cffi.
* SCRAM-SHA-256 secrets (RFC 5802 §3, RFC 7677) in the RFC 5803 text form, so SCRAM can be
  offered without keeping the password anywhere.
* :class:`AuthThrottle`, a clock-injected limiter for failed logins (RFC 4954 §4 and
  RFC 9051 §11.1 both leave brute-force defence to the server).

This module may import argon2; :mod:`kittiwake.sasl` may not, which is why
:class:`~kittiwake.sasl.ScramCredentials` lives there and is re-exported here.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from typing import Final

import argon2
from argon2.exceptions import Argon2Error

from kittiwake.sasl import DEFAULT_SCRAM_ITERATIONS, ScramCredentials, saslprep

__all__ = [
    "Argon2Settings",
    "AuthThrottle",
    "ScramCredentials",
    "derive_scram_sha256",
    "hash_password",
    "needs_rehash",
    "prepare_password",
    "verify_password",
]

# Refuse to verify against stored hashes demanding more than this: a corrupted or planted
# hash with m=100 GiB must not take the server down (stored hashes are data, not code).
_MAX_MEMORY_COST_KIB: Final = 4 * 1024 * 1024
_MAX_TIME_COST: Final = 64
_MAX_PARALLELISM: Final = 64
_MAX_STORED_HASH_LEN: Final = 1024


@dataclass(frozen=True, slots=True)
class Argon2Settings:
    """argon2id cost parameters. The defaults are RFC 9106 §4's second recommended option
    (t=3, 64 MiB, p=4) — the argon2-cffi defaults; tests pass cheap values for speed."""

    time_cost: int = 3
    memory_cost: int = 64 * 1024  # KiB
    parallelism: int = 4
    hash_len: int = 32
    salt_len: int = 16

    def hasher(self) -> argon2.PasswordHasher:
        return argon2.PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_cost,
            parallelism=self.parallelism,
            hash_len=self.hash_len,
            salt_len=self.salt_len,
            type=argon2.Type.ID,
        )


DEFAULT_ARGON2: Final = Argon2Settings()


def prepare_password(password: str) -> str:
    """SASLprep (RFC 4013, approximated in :func:`kittiwake.sasl.saslprep`) before hashing.

    SCRAM clients prepare the password before deriving keys (RFC 5802 §2.2) and the PLAIN
    server compares prepared strings (RFC 4616 §2); preparing here too makes one password
    work the same through every mechanism. Raises ``ValueError`` for prohibited characters.
    """
    prepared = saslprep(password)
    if not prepared:
        raise ValueError("password is empty or contains prohibited characters")
    return prepared


def hash_password(password: str, *, settings: Argon2Settings = DEFAULT_ARGON2) -> str:
    """argon2id PHC string (``$argon2id$v=19$m=...``) of the prepared password."""
    return settings.hasher().hash(prepare_password(password))


def verify_password(stored: str, password: str) -> bool:
    """True if ``password`` matches ``stored``; False for a mismatch *and* for any malformed,
    unsupported or absurdly expensive stored hash — a bad row must not crash a login."""
    if len(stored) > _MAX_STORED_HASH_LEN:
        return False
    prepared = saslprep(password)
    if not prepared:
        return False
    try:
        params = argon2.extract_parameters(stored)
        if (
            params.memory_cost > _MAX_MEMORY_COST_KIB
            or params.time_cost > _MAX_TIME_COST
            or params.parallelism > _MAX_PARALLELISM
        ):
            return False
        # The hasher's own parameters are irrelevant to verify(): they come from `stored`.
        return bool(argon2.PasswordHasher().verify(stored, prepared))
    except (Argon2Error, ValueError):  # InvalidHashError is a ValueError
        return False


def needs_rehash(stored: str, *, settings: Argon2Settings = DEFAULT_ARGON2) -> bool:
    """True when ``stored`` was made with other parameters (or is malformed), so the store
    should replace it with :func:`hash_password` after the next successful login."""
    try:
        return bool(settings.hasher().check_needs_rehash(stored))
    except (Argon2Error, ValueError):
        return True


def derive_scram_sha256(
    password: str,
    *,
    salt: bytes | None = None,
    iterations: int = DEFAULT_SCRAM_ITERATIONS,
) -> ScramCredentials:
    """Derive the SCRAM-SHA-256 server secrets (RFC 5802 §3, RFC 7677):

    SaltedPassword = Hi(password, salt, i) = PBKDF2-HMAC-SHA-256;
    ClientKey = HMAC(SaltedPassword, "Client Key"); StoredKey = H(ClientKey);
    ServerKey = HMAC(SaltedPassword, "Server Key").
    """
    if iterations < 1:
        raise ValueError("iterations must be positive")
    if salt is None:
        salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", prepare_password(password).encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return ScramCredentials(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha256(client_key).digest(),
        server_key=server_key,
    )


# --------------------------------------------------------------------------- throttling


@dataclass(slots=True)
class _Record:
    window_start: float
    failures: int
    locked_until: float
    last_seen: float


def _ip_key(ip: str) -> str:
    """Throttle IPv6 per /64: one customer usually gets a whole /64, so counting single
    addresses would give an attacker 2**64 fresh counters. IPv4-mapped addresses count as
    the IPv4 address they are."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def _account_key(account: str) -> str:
    # Case variants of one name must share a counter, or "Alice" and "alice" double the
    # guesses an attacker gets.
    return account.casefold()


class AuthThrottle:
    """Failed-authentication limiter per client address and per account; pure, with ``now``
    (seconds, monotonic) passed in so tests need no sleeping.

    Each key counts failures in a fixed window starting at its first failure; reaching the
    limit locks the key for ``lockout`` seconds. ``record_failure`` returns a delay to wait
    before answering, doubling per failure up to ``max_delay``, which slows guessing
    without holding honest users up for long.

    Memory is bounded: a table is kept in order of last activity, so entries older than the
    window and lockout are dropped from its front, and beyond ``max_tracked`` keys the
    oldest are evicted (an attacker spraying that many addresses can reset counters; the
    cap keeps the server alive, which matters more).
    """

    def __init__(
        self,
        *,
        max_failures_per_ip: int = 10,
        max_failures_per_account: int = 10,
        window: float = 600.0,
        lockout: float = 900.0,
        base_delay: float = 1.0,
        max_delay: float = 8.0,
        max_tracked: int = 100_000,
    ) -> None:
        if min(max_failures_per_ip, max_failures_per_account, max_tracked) < 1:
            raise ValueError("failure limits and max_tracked must be positive")
        if window <= 0 or lockout < 0 or base_delay < 0 or max_delay < base_delay:
            raise ValueError("invalid throttle timings")
        self._max_ip = max_failures_per_ip
        self._max_account = max_failures_per_account
        self._window = window
        self._lockout = lockout
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._max_tracked = max_tracked
        self._retention = max(window, lockout)
        self._ips: dict[str, _Record] = {}
        self._accounts: dict[str, _Record] = {}

    def __len__(self) -> int:
        """Number of tracked keys (addresses plus accounts)."""
        return len(self._ips) + len(self._accounts)

    def check(self, ip: str, account: str | None, now: float) -> bool:
        """False if the address or the account is locked out: refuse without verifying,
        so a locked account cannot be guessed at even with the right password.
        ``account`` is None when the username is not known yet."""
        self._expire(now)
        if self._locked(self._ips.get(_ip_key(ip)), now):
            return False
        return account is None or not self._locked(self._accounts.get(_account_key(account)), now)

    def record_failure(self, ip: str, account: str | None, now: float) -> float:
        """Count a failed authentication; return the seconds to wait before replying."""
        self._expire(now)
        failures = self._fail(self._ips, _ip_key(ip), self._max_ip, now)
        if account is not None:
            failures = max(
                failures,
                self._fail(self._accounts, _account_key(account), self._max_account, now),
            )
        # Cap the exponent: 2**32 * base_delay already exceeds any sane max_delay.
        return float(min(self._max_delay, self._base_delay * 2.0 ** min(failures - 1, 32)))

    def record_success(self, ip: str, account: str | None, now: float) -> None:
        """Forget the account's failures: its owner has shown the password.

        The address's counter is kept on purpose: otherwise an attacker owning one account
        could log into it between guesses at others and launder the address's record.
        """
        self._expire(now)
        if account is not None:
            self._accounts.pop(_account_key(account), None)

    @staticmethod
    def _locked(record: _Record | None, now: float) -> bool:
        return record is not None and record.locked_until > now

    def _fail(self, table: dict[str, _Record], key: str, limit: int, now: float) -> int:
        record = table.pop(key, None)  # re-inserted below: dict order = last activity
        if record is None:
            record = _Record(window_start=now, failures=0, locked_until=0.0, last_seen=now)
        elif now - record.window_start >= self._window:
            record.window_start = now
            record.failures = 0
        record.failures += 1
        record.last_seen = now
        if record.failures >= limit:
            # Failures while locked extend the lockout: persistence is not rewarded.
            record.locked_until = max(record.locked_until, now + self._lockout)
        table[key] = record
        while len(table) > self._max_tracked:
            del table[next(iter(table))]
        return record.failures

    def _expire(self, now: float) -> None:
        # Entries are ordered by last_seen, and both the window and any lockout end within
        # `retention` of it, so stale entries are exactly a prefix of each table.
        for table in (self._ips, self._accounts):
            while table:
                key = next(iter(table))
                record = table[key]
                if now - record.last_seen < self._retention or record.locked_until > now:
                    break
                del table[key]
