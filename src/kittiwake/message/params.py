"""MIME header values with parameters: Content-Type, Content-Disposition (RFC 2045 §5.1,
RFC 2183), with RFC 2231 continuations merged.

Parameters are kept the way IMAP BODYSTRUCTURE wants to hand them on: in order, names
and values as sent, and RFC 2231 pieces ``name*0*``, ``name*1*`` ... joined into one
parameter.  A joined extended value keeps its ``charset'language'%XX`` form under the
name ``name*`` (as Dovecot does), because an IMAP4rev1 client can only be given ASCII
and knows how to decode RFC 2231 itself; :func:`get_param` decodes it for our own
use (boundaries, file names in search).

Parsing is tolerant of what real mail contains: unquoted values with spaces or "=" in
them (``boundary=----=_Part_1``), comments, missing values, stray semicolons.
"""

from __future__ import annotations

import re

from kittiwake.message.headers import decode_charset

__all__ = ["decode_rfc2231", "get_param", "parse_header_value", "parse_list", "strip_comments"]

Params = list[list[str]]

# Splits a value at top-level semicolons: quoted strings and comments are kept whole.
_SEGMENT_RE = re.compile(r'"(?:[^"\\]|\\.)*"?|\((?:[^()\\]|\\.)*\)?|[^;"(]+|;', re.DOTALL)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_COMMENT_RE = re.compile(r"\((?:[^()\\]|\\.)*\)?", re.DOTALL)
# RFC 2231 §3/§4: name*N (continuation), trailing "*" marks a charset/percent value.
_SECTION_RE = re.compile(r"(.+?)\*(\d{1,3})(\*?)")
_PERCENT_RE = re.compile(rb"%([0-9A-Fa-f]{2})")
# RFC 2231 §7 attribute-char: what may appear unencoded in an extended value.
_ATTRIBUTE_CHAR_RE = re.compile(r"[A-Za-z0-9!#$&+.^_`|~-]")


def strip_comments(text: str) -> str:
    """Remove RFC 5322 comments outside quoted strings (one nesting level) and trim."""
    if "(" not in text:
        return text.strip()
    out = []
    for m in _SEGMENT_RE.finditer(text):
        token = m.group(0)
        if not token.startswith("("):
            out.append(token)
    return "".join(out).strip()


def _unquote(text: str) -> str:
    """Value of a quoted-string (RFC 5322 §3.2.4): drop the quotes, undo quoted-pairs."""
    body = text[1:-1] if len(text) >= 2 and text.endswith('"') else text[1:]
    return _QUOTED_PAIR_RE.sub(r"\1", body) if "\\" in body else body


def _segments(value: str) -> list[str]:
    if '"' not in value and "(" not in value:
        return value.split(";")
    segments: list[str] = []
    current: list[str] = []
    for m in _SEGMENT_RE.finditer(value):
        token = m.group(0)
        if token == ";":
            segments.append("".join(current))
            current = []
        else:
            current.append(token)
    segments.append("".join(current))
    return segments


def _param_value(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith('"'):
        m = _SEGMENT_RE.match(raw)
        return _unquote(m.group(0)) if m else raw[1:]
    # Unquoted: RFC 2045 says token, but real mail puts spaces and "=" in here; take the
    # whole segment minus comments.
    return strip_comments(raw)


def _percent_encode(text: str) -> str:
    return "".join(
        ch if _ATTRIBUTE_CHAR_RE.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode())
        for ch in text
    )


