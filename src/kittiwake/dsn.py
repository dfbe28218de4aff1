"""Delivery status notifications: RFC 3464 reports inside RFC 6522 multipart/report.

A DSN ("bounce") tells the sender what became of a message: failed (RFC 3464 §2.3.3
Action: failed), delayed (a warning while we keep retrying) or delivered (only when the
sender asked with NOTIFY=SUCCESS, RFC 3461 §4.1).  The report has three parts (RFC 6522 §3):

  1. text/plain for a person, worded like Postfix's bounces so users recognise it;
  2. message/delivery-status for programs (RFC 3464 §2): per-message fields, then one block
     per recipient;
  3. the returned message: message/rfc822 (RET=FULL) or text/rfc822-headers (RET=HDRS,
     delay/success reports, or an original too big to send back).

Internationalised mail (RFC 6533): when an address is not ASCII the machine-readable part
becomes message/global-delivery-status and the address type "utf-8" is used; when the
original's header carries UTF-8 (an SMTPUTF8 message) it is returned as message/global or
message/global-headers.

Envelope rules the caller must keep (this module only builds the content):
  * a DSN is sent with the null reverse-path, MAIL FROM:<> (RFC 3461 §6.2, RFC 5321
    §4.5.5), so a DSN about a DSN can never be generated and loops stop;
  * it is never sent *to* the null reverse-path: :func:`bounce_allowed` says so and
    :func:`build_dsn` refuses;
  * the DSN goes to the original envelope sender (RFC 3464 §2: not From:, not Reply-To:).

ENVID and ORCPT arrive xtext-encoded on the wire (RFC 3461 §4, §4.2, §4.4); the DSN fields
carry the decoded text (RFC 3464 §2.2.1 envelope-id, §2.3.1 generic-address), so callers pass
decoded values — :func:`xtext_decode` and :func:`decode_orcpt` do that.

Layer L1: pure.  No clock (``now`` is passed in), no I/O; the only entropy is the MIME
boundary and Message-ID, taken from :mod:`secrets`.
"""

from __future__ import annotations

import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Literal

__all__ = [
    "Action",
    "DsnRecipient",
    "Kind",
    "bounce_allowed",
    "build_dsn",
    "decode_orcpt",
    "should_notify",
    "xtext_decode",
]

Kind = Literal["failure", "delay", "success"]
Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]

_KINDS = frozenset({"failure", "delay", "success"})
_ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
# RFC 3463 §2 status-code = class "." subject "." detail; class 2, 4 or 5; 1-3 digits each.
_STATUS = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}\Z")
# RFC 3461 §4: xtext hexchar is "+" and two upper-case hex digits.
_XTEXT_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")
# RFC 6533 §3 EmbeddedUnicodeChar: "\x{" 1*6 HEXDIG "}".
_EMBEDDED_UNICODE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_MSG_ID = re.compile(rb"^message-id[ \t]*:[ \t]*(<[!-;=?-~]{1,250}>)", re.IGNORECASE | re.MULTILINE)

_MAX_LINE = 78  # RFC 5322 §2.1.1 SHOULD
_MAX_TEXT = 900  # cap peer-supplied text so no line can pass RFC 5322's 998-octet MUST
_WRAP = 72  # width of the human-readable part

