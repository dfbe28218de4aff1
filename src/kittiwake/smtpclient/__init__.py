"""Outbound SMTP (DESIGN.md L2): MX routing and connections to other mail servers.

`deliver(message, settings, resolver)` sends one message; a `Destination` sends many to one
domain over a kept connection. Outcomes are `DeliveryResult` values, one per recipient.
"""

from kittiwake.smtpclient.delivery import NULL_MX, Destination, deliver, parse_smarthost
from kittiwake.smtpclient.types import (
    ClientSettings,
    DeliveryResult,
    OutboundMessage,
    Recipient,
)

__all__ = [
    "NULL_MX",
    "ClientSettings",
    "DeliveryResult",
    "Destination",
    "OutboundMessage",
    "Recipient",
    "deliver",
    "parse_smarthost",
]