def _merge_rfc2231(raw_params: list[tuple[str, str]]) -> Params:
    """Join RFC 2231 §3 continuations; leave every other parameter where it stands."""
    if not any("*" in name for name, _ in raw_params):
        return [[name, value] for name, value in raw_params]
    out: Params = []
    # base name (lower) -> (index into out, {section: (value, extended)})
    groups: dict[str, tuple[int, dict[int, tuple[str, bool]]]] = {}
    for name, value in raw_params:
        m = _SECTION_RE.fullmatch(name)
        if m is None:
            out.append([name, value])
            continue
        key = m.group(1).lower()
        if key not in groups:
            out.append([m.group(1), ""])
            groups[key] = (len(out) - 1, {})
        sections = groups[key][1]
        sections.setdefault(int(m.group(2)), (value, m.group(3) == "*"))
    for index, sections in groups.values():
        ordered = [sections[n] for n in sorted(sections)]
        extended = bool(ordered) and ordered[0][1]
        if extended:
            value = "".join(v if ext else _percent_encode(v) for v, ext in ordered)
            out[index] = [out[index][0] + "*", value]
        else:
            out[index] = [out[index][0], "".join(v for v, _ in ordered)]
    return out


# Fast path for the everyday shape ``type/sub; a=b; c="d"``: no comments, escapes,
# RFC 2231 sections or odd unquoted values.  Anything else takes the general parser,
# which agrees on these shapes (a test checks).
_SIMPLE_MAIN_RE = re.compile(r'\s*([^\s;"()\\]*)\s*')
_SIMPLE_PARAM_RE = re.compile(r';\s*([^\s;="()\\*]+)\s*=\s*(?:"([^"\\]*)"|([^\s;"()\\]*))\s*')
_SIMPLE_END_RE = re.compile(r"(?:;\s*)*")


def _simple_header_value(value: str) -> tuple[str, Params] | None:
    m = _SIMPLE_MAIN_RE.match(value)
    assert m is not None  # every part of it may match empty
    main = m.group(1)
    params: Params = []
    pos = m.end()
    end = len(value)
    while pos < end:
        m = _SIMPLE_PARAM_RE.match(value, pos)
        if m is None:
            tail = _SIMPLE_END_RE.match(value, pos)
            if tail is not None and tail.end() == end:
                break
            return None
        quoted = m.group(2)
        params.append([m.group(1), quoted if quoted is not None else m.group(3)])
        pos = m.end()
    return main, params


def parse_header_value(value: str) -> tuple[str, Params]:
    """Split ``main-value *(";" attribute "=" value)`` into the main value and params.

    The main value is comment-stripped and trimmed (``text/plain``, ``attachment``).
    Parameters without "=" are dropped; names are trimmed but keep their case.
    """
    simple = _simple_header_value(value)
    if simple is not None:
        return simple
    return _parse_header_value(value)


def _parse_header_value(value: str) -> tuple[str, Params]:
    """The general parser behind :func:`parse_header_value`."""
    segments = _segments(value)
    main = strip_comments(segments[0])
    raw_params: list[tuple[str, str]] = []
    for segment in segments[1:]:
        name, eq, rest = segment.partition("=")
        name = strip_comments(name)
        if not eq or not name:
            continue
        raw_params.append((name, _param_value(rest)))
    return main, _merge_rfc2231(raw_params)


def decode_rfc2231(value: str) -> str:
    """Decode an RFC 2231 §4 extended value ``charset'language'percent-encoded``."""
    parts = value.split("'", 2)
    if len(parts) != 3:
        charset, text = "us-ascii", value
    else:
        charset, _, text = parts
    data = _PERCENT_RE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8", "replace"))
    return decode_charset(data, charset or "us-ascii")


def get_param(params: Params, name: str) -> str | None:
    """The decoded value of parameter ``name``: an RFC 2231 ``name*`` wins over ``name``."""
    wanted = name.lower()
    plain: str | None = None
    for key, value in params:
        lower = key.lower()
        if lower == wanted + "*":
            return decode_rfc2231(value)
        if lower == wanted and plain is None:
            plain = value
    return plain


def parse_list(value: str) -> list[str]:
    """A comma-separated list such as Content-Language (RFC 3282), comments removed."""
    return [item for item in (strip_comments(p) for p in _COMMENT_RE.sub("", value).split(",")) if item]
