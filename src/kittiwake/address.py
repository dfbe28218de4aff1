"""Mail addresses and paths as pure values (RFC 5321 §4.1.2, RFC 6531 for UTF-8).

CONTRACT (implementation pending): see the helper task for details.
"""

from __future__ import annotations

from dataclasses import dataclass


class AddressError(ValueError):
    """The text is not a valid address/path; `str(err)` says why (never sent verbatim)."""


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox `local@domain`.

    `local` is the local part's value (quotes and quoted-pair escapes removed), case kept;
    `domain` is lower-cased, in Unicode (U-label) form for IDNs, or an address literal such as
    "[127.0.0.1]" / "[IPv6:::1]" kept as sent.
    """

    local: str
    domain: str

    def __str__(self) -> str:  # quoted when the local part needs it
        raise NotImplementedError
