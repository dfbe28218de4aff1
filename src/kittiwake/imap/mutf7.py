"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3; RFC 9051 §5.1.3 and Appendix A).

IMAP4rev1 clients that have not enabled UTF8=ACCEPT (RFC 6855) or IMAP4rev2 name
mailboxes in this encoding: printable US-ASCII stands for itself except ``&``, which is
written ``&-``; any other run of characters is UTF-16BE in base64 (with ``,`` for ``/``
and no padding) between ``&`` and ``-``.

Decoding is strict, as RFC 3501 §5.1.3 requires one canonical form per name: a name
with two spellings would let a client create "Drafts" twice.  Rejected: raw 8-bit or
control octets, an unterminated shift, characters outside the modified base64 alphabet,
non-zero pad bits, odd octet counts, unpaired surrogates, and printable ASCII inside a
shift.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["decode", "encode"]

_B64_RUN = re.compile(r"[A-Za-z0-9+,]*")


def _is_direct(ch: str) -> bool:
    return 0x20 <= ord(ch) <= 0x7E


def _shift(run: list[str]) -> str:
    return _shift_bytes("".join(run).encode("utf-16-be", "surrogatepass"))


def encode(name: str) -> str:
    """The modified UTF-7 spelling of a Unicode mailbox name."""
    out: list[str] = []
    run: list[str] = []
    for ch in name:
        if _is_direct(ch):
            if run:
                out.append(_shift(run))
                run = []
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    if run:
        out.append(_shift(run))
    return "".join(out)


def decode(text: str) -> str:
    """The Unicode name for a modified UTF-7 one; ValueError if it is not canonical."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "&":
            if not _is_direct(ch):
                raise ValueError("mailbox name has a character outside printable US-ASCII")
            out.append(ch)
            i += 1
            continue
        m = _B64_RUN.match(text, i + 1)
        assert m is not None  # the pattern matches the empty string
        end = m.end()
        if end >= n or text[end] != "-":
            raise ValueError("unterminated modified base64 in mailbox name")
        run = m.group()
        i = end + 1
        if not run:
            out.append("&")
            continue
        padded = run.replace(",", "/") + "=" * (-len(run) % 4)
        try:
            data = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("bad modified base64 in mailbox name") from None
        if len(data) % 2 or _shift_bytes(data) != "&" + run + "-":
            raise ValueError("non-canonical modified base64 in mailbox name")
        try:
            chars = data.decode("utf-16-be")
        except UnicodeDecodeError:
            raise ValueError("bad UTF-16 in mailbox name") from None
        if any(_is_direct(c) for c in chars):
            raise ValueError("printable ASCII must not be base64-encoded in a mailbox name")
        out.append(chars)
    return "".join(out)


def _shift_bytes(data: bytes) -> str:
    return "&" + base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",") + "-"
