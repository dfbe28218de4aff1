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

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["format_body", "format_bodystructure", "format_envelope", "imap_string"]

_LITERAL_NEEDED = re.compile(r"[\r\n]|[^\x01-\x7f]")
_LITERAL_NEEDED_UTF8 = re.compile(r"[\r\n]")
_ENVELOPE_ORDER = ("date", "subject", "from", "sender", "reply_to", "to", "cc", "bcc",
                   "in_reply_to", "message_id")
# RFC 9051 body-type-mpart needs one body at least; a multipart with none shows this.
_EMPTY_PART: dict[str, Any] = {"h": 0, "b": 0, "e": 0, "type": "text", "subtype": "plain",
                               "params": [["charset", "US-ASCII"]], "lines": 0}


def imap_string(value: str | None, utf8: bool = False) -> str:
    """An IMAP nstring: NIL, a quoted string, or a literal when quoting cannot carry it."""
    if value is None:
        return "NIL"
    if "\x00" in value:  # CHAR8 excludes NUL even in literals (RFC 9051 §4.3)
        value = value.replace("\x00", "")
    pattern = _LITERAL_NEEDED_UTF8 if utf8 else _LITERAL_NEEDED
    if pattern.search(value):
        return f"{{{len(value.encode('utf-8'))}}}\r\n{value}"
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


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
    return "(" + "".join(
        "(" + " ".join(imap_string(member, utf8) for member in address) + ")"
        for address in addresses
    ) + ")"


def _envelope(env: Mapping[str, Any], utf8: bool) -> str:
    members = []
    for key in _ENVELOPE_ORDER:
        value = env.get(key)
        if key in ("sender", "reply_to") and not value:
            # RFC 3501 §7.4.2: absent or empty Sender/Reply-To take the From value.
            value = env.get("from")
        if key in ("from", "sender", "reply_to", "to", "cc", "bcc"):
            members.append(_addresses(value, utf8))
        else:
            members.append(imap_string(value, utf8))
    return "(" + " ".join(members) + ")"


def format_envelope(struct: Mapping[str, Any], *, utf8: bool = False) -> str:
    """The ENVELOPE of a message node (the root, or the ``msg`` of an embedded one)."""
    env = struct.get("env")
    return _envelope(env if isinstance(env, Mapping) else {}, utf8)


def _body(node: Mapping[str, Any], extensible: bool, utf8: bool) -> str:
    if "parts" in node:
        parts = node["parts"] or [_EMPTY_PART]
        out = "(" + "".join(_body(p, extensible, utf8) for p in parts)
        out += " " + _upper(node.get("subtype", "mixed"), utf8)
        if extensible:
            # body-ext-mpart: parameters, disposition, language, location
            out += (f" {_params(node.get('params'), utf8)} {_disposition(node, utf8)}"
                    f" {_language(node, utf8)} {imap_string(node.get('loc'), utf8)}")
        return out + ")"
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
    if isinstance(message, Mapping):
        # body-type-msg: envelope, body and line count of the encapsulated message
        fields.append(format_envelope(message, utf8=utf8))
        fields.append(_body(message, extensible, utf8))
        fields.append(str(node.get("lines", 0)))
    elif str(ctype).lower() == "text":
        fields.append(str(node.get("lines", 0)))  # body-type-text: body-fld-lines
    if extensible:
        # body-ext-1part: MD5, disposition, language, location
        fields.append(imap_string(node.get("md5"), utf8))
        fields.append(_disposition(node, utf8))
        fields.append(_language(node, utf8))
        fields.append(imap_string(node.get("loc"), utf8))
    return "(" + " ".join(fields) + ")"


def format_bodystructure(struct: Mapping[str, Any], extensible: bool = True, *,
                         utf8: bool = False) -> str:
    """BODYSTRUCTURE (``extensible=True``) or BODY (``False``) of a node."""
    return _body(struct, extensible, utf8)


def format_body(struct: Mapping[str, Any], *, utf8: bool = False) -> str:
    """The non-extensible BODY form: BODYSTRUCTURE without extension data."""
    return _body(struct, False, utf8)
