"""POP3 status replies as values (RFC 1939 §3), with RFC 2449 §8 extended response codes.

Every reply the core or a session sends is defined once here, so wording and codes stay
consistent and no session formats reply text ad hoc. Response codes in use:

* ``IN-USE`` (RFC 2449 §8.1.1): the maildrop is locked by another POP3 session.
* ``LOGIN-DELAY`` (RFC 2449 §8.1.2): logins refused for a while (our failed-login throttle).
* ``SYS/TEMP`` (RFC 3206 §4): a temporary failure on our side; the client should retry.
* ``AUTH`` (RFC 3206 §5): the credentials (or the way they were sent) are the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

#: RFC 2449 §4: a response line, CRLF included, is at most 512 octets.
MAX_RESPONSE_LINE = 512


@dataclass(frozen=True, slots=True)
class Reply:
    """One status line: ``+OK text`` or ``-ERR [CODE] text``."""

    ok: bool
    text: str = ""
    code: str = ""  # RFC 2449 §8 response code without brackets, e.g. "SYS/TEMP"

    def to_bytes(self) -> bytes:
        parts = ["+OK" if self.ok else "-ERR"]
        if self.code and not self.ok:
            parts.append(f"[{self.code}]")
        if self.text:
            # A CR or LF inside the text would end the line early and let the rest be read
            # as another response; replace them rather than trusting every caller.
            parts.append(self.text.replace("\r", " ").replace("\n", " "))
        line = " ".join(parts).encode("utf-8", "replace")
        return line[: MAX_RESPONSE_LINE - 2] + b"\r\n"

    def with_text(self, text: str) -> Reply:
        return Reply(self.ok, text, self.code)


# --- positive ------------------------------------------------------------------------------
OK = Reply(True)
BYE = Reply(True, "Kittiwake POP3 server signing off")
USER_OK = Reply(True, "Send PASS")  # RFC 1939 §7: never say whether the user exists
DELETED = Reply(True, "Message deleted")
NOOP_OK = Reply(True)
CAPA_FOLLOWS = Reply(True, "Capability list follows")
MECHANISMS_FOLLOW = Reply(True, "SASL mechanisms follow")
UIDL_FOLLOWS = Reply(True, "Unique-id listing follows")
TOP_FOLLOWS = Reply(True, "Top of message follows")
BEGIN_TLS = Reply(True, "Begin TLS negotiation")

# --- negative: the peer broke the protocol --------------------------------------------------
UNKNOWN_COMMAND = Reply(False, "Unknown command")
WRONG_STATE = Reply(False, "Command not valid in this state")
SYNTAX_ERROR = Reply(False, "Syntax error in arguments")
LINE_TOO_LONG = Reply(False, "Line too long")
TOO_MANY_ERRORS = Reply(False, "Too many errors, closing connection")
NEED_USER = Reply(False, "Send USER first")
BAD_BASE64 = Reply(False, "Invalid base64 data")

# --- negative: the request cannot be done -------------------------------------------------
NO_SUCH_MESSAGE = Reply(False, "No such message")
ALREADY_DELETED = Reply(False, "Message already deleted")
MESSAGE_GONE = Reply(False, "Message was removed by another session")
APOP_UNSUPPORTED = Reply(False, "APOP not supported; use AUTH")
TLS_NOT_AVAILABLE = Reply(False, "TLS not available")
ALREADY_TLS = Reply(False, "TLS already active")
UNKNOWN_MECHANISM = Reply(False, "Unsupported authentication mechanism")
AUTH_CANCELLED = Reply(False, "Authentication cancelled")
PLAINTEXT_DISALLOWED = Reply(
    False, "Plaintext authentication disallowed without TLS; use STLS", "AUTH"
)

# --- negative: authentication and the maildrop ------------------------------------------------
AUTH_FAILED = Reply(False, "Authentication failed", "AUTH")
TOO_MANY_AUTH_FAILURES = Reply(False, "Too many failed logins, closing connection", "AUTH")
THROTTLED = Reply(False, "Too many failed logins; try again later", "LOGIN-DELAY")
IN_USE = Reply(False, "Maildrop is locked by another POP3 session", "IN-USE")

# --- negative: our side --------------------------------------------------------------------
TEMP_FAILURE = Reply(False, "Temporary server failure, try again later", "SYS/TEMP")
UPDATE_FAILED = Reply(False, "Some deleted messages not removed", "SYS/TEMP")
TOO_MANY_CONNECTIONS = Reply(False, "Too many connections, try again later", "SYS/TEMP")
SHUTTING_DOWN = Reply(False, "Server shutting down", "SYS/TEMP")
# RFC 1939 §3: the autologout closes without entering the UPDATE state.
AUTOLOGOUT = Reply(False, "Autologout; idle for too long")
