"""HEADER.FIELDS cut from a cached header block: the fields' lines exactly as sent, then
the empty line (RFC 9051 §6.4.5), whatever the line endings, folding or truncation."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from kittiwake.store.imapcache import header_fields

_LINES = st.sampled_from([
    b"From: a@example.net\r\n", b"from:b@example.net\n", b"Subject: hi\r\n",
    b"SUBJECT : folded\r\n", b" continued\r\n", b"\tmore\n", b"Date: Mon, 1 Jan 2024\r\n",
    b"X-From: not me\r\n", b"Received: by x\r\n", b"Fromage: no\r\n", b"\r\n", b"\n",
    b"Subject: no line end", b"garbage without colon\r\n", b"\xff\xfe: odd\r\n",
])


def reference(header: bytes, names: tuple[str, ...]) -> bytes:
    """Field by field, as the rule reads: a wanted name at a line start, its folded
    lines, and the line ending it had."""
    alternatives = b"|".join(re.escape(n.encode()) for n in names)
    rx = re.compile(rb"\n(?:" + alternatives + rb")[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*",
                    re.IGNORECASE)
    text = b"\n" + header
    kept = []
    for m in rx.finditer(text):
        stop = m.end() + 1 if m.end() < len(text) else m.end()
        kept.append(text[m.start() + 1 : stop])
    return b"".join(kept) + b"\r\n"


def test_fields_keep_their_order_folding_and_line_endings() -> None:
    header = (b"Received: x\r\nFrom: a@example.net\r\nX-Subject: no\r\nSubject: one\r\n"
              b" two\r\nDate: d\n\r\n")
    assert header_fields(header, ("subject", "FROM"), False, bounded=True) == (
        b"From: a@example.net\r\nSubject: one\r\n two\r\n\r\n")
    assert header_fields(header, ("cc",), False, bounded=True) == b"\r\n"
    # A header cut short: its last field has no line ending, and gets none added.
    assert header_fields(b"Subject: cut", ("subject",), False, bounded=True) == (
        b"Subject: cut\r\n")


@settings(max_examples=400)
@given(st.lists(_LINES, max_size=30).map(b"".join),
       st.sampled_from([("from",), ("FROM", "SUBJECT", "DATE"), ("subject", "x-from")]))
def test_same_octets_as_reading_field_by_field(header: bytes, names: tuple[str, ...]) -> None:
    assert header_fields(header, names, False, bounded=True) == reference(header, names)
