"""SMTP protocol cores (sans-IO): the server side (RFC 5321 and its ESMTP extensions),
its events and the reply catalogue."""

from kittiwake.smtp.server import ServerConnection, ServerSettings

__all__ = ["ServerConnection", "ServerSettings"]
