"""The IMAP ENVELOPE of a message (RFC 9051 §7.5.2, RFC 3501 §7.4.2), built from raw
header values, with a tolerant RFC 5322 §3.4 address-list parser.

IMAP hands most envelope members to clients as sent (no RFC 2047 decoding: clients do
that), so values are only unfolded and trimmed.  Addresses become IMAP address
structures ``[name, adl, mailbox, host]``; a group is bracketed by a start marker
``[None, None, group-name, None]`` and an end marker ``[None, None, None, None]``
(RFC 3501 §7.4.2: a NIL host means group syntax).  Because a NIL host is reserved for
that, an address with no domain gets the empty string as host.

The parser never raises: it reads what it can from broken lists (missing brackets,
stray commas and semicolons, unterminated quotes and comments).
"""

from __future__ import annotations

import re

__all__ = ["ENVELOPE_FIELDS", "Address", "build_envelope", "parse_address_list"]

Address = list[str | None]

# header field -> envelope key; order is the IMAP ENVELOPE order.
ENVELOPE_FIELDS: dict[str, str] = {
    "date": "date",
    "subject": "subject",
    "from": "from",
    "sender": "sender",
    "reply-to": "reply_to",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "in-reply-to": "in_reply_to",
    "message-id": "message_id",
}
_ADDRESS_KEYS = frozenset({"from", "sender", "reply_to", "to", "cc", "bcc"})

