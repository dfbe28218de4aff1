"""IMAP syntax for a cached structure: ENVELOPE, BODY and BODYSTRUCTURE
(RFC 9051 §7.5.2 and the ``envelope``/``body`` grammar of §9; RFC 3501 §7.4.2).

Works on the dict :func:`kittiwake.message.structure.parse_structure` returns, so
FETCH never re-reads the message.  Strings are written as quoted strings when the IMAP
grammar allows (``"`` and ``\\`` escaped), and as literals ``{n}\\r\\n...`` when the
value has CR/LF or, for an IMAP4rev1 client without UTF8=ACCEPT, non-ASCII characters.
With ``utf8=True`` (IMAP4rev2 / RFC 6855 UTF8=ACCEPT) UTF-8 may stay quoted.  The
result is ``str``; the session encodes it as UTF-8, and literal lengths count those
octets.

Types, subtypes, parameter names, encodings and disposition types are upper-cased, as
in the RFC's example ``("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)``;
they are case-insensitive, and one spelling keeps client caches simple.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_body", "format_body_and_structure", "format_bodystructure", "format_envelope",
           "imap_string"]

# RFC 9051 body-type-mpart needs one body at least; a multipart with none shows this.
_EMPTY_PART: dict[str, Any] = {"h": 0, "b": 0, "e": 0, "type": "text", "subtype": "plain",
                               "params": [["charset", "US-ASCII"]], "lines": 0}


#: Quoted forms of strings already seen, per mode: most strings in a structure (types,
#: parameter names, charsets, encodings, domains) repeat from message to message.
_QUOTED: tuple[dict[str, str], dict[str, str]] = ({}, {})
_QUOTED_MAX = 4096


def imap_string(value: str | None, utf8: bool = False) -> str:
    """An IMAP nstring: NIL, a quoted string, or a literal when quoting cannot carry it."""
    if value is None:
        return "NIL"
    memo = _QUOTED[utf8]
    quoted = memo.get(value)
    if quoted is not None:
        return quoted
    text = value
    if "\x00" in text:  # CHAR8 excludes NUL even in literals (RFC 9051 §4.3)
        text = text.replace("\x00", "")
    if "\r" in text or "\n" in text or not (utf8 or text.isascii()):
        return f"{{{len(text.encode('utf-8'))}}}\r\n{text}"
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    quoted = f'"{text}"'
    if len(value) <= 64:
        if len(memo) >= _QUOTED_MAX:
            memo.clear()
        memo[value] = quoted
    return quoted


def _upper(value: str | None, utf8: bool) -> str:
    return imap_string(value.upper() if value is not None else None, utf8)


def _params(params: Any, utf8: bool) -> str:
    """body-fld-param: ``("NAME" "value" ...)`` or NIL."""
    if not params:
        return "NIL"
    return "(" + " ".join(f"{_upper(k, utf8)} {imap_string(v, utf8)}" for k, v in params) + ")"


def _disposition(node: Mapping[str, Any], utf8: bool) -> str:
    disp = node.get("disp")
    if not disp:
        return "NIL"
    return f"({_upper(disp[0], utf8)} {_params(disp[1], utf8)})"


def _language(node: Mapping[str, Any], utf8: bool) -> str:
    languages = node.get("lang")
    if not languages:
        return "NIL"
    return "(" + " ".join(imap_string(tag, utf8) for tag in languages) + ")"


def _addresses(addresses: Any, utf8: bool) -> str:
    if not addresses:
        return "NIL"
    out = []
    for name, adl, mailbox, host in addresses:
        out.append(f"({imap_string(name, utf8)} {imap_string(adl, utf8)}"
                   f" {imap_string(mailbox, utf8)} {imap_string(host, utf8)})")
    return "(" + "".join(out) + ")"


def _envelope(env: Mapping[str, Any], utf8: bool) -> str:
    get = env.get
    sender = get("from")
    # RFC 3501 §7.4.2: absent or empty Sender/Reply-To take the From value.
    return (f"({imap_string(get('date'), utf8)} {imap_string(get('subject'), utf8)}"
            f" {_addresses(sender, utf8)} {_addresses(get('sender') or sender, utf8)}"
            f" {_addresses(get('reply_to') or sender, utf8)} {_addresses(get('to'), utf8)}"
            f" {_addresses(get('cc'), utf8)} {_addresses(get('bcc'), utf8)}"
            f" {imap_string(get('in_reply_to'), utf8)} {imap_string(get('message_id'), utf8)})")


def format_envelope(struct: Mapping[str, Any], *, utf8: bool = False) -> str:
    """The ENVELOPE of a message node (the root, or the ``msg`` of an embedded one)."""
    env = struct.get("env")
    return _envelope(env if isinstance(env, Mapping) else {}, utf8)


def _bodies(node: Mapping[str, Any], utf8: bool) -> tuple[str, str]:
    """BODY and BODYSTRUCTURE of a node in one walk: the indexer stores both, and they
    share everything but the extension data."""
    if "parts" in node:
        pairs = [_bodies(p, utf8) for p in node["parts"] or [_EMPTY_PART]]
        subtype = " " + _upper(node.get("subtype", "mixed"), utf8)
        # body-ext-mpart: parameters, disposition, language, location
        ext = (f" {_params(node.get('params'), utf8)} {_disposition(node, utf8)}"
               f" {_language(node, utf8)} {imap_string(node.get('loc'), utf8)}")
        return ("(" + "".join(b for b, _ in pairs) + subtype + ")",
                "(" + "".join(f for _, f in pairs) + subtype + ext + ")")
    ctype = node.get("type", "text")
    fields = [
        _upper(ctype, utf8),
        _upper(node.get("subtype", "plain"), utf8),
        _params(node.get("params"), utf8),
        imap_string(node.get("id"), utf8),
        imap_string(node.get("desc"), utf8),
        _upper(node.get("enc", "7BIT"), utf8),
        str(max(0, int(node.get("e", 0)) - int(node.get("b", 0)))),
    ]
    message = node.get("msg")
    inner: tuple[str, str] | None = None
    lines: list[str] = []
    if isinstance(message, Mapping):
        # body-type-msg: envelope, body and line count of the encapsulated message
        fields.append(format_envelope(message, utf8=utf8))
        inner = _bodies(message, utf8)
        lines.append(str(node.get("lines", 0)))
    elif str(ctype).lower() == "text":
        lines.append(str(node.get("lines", 0)))  # body-type-text: body-fld-lines
    # body-ext-1part: MD5, disposition, language, location
    extension = [imap_string(node.get("md5"), utf8), _disposition(node, utf8),
                 _language(node, utf8), imap_string(node.get("loc"), utf8)]
    if inner is None:
        return ("(" + " ".join(fields + lines) + ")",
                "(" + " ".join(fields + lines + extension) + ")")
    return ("(" + " ".join([*fields, inner[0], *lines]) + ")",
            "(" + " ".join([*fields, inner[1], *lines, *extension]) + ")")


def format_bodystructure(struct: Mapping[str, Any], extensible: bool = True, *,
                         utf8: bool = False) -> str:
    """BODYSTRUCTURE (``extensible=True``) or BODY (``False``) of a node."""
    return _bodies(struct, utf8)[1 if extensible else 0]


def format_body(struct: Mapping[str, Any], *, utf8: bool = False) -> str:
    """The non-extensible BODY form: BODYSTRUCTURE without extension data."""
    return _bodies(struct, utf8)[0]


def format_body_and_structure(struct: Mapping[str, Any], *,
                              utf8: bool = False) -> tuple[str, str]:
    """(BODY, BODYSTRUCTURE) of a node, for the cache, which keeps both."""
    return _bodies(struct, utf8)
