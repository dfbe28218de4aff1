"""Values of outbound delivery: what to send, how, and what became of each recipient."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kittiwake.smtp.replies import Reply

TLS_POLICIES = ("opportunistic", "required", "none")


@dataclass(frozen=True, slots=True)
class Recipient:
    """One RCPT TO. `notify` is RFC 3461 NOTIFY ("NEVER" or e.g. "SUCCESS,FAILURE");
    `orcpt` is "addr-type;address" with the address *decoded* (not xtext), e.g.
    "rfc822;user+tag@example.org"; `kittiwake.smtp.client.xtext_decode` decodes the raw
    parameter a server received."""

    address: str
    notify: str | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message for recipients in one domain (or any domains when using a smarthost).

    `content` is the whole message (header and body, CRLF line endings) as bytes, or a Path
    to a file holding it: a file is streamed in 64 KiB chunks and never held in memory whole,
    unless it must be converted to 7 bits for a server without 8BITMIME. `sender` "" is the
    null reverse-path. `envid` is the decoded RFC 3461 ENVID; `ret` is "FULL" or "HDRS".
    `smtputf8` says the message needs SMTPUTF8 (RFC 6531), `eight_bit` that it was received
    as BODY=8BITMIME (the content is also checked, so a wrong flag does no harm).
    """

    sender: str
    recipients: tuple[Recipient, ...]
    content: bytes | Path
    envid: str | None = None
    ret: str | None = None
    smtputf8: bool = False
    eight_bit: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What became of one recipient (DESIGN.md: outcomes are values).

    `permanent` is authoritative (bounce now vs. retry later); `reply` is the server's reply,
    or one synthesized with an RFC 3463 code when no server said anything (DNS failure,
    connection refused …). `host` is the MX host name that gave the reply, `address` its IP.
    `relayed_without_dsn` is set for a delivered recipient whose NOTIFY asked for SUCCESS
    when the server did not offer DSN: RFC 3461 §5.2.2.1 wants a "relayed" DSN then.
    """

    recipient: str
    reply: Reply
    permanent: bool
    host: str | None
    delivered: bool
    address: str | None = None
    tls: bool = False
    relayed_without_dsn: bool = False


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How to deliver. Timeouts are the RFC 5321 §4.5.3.2 minimums, in seconds.

    `tls`: "opportunistic" uses STARTTLS when offered, without verifying the certificate, and
    retries in plain text when the handshake fails (like Postfix's "may"); "required" fails
    the host (transiently) without TLS, and verifies the certificate against the MX host name
    when `tls_verify` (CAs from `ca_file`, or the system's); "none" never starts TLS.
    `smarthost` ("host", "host:port", "[1.2.3.4]:587") replaces MX routing; credentials in
    `smarthost_auth` are only ever sent over TLS.
    """

    helo_name: str
    port: int = 25
    connect_timeout: float = 30.0
    greeting_timeout: float = 300.0  # §4.5.3.2.1 initial 220
    command_timeout: float = 300.0  # EHLO, STARTTLS, AUTH, RSET, QUIT
    mail_timeout: float = 300.0  # §4.5.3.2.2
    rcpt_timeout: float = 300.0  # §4.5.3.2.3
    data_init_timeout: float = 120.0  # §4.5.3.2.4 (reply to DATA)
    data_block_timeout: float = 180.0  # §4.5.3.2.5 (each write of content)
    data_final_timeout: float = 600.0  # §4.5.3.2.6 (reply to the final ".")
    tls_handshake_timeout: float = 60.0
    quit_timeout: float = 10.0
    dns_timeout: float = 60.0  # a guard around each Resolver call, whatever its own limits
    tls: str = "opportunistic"
    tls_verify: bool = False
    ca_file: str | None = None
    smarthost: str | None = None
    smarthost_auth: tuple[str, str] | None = field(default=None, repr=False)
    max_message_size: int = 0  # a local limit (0: none); larger messages bounce unsent
    source_address: str | None = None  # local address to connect from (Postfix smtp_bind_address)
    max_recipients: int = 100  # per transaction: RFC 5321 §4.5.3.1.8 says servers take 100
    max_addresses: int = 10  # IP addresses tried per delivery: bounds the MX walk
    reuse_limit: int = 100  # messages over one connection before it is closed
    reuse_time_limit: float = 300.0  # seconds a connection is kept for reuse

    def __post_init__(self) -> None:
        if self.tls not in TLS_POLICIES:
            raise ValueError(f"tls must be one of {', '.join(TLS_POLICIES)}")
        if self.tls_verify and self.tls != "required":
            # Verifying while willing to fall back to plain text would protect nothing.
            raise ValueError('tls_verify needs tls = "required"')
        if not 0 < self.port < 65536:
            raise ValueError("bad port")
        if self.max_recipients < 1 or self.max_addresses < 1:
            raise ValueError("max_recipients and max_addresses must be positive")