# RFC 5322 §3.2: quoted-string, domain-literal, specials, atoms (dots split out so
# obs-phrase "John Q. Public" and dot-atoms are both handled by the joiner).
_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
      | (?P<quoted>"(?:[^"\\]|\\.)*"?)
      | (?P<literal>\[(?:[^\[\]\\]|\\.)*\]?)
      | (?P<comment>\()
      | (?P<special>[<>@,;:.])
      | (?P<atom>(?:[^\s"()\[\]<>@,;:.\\]|\\.?)+|[)\]])""",
    re.VERBOSE | re.DOTALL,
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)

# A token is (kind, text): kind is "q" quoted (text unquoted), "c" comment (text is the
# inside), "s" special, "a" atom or domain literal.
Token = tuple[str, str]


def _unescape(text: str) -> str:
    return _QUOTED_PAIR_RE.sub(r"\1", text) if "\\" in text else text


def _comment_end(text: str, start: int) -> int:
    """Index just past the comment opening at ``start`` (nested, quoted-pairs)."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _tokens(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if m is None:  # pragma: no cover - the atom branch matches any other character
            pos += 1
            continue
        kind = m.lastgroup
        if kind == "comment":
            end = _comment_end(text, pos)
            inner = text[pos + 1 : end - 1 if text[end - 1 : end] == ")" else end]
            out.append(("c", _unescape(inner).strip()))
            pos = end
            continue
        token = m.group(0)
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "quoted":
            body = token[1:-1] if len(token) >= 2 and token.endswith('"') else token[1:]
            out.append(("q", _unescape(body)))
        elif kind == "special":
            out.append(("s", token))
        else:
            out.append(("a", token))
    return out


def _phrase(tokens: list[Token]) -> str | None:
    """A display-name: words joined by one space; "." (obs-phrase) sticks to the left."""
    words: list[str] = []
    for kind, text in tokens:
        if kind == "c":
            continue
        if text == "." and kind == "s" and words:
            words[-1] += "."
        else:
            words.append(text)
    return " ".join(words) if words else None


def _joined(tokens: list[Token]) -> str:
    return "".join(text for kind, text in tokens if kind != "c")


def _addr_spec(tokens: list[Token]) -> tuple[str | None, str, str]:
    """``(adl, mailbox, host)`` from the tokens of ``[route] local-part "@" domain``."""
    tokens = [t for t in tokens if t[0] != "c"]
    adl: str | None = None
    # RFC 5322 §4.4 obs-route: "@a,@b:" before the addr-spec.
    if tokens and tokens[0] == ("s", "@"):
        for i, token in enumerate(tokens):
            if token == ("s", ":"):
                adl = _joined(tokens[:i])
                tokens = tokens[i + 1 :]
                break
    at = max((i for i, t in enumerate(tokens) if t == ("s", "@")), default=-1)
    if at < 0:
        return adl, _joined(tokens), ""
    return adl, _joined(tokens[:at]), _joined(tokens[at + 1 :])


# Fast path for the shapes nearly all mail uses: ``local@domain``, ``Name <local@domain>``
# and ``"Quoted Name" <local@domain>``.  Anything else (comments, groups, routes, quoted
# local-parts, obs-phrase dots, escapes) goes to the full parser, which gives the same
# result for these shapes (a test checks the two agree).
_SIMPLE_ITEM_RE = re.compile(
    r"""\s*(?:
        (?P<bare_local>[^\s"()<>\[\]@,;:\\]+)@(?P<bare_domain>[^\s"()<>\[\]@,;:\\]+)
      | (?:"(?P<quoted>[^"\\]*)"|(?P<phrase>[^"()<>\[\]@,;:.\\]*?))\s*
        <(?P<local>[^\s"()<>\[\]@,;:\\]+)@(?P<domain>[^\s"()<>\[\]@,;:\\]+)>
    )?\s*(?:,|\Z)""",
    re.VERBOSE,
)


def _simple_address_list(value: str) -> list[Address] | None:
    """The fast path, or None when ``value`` is not made only of simple addresses."""
    result: list[Address] = []
    pos = 0
    end = len(value)
    while pos < end:
        m = _SIMPLE_ITEM_RE.match(value, pos)
        if m is None:
            return None
        pos = m.end()
        if m.group("bare_local") is not None:
            result.append([None, None, m.group("bare_local"), m.group("bare_domain")])
        elif m.group("local") is not None:
            name = m.group("quoted")
            if name is None:
                name = " ".join(m.group("phrase").split()) or None
            result.append([name, None, m.group("local"), m.group("domain")])
    return result


def parse_address_list(value: str) -> list[Address] | None:
    """Parse an RFC 5322 address-list into IMAP address structures; None if empty."""
    simple = _simple_address_list(value)
    if simple is not None:
        return simple or None
    return _parse_address_list(value)


def _parse_address_list(value: str) -> list[Address] | None:
    """The full, tolerant parser behind :func:`parse_address_list`."""
    result: list[Address] = []
    words: list[Token] = []  # tokens of the current address outside angle brackets
    angle: list[Token] | None = None  # tokens inside <...> once seen
    in_group = False

    def flush() -> None:
        nonlocal words, angle
        if angle is not None:
            name = _phrase(words)
            if name is None:
                name = next((t for k, t in reversed(words) if k == "c" and t), None)
            adl, mailbox, host = _addr_spec(angle)
            result.append([name, adl, mailbox, host])
        elif any(kind != "c" for kind, _ in words):
            adl, mailbox, host = _addr_spec(words)
            # "addr (Name)": the comment is the only name there is (Dovecot does this).
            name = next((t for k, t in reversed(words) if k == "c" and t), None)
            result.append([name, adl, mailbox, host])
        words = []
        angle = None

    tokens = _tokens(value)
    i = 0
    n = len(tokens)
    while i < n:
        kind, text = tokens[i]
        i += 1
        if kind == "s" and text == "<":
            inner: list[Token] = []
            while i < n and tokens[i] != ("s", ">"):
                inner.append(tokens[i])
                i += 1
            i += 1  # the ">" (or the end)
            if angle is None:
                angle = inner
        elif kind == "s" and text == ",":
            flush()
        elif kind == "s" and text == ":" and not in_group and angle is None:
            result.append([None, None, _phrase(words) or "", None])
            words = []
            in_group = True
        elif kind == "s" and text == ";":
            flush()
            if in_group:
                result.append([None, None, None, None])
                in_group = False
        elif angle is None or kind == "c":
            words.append((kind, text))
    flush()
    if in_group:
        result.append([None, None, None, None])
    return result or None


def _clean(value: str) -> str:
    """Unfold (RFC 5322 §2.2.3) and trim a header value for the envelope."""
    if "\n" in value or "\r" in value:
        value = value.replace("\r\n", "").replace("\n", "").replace("\r", "")
    return value.strip(" \t")


def build_envelope(fields: dict[str, str]) -> dict[str, object]:
    """The envelope dict from the first occurrence of each header field (lower-case
    names mapping to decoded raw values).  Absent members are left out; the formatter
    turns them into NIL, and fills Sender and Reply-To from From (RFC 3501 §7.4.2)."""
    env: dict[str, object] = {}
    for field, key in ENVELOPE_FIELDS.items():
        raw = fields.get(field)
        if raw is None:
            continue
        value = _clean(raw)
        if key in _ADDRESS_KEYS:
            addresses = parse_address_list(value)
            if addresses is not None:
                env[key] = addresses
        else:
            env[key] = value
    return env
