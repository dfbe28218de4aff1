"""The seam between the directory and password hashing.

The hashing itself (argon2id for LOGIN/PLAIN, SCRAM-SHA-256 keys per RFC 5802/7677) is owned
by `kittiwake.credentials`; the directory only stores what it produces.  A Protocol keeps the
directory testable without paying argon2's deliberate cost in every unit test.
"""

from __future__ import annotations

from typing import Protocol


class PasswordScheme(Protocol):
    def hash(self, password: str) -> str:
        """The stored form used by `verify` (argon2id PHC string)."""
        ...

    def verify(self, stored: str, password: str) -> bool: ...

    def scram(self, password: str) -> str:
        """SCRAM-SHA-256 salt/iterations/StoredKey/ServerKey as text."""
        ...


class Credentials:
    """`kittiwake.credentials`, imported on first use: importing the store (say, for the
    CLI's `domain list`) need not load argon2."""

    def hash(self, password: str) -> str:
        from kittiwake import credentials

        return credentials.hash_password(password)

    def verify(self, stored: str, password: str) -> bool:
        from kittiwake import credentials

        return credentials.verify_password(stored, password)

    def scram(self, password: str) -> str:
        from kittiwake import credentials

        return credentials.derive_scram_sha256(password).to_text()
