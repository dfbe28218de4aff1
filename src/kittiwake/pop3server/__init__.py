"""POP3 listeners (RFC 1939 on 110 with STLS, RFC 8314 implicit TLS on 995): asyncio
sessions around the :mod:`kittiwake.pop3` core, serving each account's INBOX from the store."""

from kittiwake.pop3server.server import ListenerSpec, Pop3Server, Pop3ServerSettings

__all__ = ["ListenerSpec", "Pop3Server", "Pop3ServerSettings"]
