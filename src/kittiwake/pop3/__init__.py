"""POP3 protocol core (sans-IO): the server side of RFC 1939 with CAPA (RFC 2449), STLS
(RFC 2595) and SASL AUTH (RFC 5034), its events and the reply catalogue."""

from kittiwake.pop3.events import MaildropEntry
from kittiwake.pop3.server import ServerConnection, ServerSettings, State

__all__ = ["MaildropEntry", "ServerConnection", "ServerSettings", "State"]