_SUBJECTS = {
    "failure": "Undelivered Mail Returned to Sender",
    "delay": "Delayed Mail (still being retried)",
    "success": "Successful Mail Delivery Report",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DsnRecipient:
    """One per-recipient block (RFC 3464 §2.3).

    `final_recipient` is the address we tried (RFC 3464 §2.3.2); `original_recipient` is the
    decoded ORCPT, either "addr-type;address" or a bare address taken as rfc822 (§2.3.1).
    `diagnostic` is "diagnostic-type; text", normally "smtp; 550 5.1.1 No such user"
    (§2.3.6).  `remote_mta` is a host name (§2.3.5).  The Action/Status pairing is not
    forced: RFC 3463 §3.1 lets a "failed" action carry a persistent transient 4.x.x status
    (a message that expired after temporary failures), as Postfix reports it.
    """

    final_recipient: str
    original_recipient: str | None = None
    action: Action
    status: str
    remote_mta: str | None = None
    diagnostic: str | None = None
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise ValueError(f"not an RFC 3464 action: {self.action!r}")
        if not _STATUS.match(self.status):
            raise ValueError(f"not an RFC 3463 status code: {self.status!r}")
        if not self.final_recipient:
            raise ValueError("final_recipient is empty")


# --------------------------------------------------------------------------- policy


def should_notify(kind: Kind, notify_param: str | None) -> bool:
    """RFC 3461 §4.1 NOTIFY: may a DSN of `kind` be sent for this recipient?

    Without NOTIFY the choice is ours (§4.1 "as if NOTIFY=FAILURE or NOTIFY=FAILURE,DELAY");
    like Postfix we send failures and delay warnings, never success reports.  NEVER silences
    everything, otherwise only the listed kinds are sent.
    """
    if kind not in _KINDS:
        raise ValueError(f"not a DSN kind: {kind!r}")
    if notify_param is None:
        return kind in ("failure", "delay")
    words = {w.strip().upper() for w in notify_param.split(",")}
    if "NEVER" in words:
        return False
    return kind.upper() in words


def bounce_allowed(original_sender: str | None) -> bool:
    """False for the null reverse-path: RFC 5321 §4.5.5 and RFC 3461 §6.2 forbid sending a
    notification to <>, which is what stops two MTAs bouncing bounces at each other."""
    if original_sender is None:
        return False
    return original_sender.strip().strip("<>").strip() != ""


# --------------------------------------------------------------------------- decoding


def xtext_decode(value: str) -> str:
    """RFC 3461 §4: "+HH" stands for the octet HH; everything else is itself.

    Decoded octets are read as UTF-8 (lenient: invalid sequences become U+FFFD), since a
    decoded value ends up in a text field, not in a protocol command.
    """
    if "+" not in value:
        return value
    out = bytearray()
    pos = 0
    for m in _XTEXT_HEX.finditer(value):
        out += value[pos:m.start()].encode("utf-8")
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += value[pos:].encode("utf-8")
    return out.decode("utf-8", "replace")


def decode_orcpt(value: str) -> tuple[str, str]:
    """Split an ORCPT parameter (RFC 3461 §4.2) into (addr-type, decoded address).

    The "utf-8" type (RFC 6533 §3) uses ``\\x{HEX}`` escapes instead of xtext's "+HH"; every
    other type is xtext.  A value without ";" is taken as a bare rfc822 address.
    """
    addr_type, semi, addr = value.partition(";")
    if not semi:
        return "rfc822", value.strip()
    addr_type = addr_type.strip()
    if addr_type.lower() == "utf-8":
        return "utf-8", _EMBEDDED_UNICODE.sub(_unicode_escape, addr.strip())
    return addr_type, xtext_decode(addr.strip())


def _unicode_escape(m: re.Match[str]) -> str:
    point = int(m.group(1), 16)
    return chr(point) if point <= 0x10FFFF and not 0xD800 <= point <= 0xDFFF else "\ufffd"


# --------------------------------------------------------------------------- building


def build_dsn(
    *,
    reporting_mta: str,
    original_envelope_id: str | None,
    arrival_date: datetime,
    original_sender: str,
    recipients: Sequence[DsnRecipient],
    original_message: bytes,
    ret: str | None,
    kind: Kind,
    now: datetime,
    postmaster: str,
    message_id_domain: str,
    max_original_size: int = 1_000_000,
) -> bytes:
    """Build a complete DSN message (header and body, CRLF line endings).

    `original_envelope_id` is the decoded ENVID.  `ret` is the RET parameter: "FULL",
    "HDRS" or None.  RFC 3461 §4.3 applies RET only to failure reports (delay and success
    reports return headers only) and leaves the default to us: the full message, as Postfix
    does, unless it exceeds `max_original_size` octets, when only its header goes back.
    `postmaster` is the address in From: ("MAILER-DAEMON@host"): RFC 3464 §2 leaves it to
    the MTA, and a recognisable daemon address keeps auto-responders from answering.

    The caller sends the result with MAIL FROM:<> to `original_sender`; when the result
    contains 8-bit octets it needs BODY=8BITMIME, when its header or delivery-status
    carry UTF-8 it needs SMTPUTF8 (RFC 6531).
    """
    if kind not in _KINDS:
        raise ValueError(f"not a DSN kind: {kind!r}")
    if not bounce_allowed(original_sender):
        raise ValueError("no DSN may be sent to the null reverse-path (RFC 3461 §6.2)")
    if not recipients:
        raise ValueError("a DSN needs at least one recipient block (RFC 3464 §2.1)")
    if ret is not None and ret.upper() not in ("FULL", "HDRS"):
        raise ValueError(f"RET must be FULL or HDRS: {ret!r}")
    reporting_mta = _check_host(reporting_mta, "reporting_mta")
    message_id_domain = _check_host(message_id_domain, "message_id_domain")
    postmaster = _one_line(postmaster).strip().strip("<>")
    if "@" not in postmaster:
        raise ValueError(f"postmaster must be an address: {postmaster!r}")

    original = _crlf(original_message)
    header_end = _header_end(original)
    header_block = original[:header_end]
    global_addresses = any(_needs_utf8(r) for r in recipients)
    global_message = not header_block.isascii()

    # RFC 3461 §4.3: RET=HDRS and non-failure reports return the header only.
    full = kind == "failure" and (ret is None or ret.upper() == "FULL")
    returned: Literal["full", "headers", "none"]
    if not original:
        returned = "none"  # lost, or the caller chose not to return it
    elif full and len(original) <= max_original_size:
        returned = "full"
    elif len(header_block) <= max_original_size:
        returned = "headers"
    else:
        returned = "none"

    text = _human_text(kind, reporting_mta, arrival_date, now, recipients, returned,
                       too_big=bool(original) and full and returned != "full")
    status = _status_part(reporting_mta, original_envelope_id, arrival_date, recipients)

    parts: list[tuple[list[str], bytes]] = []
    text_bytes = text.encode("utf-8")
    parts.append((
        ["Content-Description: Notification",
         f"Content-Type: text/plain; charset={'us-ascii' if text.isascii() else 'utf-8'}"]
        + ([] if text.isascii() else ["Content-Transfer-Encoding: 8bit"]),
        text_bytes,
    ))
    status_type = "message/global-delivery-status" if global_addresses else "message/delivery-status"
    parts.append((
        ["Content-Description: Delivery report", f"Content-Type: {status_type}"]
        + ([] if status.isascii() else ["Content-Transfer-Encoding: 8bit"]),
        status,
    ))
    if returned == "full":
        body = original if original.endswith(b"\r\n") else original + b"\r\n"
        ctype = "message/global" if global_message else "message/rfc822"
        parts.append((
            ["Content-Description: Undelivered Message", f"Content-Type: {ctype}"]
            # RFC 2046 §5.2.1: message/* allows only 7bit, 8bit or binary labels.
            + ([] if body.isascii() else ["Content-Transfer-Encoding: 8bit"]),
            body,
        ))
    elif returned == "headers":
        description = "Undelivered Message Headers" if kind == "failure" else "Message Headers"
        # RFC 6522 §4 text/rfc822-headers; RFC 6533 §6.3 message/global-headers for UTF-8.
        ctype = "message/global-headers" if global_message else "text/rfc822-headers"
        parts.append((
            [f"Content-Description: {description}", f"Content-Type: {ctype}"]
            + ([] if header_block.isascii() else ["Content-Transfer-Encoding: 8bit"]),
            header_block,
        ))

    boundary = _boundary([body for _, body in parts])
    eight_bit = any(not body.isascii() for _, body in parts)

    header: list[bytes] = [
        _field("From", f"Mail Delivery System <{postmaster}>"),
        _field("To", _address_text(original_sender)),
        _field("Subject", _SUBJECTS[kind]),
        _field("Date", format_datetime(now)),
        _field("Message-ID", f"<{secrets.token_hex(16)}@{message_id_domain}>"),
        # RFC 3834 §5: an automatic response to a message says so, so that other automata
        # (vacation responders, list software) never answer it.
        _field("Auto-Submitted", "auto-replied"),
    ]
    original_id = _original_message_id(header_block)
    if original_id is not None:
        # RFC 3834 §3.1.5: a response refers to the message it answers.
        header.append(_field("In-Reply-To", original_id))
        header.append(_field("References", original_id))
    header.append(_field("MIME-Version", "1.0"))
    header.append(_field(
        "Content-Type",
        f'multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ))
    if eight_bit:
        # RFC 2045 §6.4: a multipart entity is labelled with the widest encoding inside it.
        header.append(_field("Content-Transfer-Encoding", "8bit"))

    out = bytearray(b"".join(header))
    out += b"\r\nThis is a MIME-encapsulated message.\r\n"
    delimiter = f"\r\n--{boundary}".encode("ascii")
    for part_header, body in parts:
        out += delimiter + b"\r\n"
        out += "".join(f"{line}\r\n" for line in part_header).encode("ascii")
        out += b"\r\n"
        out += body
    out += delimiter + b"--\r\n"
    return bytes(out)


def _status_part(reporting_mta: str, envid: str | None, arrival: datetime,
                 recipients: Sequence[DsnRecipient]) -> bytes:
    """RFC 3464 §2.1: per-message fields, then a blank line before each recipient block."""
    groups: list[list[bytes]] = []
    per_message = [_field("Reporting-MTA", f"dns; {reporting_mta}")]
    envid = _one_line(envid or "")
    if envid:
        per_message.append(_field("Original-Envelope-Id", envid))
    per_message.append(_field("Arrival-Date", format_datetime(arrival)))
    groups.append(per_message)
    for rcpt in recipients:
        block: list[bytes] = []
        if rcpt.original_recipient:
            addr_type, addr = _split_typed(rcpt.original_recipient)
            block.append(_field("Original-Recipient", f"{addr_type}; {addr}"))
        final_type = "rfc822" if rcpt.final_recipient.isascii() else "utf-8"  # RFC 6533 §3
        block.append(_field("Final-Recipient", f"{final_type}; {_address_text(rcpt.final_recipient)}"))
        block.append(_field("Action", rcpt.action))
        block.append(_field("Status", rcpt.status))
        if rcpt.remote_mta:
            block.append(_field("Remote-MTA", f"dns; {_one_line(rcpt.remote_mta)}"))
        if rcpt.diagnostic:
            diag = _one_line(rcpt.diagnostic)
            if ";" not in diag.split(" ", 1)[0]:
                diag = f"smtp; {diag}"  # RFC 3464 §2.3.6 requires a diagnostic-type
            block.append(_field("Diagnostic-Code", diag))
        if rcpt.last_attempt is not None:
            block.append(_field("Last-Attempt-Date", format_datetime(rcpt.last_attempt)))
        if rcpt.will_retry_until is not None and rcpt.action == "delayed":
            # RFC 3464 §2.3.9: only meaningful in a "delayed" report.
            block.append(_field("Will-Retry-Until", format_datetime(rcpt.will_retry_until)))
        groups.append(block)
    return b"\r\n".join(b"".join(group) for group in groups)


def _human_text(kind: Kind, host: str, arrival: datetime, now: datetime,
                recipients: Sequence[DsnRecipient], returned: str, *, too_big: bool) -> str:
    """The part a person reads (RFC 6522 §3: "human-readable explanation")."""
    paras: list[str] = [f"This is the mail system at host {host}."]
    if kind == "failure":
        attached = {
            "full": "It's attached below.",
            "headers": ("The message was too large to return in full; its headers are "
                        "attached below." if too_big else "Its headers are attached below."),
            "none": "It was too large to return." if too_big else "It cannot be returned.",
        }[returned]
        paras.append("I'm sorry to have to inform you that your message could not be "
                     f"delivered to one or more recipients. {attached}")
        paras.append("For further assistance, please send mail to postmaster. If you do so, "
                     "please include this problem report. You can delete your own text "
                     "from the attached returned message.")
    elif kind == "delay":
        paras.append("#" * 68 + "\n"
                     "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
                     + "#" * 68)
        until = [r.will_retry_until for r in recipients if r.will_retry_until is not None]
        sentence = (f"Your message could not be delivered for {_duration(now - arrival)}. "
                    if now > arrival else "Your message could not be delivered yet. ")
        if until:
            sentence += (f"The mail system will keep trying until "
                         f"{format_datetime(max(until))}.")
        else:
            sentence += "The mail system will keep trying."
        paras.append(sentence)
        paras.append("For further assistance, please contact your postmaster.")
    else:
        paras.append("Your message was successfully delivered to the destination(s) listed "
                     "below. If the message was delivered to a mailbox you will receive no "
                     "further notifications. Otherwise you may still receive notifications "
                     "of mail delivery errors from other systems.")
    paras.append(" " * 19 + "The mail system")
    lines: list[str] = []
    for para in paras:
        if "\n" in para or para.startswith(" "):
            lines.append(para)
        else:
            lines.append(textwrap.fill(para, _WRAP))
    for rcpt in recipients:
        lines.append(textwrap.fill(_recipient_sentence(rcpt), _WRAP, subsequent_indent="    ",
                                   break_long_words=False, break_on_hyphens=False))
    return "\n\n".join(lines).replace("\n", "\r\n") + "\r\n"


def _recipient_sentence(rcpt: DsnRecipient) -> str:
    who = f"<{_address_text(rcpt.final_recipient)}>"
    if rcpt.original_recipient:
        _, orig = _split_typed(rcpt.original_recipient)
        if orig.lower() != rcpt.final_recipient.lower():
            who += f" (expanded from <{orig}>)"
    detail = ""
    if rcpt.diagnostic:
        detail = _one_line(rcpt.diagnostic)
        head, semi, rest = detail.partition(";")
        if semi and " " not in head.strip():
            detail = rest.strip()  # "smtp; 550 ..." → "550 ..." for a person
    if rcpt.remote_mta and detail:
        detail = f"host {_one_line(rcpt.remote_mta)} said: {detail}"
    elif rcpt.remote_mta:
        detail = f"via host {_one_line(rcpt.remote_mta)}"
    if not detail:
        detail = {
            "failed": "delivery failed",
            "delayed": "delivery temporarily deferred",
            "delivered": "delivered to mailbox",
            "relayed": "relayed to a system that does not send notifications",
            "expanded": "delivered to a list or alias",
        }[rcpt.action]
    elif rcpt.action == "delivered":
        detail = f"delivered ({detail})"
    return f"{who}: {detail}"


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{max(1, round(seconds / 60))} minutes"


# --------------------------------------------------------------------------- helpers


def _field(name: str, value: str) -> bytes:
    """One header field, folded at spaces to 78 columns where possible (RFC 5322 §2.2.3).

    Each fold reuses an existing space as the continuation's leading WSP, so unfolding
    (removing the CRLFs) gives back exactly `value`.
    """
    line = f"{name}: {value}"
    out: list[str] = []
    while len(line) > _MAX_LINE:
        cut = _fold_point(line, len(name) + 2)
        if cut < 0:
            break
        out.append(line[:cut])
        line = line[cut:]
    out.append(line)
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


def _fold_point(line: str, start: int) -> int:
    """The space to fold before: the last one within 78 columns, else the first one after.

    A fold must leave non-blank text on both sides (RFC 5322 §3.2.2: no line of only WSP).
    """
    candidates = [i for i in range(max(start, 1), len(line))
                  if line[i] == " " and line[i - 1] != " " and line[i + 1:].strip()]
    if not candidates:
        return -1
    within = [i for i in candidates if i <= _MAX_LINE]
    return within[-1] if within else candidates[0]


def _one_line(text: str) -> str:
    """Peer-supplied text made safe for one header field: controls become spaces (no CRLF
    injection), runs of space collapse, length is capped."""
    cleaned = "".join(" " if ch < " " or ch == "\x7f" else ch for ch in text)
    return " ".join(cleaned.split())[:_MAX_TEXT]


def _address_text(addr: str) -> str:
    """An address for a field or sentence: controls dropped (no CRLF injection), no angle
    brackets; spaces are kept because a quoted local part may contain them."""
    return "".join(ch for ch in addr if ch >= " " and ch != "\x7f").strip().strip("<>")[:_MAX_TEXT]


def _split_typed(value: str) -> tuple[str, str]:
    """"addr-type;address" → (type, address); a bare address is rfc822 (RFC 3464 §2.3.1)."""
    addr_type, semi, addr = value.partition(";")
    if not semi or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", addr_type.strip()):
        addr_type, addr = "rfc822", value
    addr = _address_text(addr)
    addr_type = addr_type.strip().lower()
    if not addr.isascii() and addr_type == "rfc822":
        addr_type = "utf-8"  # RFC 6533 §3: rfc822 cannot carry a non-ASCII address
    return addr_type, addr


def _needs_utf8(rcpt: DsnRecipient) -> bool:
    return not rcpt.final_recipient.isascii() or not (rcpt.original_recipient or "").isascii()


def _check_host(name: str, what: str) -> str:
    name = name.strip().rstrip(".")
    if not _DOMAIN.match(name) and not re.fullmatch(r"\[(?:IPv6:)?[0-9A-Fa-f:.]+\]", name):
        raise ValueError(f"{what} is not a host name: {name!r}")
    return name


def _crlf(data: bytes) -> bytes:
    """Every line ending becomes CRLF (RFC 5322 §2.1); locally submitted mail often has LF."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def _header_end(message: bytes) -> int:
    """Offset just past the header block's last CRLF (the empty line excluded)."""
    if message.startswith(b"\r\n"):
        return 0
    end = message.find(b"\r\n\r\n")
    return len(message) if end < 0 else end + 2


def _original_message_id(header_block: bytes) -> str | None:
    unfolded = re.sub(rb"\r\n(?=[ \t])", b"", header_block)
    m = _MSG_ID.search(unfolded)
    return m.group(1).decode("ascii") if m else None


def _boundary(bodies: Sequence[bytes]) -> str:
    """A random boundary that occurs in no part (RFC 2046 §5.1.1 MUST)."""
    while True:
        boundary = f"=_kittiwake_{secrets.token_hex(12)}"
        marker = f"--{boundary}".encode("ascii")
        if not any(marker in body for body in bodies):
            return boundary
