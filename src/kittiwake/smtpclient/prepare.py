"""What delivery needs to know about a message before talking to any server.

Addresses are parsed once (RFC 5321 §4.1.2 / RFC 6531 §3.3) and kept in two forms: as given
(for SMTPUTF8 servers) and all-ASCII with A-label domains (RFC 6531 §3.2 lets a client send
an ASCII local part with the domain converted to A-labels to a server without SMTPUTF8).
The content is scanned once for 8-bit octets (whether 8BITMIME or conversion is needed) and
for 8-bit header fields (which only SMTPUTF8 can carry, RFC 6532).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kittiwake.address import Address, AddressError, parse_address
from kittiwake.smtp.replies import Reply
from kittiwake.smtpclient.convert import to_7bit
from kittiwake.smtpclient.types import OutboundMessage, Recipient

CHUNK = 64 * 1024
_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})


@dataclass(frozen=True, slots=True)
class PreparedRecipient:
    index: int
    recipient: Recipient
    as_given: str
    ascii: str | None  # None: the local part is not ASCII, only SMTPUTF8 can carry it
    domain: str  # A-label form, lower case
    notify: str | None  # validated, upper-cased
    orcpt: str | None = None  # None when it could not be passed on correctly
    error: Reply | None = None  # the address is unusable: a permanent failure


def _ascii_form(text: str, address: Address) -> str | None:
    if text.isascii():
        return text
    if not address.local.isascii():
        return None
    return str(Address(address.local, address.ascii_domain))  # local part quoted as needed


def _notify(value: str | None) -> str | None:
    # RFC 3461 §4.1; a value we could not pass on correctly is dropped, not guessed at.
    if value is None:
        return None
    words = [w.strip().upper() for w in value.split(",")]
    if words == ["NEVER"] or (set(words) <= _NOTIFY_WORDS and len(set(words)) == len(words)):
        return ",".join(words)
    return None


class PreparedMessage:
    def __init__(self, message: OutboundMessage, size: int, eight_bit: bool,
                 header_8bit: bool) -> None:
        self.message = message
        self.size = size
        self.eight_bit = eight_bit
        self.header_8bit = header_8bit
        self.ret = message.ret.upper() if message.ret and message.ret.upper() in (
            "FULL", "HDRS") else None
        self._converted: bytes | None = None
        self._conversion_done = False
        self.sender_as_given = message.sender
        self.sender_ascii: str | None = message.sender
        self.sender_error: Reply | None = None
        if message.sender:
            try:
                address = parse_address(message.sender, smtputf8=True)
            except AddressError as exc:
                self.sender_error = Reply(553, "5.1.7", f"bad sender address: {exc}")
            else:
                self.sender_ascii = _ascii_form(message.sender, address)
        self.recipients = [self._recipient(i, r) for i, r in enumerate(message.recipients)]

    @staticmethod
    def _recipient(index: int, rcpt: Recipient) -> PreparedRecipient:
        try:
            address = parse_address(rcpt.address, smtputf8=True)
        except AddressError as exc:
            return PreparedRecipient(index, rcpt, rcpt.address, None, "", None,
                                     error=Reply(553, "5.1.3", f"bad recipient address: {exc}"))
        orcpt = rcpt.orcpt
        if orcpt is not None and any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in orcpt):
            orcpt = None  # RFC 3461 §4.2 allows no controls in an address (nor on the wire)
        return PreparedRecipient(index, rcpt, rcpt.address, _ascii_form(rcpt.address, address),
                                 address.ascii_domain.lower(), _notify(rcpt.notify), orcpt)

    @classmethod
    async def prepare(cls, message: OutboundMessage) -> PreparedMessage:
        content = message.content
        if isinstance(content, Path):
            size, eight_bit, header_8bit = await asyncio.to_thread(_scan_file, content)
        else:
            size, eight_bit = len(content), not content.isascii()
            header_8bit = eight_bit and not _header_block(content).isascii()
        return cls(message, size, eight_bit, header_8bit)

    @property
    def needs_smtputf8(self) -> bool:
        """Only SMTPUTF8 can carry this: UTF-8 header fields or a non-ASCII sender."""
        return (self.message.smtputf8 and self.header_8bit) or self.sender_ascii is None

    async def converted(self) -> bytes | None:
        """The 7-bit version (RFC 6152 §3), computed once; None when impossible."""
        if not self._conversion_done:
            content = self.message.content
            if isinstance(content, Path):
                content = await asyncio.to_thread(content.read_bytes)
            self._converted = await asyncio.to_thread(to_7bit, content)
            self._conversion_done = True
        return self._converted

    def chunks(self, converted: bool) -> Iterator[bytes]:
        """The content to send, in chunks (a file is read as it goes)."""
        if converted:
            data = self._converted or b""
            for i in range(0, len(data), CHUNK):
                yield data[i:i + CHUNK]
            return
        content = self.message.content
        if isinstance(content, Path):
            with content.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
            return
        for i in range(0, len(content), CHUNK):
            yield content[i:i + CHUNK]


def _header_block(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[:end]


def _scan_file(path: Path) -> tuple[int, bool, bool]:
    size, eight_bit, header_8bit = 0, False, False
    header = bytearray()
    in_header = True
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            size += len(chunk)
            if not eight_bit and not chunk.isascii():
                eight_bit = True
            if in_header:
                header += chunk
                end = header.find(b"\r\n\r\n")
                if end >= 0:
                    in_header = False
                    del header[end:]
                if not bytes(header).isascii():
                    header_8bit = True
                    in_header = False
                if not in_header:
                    header.clear()
    return size, eight_bit, header_8bit
