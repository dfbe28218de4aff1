"""SMTP replies as values (RFC 5321 §4.2) with RFC 3463 enhanced status codes (RFC 2034).

Every reply the server or the Backend sends is defined once here, so wording and codes stay
consistent and no session formats reply text ad hoc.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str  # "2.0.0"; "" for replies that carry none (greeting, 220 to STARTTLS has one)
    text: str | tuple[str, ...]

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def to_bytes(self, enhanced: bool = True) -> bytes:
        # RFC 5321 §4.2.1: every line but the last has a hyphen after the code.
        lines = self.lines or ("",)
        out = []
        last = len(lines) - 1
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            if enhanced and self.enhanced:
                out.append(f"{self.code}{sep}{self.enhanced} {line}\r\n")
            else:
                out.append(f"{self.code}{sep}{line}\r\n")
        return "".join(out).encode("utf-8", "replace")

    def with_text(self, text: str | tuple[str, ...]) -> Reply:
        return Reply(self.code, self.enhanced, text)


class ReplyError(Exception):
    """Raised by policy code (the Backend) to refuse with a specific reply."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"{reply.code} {reply.enhanced} {reply.lines[0]}")
        self.reply = reply


# --- positive ------------------------------------------------------------------------------
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
MESSAGE_ACCEPTED = Reply(250, "2.0.0", "Message accepted for delivery")
RESET_OK = Reply(250, "2.0.0", "Reset OK")
NOOP_OK = Reply(250, "2.0.0", "OK")
BYE = Reply(221, "2.0.0", "Bye")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(214, "2.0.0", ("Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
                            "See RFC 5321"))
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")

# --- transient -----------------------------------------------------------------------------
SERVICE_SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, closing transmission channel")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_CONNECTIONS_FROM_IP = Reply(421, "4.7.0", "Too many connections from your address, try again later")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
OVER_QUOTA = Reply(452, "4.2.2", "Mailbox full")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")
AUTH_THROTTLED = Reply(454, "4.7.0", "Too many failed authentications, try again later")
AUTH_TEMP_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")

# --- permanent: protocol -------------------------------------------------------------------
UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
TEXT_LINE_TOO_LONG = Reply(500, "5.5.6", "Message has a line that is too long")
SYNTAX_ERROR = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_ADDRESS_SYNTAX = Reply(501, "5.1.3", "Bad address syntax")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_EHLO = Reply(501, "5.5.4", "EHLO/HELO requires a domain or address literal")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NEED_EHLO = Reply(503, "5.5.1", "Send EHLO/HELO first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command first")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command first")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
BDAT_DATA_MIXED = Reply(503, "5.5.1", "DATA and BDAT cannot be mixed in one transaction")
PARAM_NOT_RECOGNIZED = Reply(555, "5.5.4", "MAIL FROM/RCPT TO parameter not recognized or not implemented")
UNKNOWN_AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode AUTH response (invalid base64)")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
MUST_STARTTLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
EARLY_TALKER = Reply(554, "5.5.0", "Protocol violation: client sent data before the greeting")

# --- permanent: policy / content -----------------------------------------------------------
NO_SUCH_USER = Reply(550, "5.1.1", "No such user here")
RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied")
SENDER_NOT_OWNED = Reply(550, "5.7.1", "Sender address not owned by authenticated user")
FROM_NOT_OWNED = Reply(550, "5.7.1", "From: header address not owned by authenticated user")
FROM_MISSING = Reply(550, "5.6.0", "Message has no From: header")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
BARE_LINE_ENDING = Reply(554, "5.6.0", "Message contains a bare CR or LF; lines must end with CRLF")
EIGHTBIT_NOT_DECLARED = Reply(554, "5.6.7", "Non-ASCII address requires SMTPUTF8")
SMTPUTF8_REQUIRED = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
TRANSACTION_FAILED = Reply(554, "5.0.0", "Transaction failed")
