"""`kittiwake sendmail`: turn what a script pipes to sendmail(8) into a queueable message.

Semantics follow Postfix's sendmail(1): recipients from the command line, or from the
headers with -t (Bcc removed, RFC 5322 §3.6.3); without -i a line holding a single "."
ends the message; missing From, Date and Message-ID are added like a submission server
would (RFC 6409 §8); line endings become CRLF, the form the queue and the wire use.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from email.utils import formataddr, getaddresses

from kittiwake.address import AddressError, parse_address
from kittiwake.message.headers import (
    date_header,
    get_all_fields,
    get_field,
    iter_field_spans,
    message_id,
    split_header,
    unfold,
)


@dataclass(frozen=True, slots=True)
class Prepared:
    sender: str
    recipients: tuple[str, ...]
    content: bytes
    smtputf8: bool
    eight_bit: bool


def _crlf(data: bytes, ignore_dots: bool) -> bytes:
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        if not ignore_dots and line == b".":
            break
        out.append(line)
    return b"".join(line + b"\r\n" for line in out)


def _addresses(values: list[bytes]) -> list[str]:
    texts = [unfold(v).decode("utf-8", "replace") for v in values]
    return [addr for _, addr in getaddresses(texts) if addr]


def prepare(data: bytes, *, sender: str, recipients: list[str], extract: bool,
            ignore_dots: bool, full_name: str | None, hostname: str,
            now: dt.datetime | None = None) -> Prepared:
    content = _crlf(data, ignore_dots)
    header, body_start = split_header(content)
    rcpts = list(recipients)
    if extract:
        for name in ("to", "cc", "bcc"):
            rcpts.extend(_addresses(get_all_fields(header, name)))
        # Bcc recipients must not see each other (RFC 5322 §3.6.3): drop the field.
        kept = b"".join(header[s:e] for name, s, e in iter_field_spans(header) if name != "bcc")
        if kept != header:
            content = kept + content[len(header):]
            header = kept
    if not rcpts:
        raise ValueError("no recipients (give addresses or use -t)")
    checked = []
    for r in rcpts:
        try:
            addr = parse_address(r.strip().strip("<>"), smtputf8=True)
        except AddressError as e:
            raise ValueError(f"bad recipient {r!r}: {e}") from None
        checked.append(str(addr))
    if sender:
        try:
            sender = str(parse_address(sender.strip().strip("<>"), smtputf8=True))
        except AddressError as e:
            raise ValueError(f"bad sender {sender!r}: {e}") from None
    when = now or dt.datetime.now(dt.UTC).astimezone()
    extra = b""
    if get_field(header, "from") is None:
        extra += f"From: {formataddr((full_name or '', sender))}\r\n".encode()
    if get_field(header, "date") is None:
        extra += date_header(when)
    if get_field(header, "message-id") is None:
        extra += f"Message-ID: {message_id(hostname)}\r\n".encode()
    if not header and body_start == 0:  # no header at all: keep the body a body
        extra += b"\r\n"
    content = extra + content
    smtputf8 = not all(a.isascii() for a in [sender, *checked])
    return Prepared(sender=sender, recipients=tuple(dict.fromkeys(checked)), content=content,
                    smtputf8=smtputf8, eight_bit=not content.isascii())
