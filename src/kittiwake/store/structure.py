"""Bridge to the MIME structure parser, whose JSON result is cached in the index.

IMAP answers ENVELOPE/BODYSTRUCTURE from this cache instead of re-parsing files.  The cache
is an optimisation, never a reason to refuse mail: if the parser is missing or fails on a
malformed message the column stays NULL and the reader parses on demand.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

StructureParser = Callable[[bytes], object]


def default_parser() -> StructureParser | None:
    """`kittiwake.message.structure.parse_structure`, or None while it is not available."""
    try:
        from kittiwake.message.structure import parse_structure
    except ImportError:
        return None
    parser: StructureParser = parse_structure
    return parser


def structure_json(parser: StructureParser | None, raw: bytes) -> str | None:
    if parser is None:
        return None
    try:
        return json.dumps(parser(raw), separators=(",", ":"))
    except Exception:
        # A parser bug must not turn into lost or refused mail; log it once per message,
        # without the content (the design forbids logging message bodies).
        log.exception("structure parse failed size=%d; caching nothing", len(raw))
        return None
