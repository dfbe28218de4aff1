"""The CAPABILITY list, which depends on the connection's state (RFC 9051 §6.1.1, §7.2.2).

Before login a client learns how it may authenticate: STARTTLS on a plaintext listener, and
LOGINDISABLED there until TLS is up (RFC 9051 §6.2.3; RFC 8314 §5: passwords never travel
in the clear); AUTH=PLAIN only under TLS, AUTH=SCRAM-SHA-256 always, since it never reveals
the password (`kittiwake.sasl.available`).  After login it learns the extensions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kittiwake import sasl
from kittiwake.imap.connection import ServerConnection

if TYPE_CHECKING:
    from kittiwake.imapserver.server import ImapServer

#: What an authenticated client may use, beyond the base protocol.
EXTENSIONS = (
    "IDLE", "NAMESPACE", "ID", "ENABLE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN",
    "SPECIAL-USE", "CREATE-SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "ESEARCH",
    "SEARCHRES", "CONDSTORE", "QRESYNC", "STATUS=SIZE", "BINARY", "UTF8=ACCEPT",
    "QUOTA", "QUOTA=RES-STORAGE",
)


def mechanisms(tls_active: bool) -> tuple[str, ...]:
    """SASL mechanisms offered; LOGIN is for SMTP's old clients, IMAP has its own LOGIN."""
    return tuple(m for m in sasl.available(tls_active, channel_binding_available=False)
                 if m != sasl.LOGIN)


def for_session(server: ImapServer, conn: ServerConnection, *, authenticated: bool,
                starttls: bool) -> list[str]:
    """`starttls`: this listener offers STARTTLS (plaintext, and a certificate exists)."""
    core = server.settings.core
    caps = ["IMAP4rev2", "IMAP4rev1"]
    caps.append("LITERAL+" if core.literal_plus else "LITERAL-")
    if not authenticated:
        if not conn.tls_active and starttls:
            caps.append("STARTTLS")
        if not conn.tls_active:
            caps.append("LOGINDISABLED")
        caps += [f"AUTH={m}" for m in mechanisms(conn.tls_active)]
        if core.sasl_ir:
            caps.append("SASL-IR")
        caps += ["ID", "ENABLE", "IDLE"]
        return caps
    caps += EXTENSIONS
    caps.append(f"APPENDLIMIT={core.max_append_size}")
    if server.settings.compress and not conn.compress_active:
        caps.append("COMPRESS=DEFLATE")
    return caps
