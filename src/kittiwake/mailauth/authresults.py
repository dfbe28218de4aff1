"""The Authentication-Results header field (RFC 8601), behind the authres package.

One field per message, naming this server (the authserv-id, our hostname) and carrying
every result: spf (RFC 7208 §9.2), one dkim per signature with header.d/header.s and
header.b to tell signatures apart (RFC 6008), dmarc with header.from (RFC 7489 §11.2) and
arc (RFC 8617 §10.1). Mail clients and filters downstream trust this field *because* it
names our host, so RFC 8601 §5 requires removing any such field that arrived with the
message: it is forged. `remove_forged` does that; fields of other authserv-ids stay.

Values taken from the message (domains, selectors, reasons) are stripped of control
characters and comments are escaped, so a hostile message cannot inject a line break or
close a comment early.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import authres

from kittiwake.mailauth.arc import ArcOutcome
from kittiwake.mailauth.dkim import DkimResult
from kittiwake.mailauth.dmarc import DmarcOutcome
from kittiwake.mailauth.spf import SpfOutcome, SpfResult
from kittiwake.message.headers import iter_field_spans, split_header, unfold

FIELD_NAME = "Authentication-Results"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SAFE_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


def _value(text: str) -> str:
    return _CONTROL.sub("", text)[:255]


def _comment(text: str) -> str:
    text = _CONTROL.sub(" ", text)[:200]
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _result(method: str, result: str, *, comment: str = "", reason: str = "",
            properties: Sequence[tuple[str, str, str]] = ()) -> authres.AuthenticationResult:
    return authres.AuthenticationResult(
        method, result=result, result_comment=_comment(comment) if comment else None,
        reason=_value(reason) if reason else None,
        properties=[authres.AuthenticationResultProperty(ptype, name, _value(value))
                    for ptype, name, value in properties if value])


def spf_result(outcome: SpfOutcome) -> authres.AuthenticationResult:
    """spf=… smtp.mailfrom=… (or smtp.helo=… for a null sender), RFC 8601 §2.7.2."""
    if outcome.identity == "helo":
        prop = ("smtp", "helo", outcome.helo)
    else:
        sender = outcome.sender if _SAFE_ADDRESS.fullmatch(outcome.sender) else outcome.domain
        prop = ("smtp", "mailfrom", sender)
    comment = ""
    if outcome.result in (SpfResult.PASS, SpfResult.FAIL, SpfResult.SOFTFAIL):
        verb = "designates" if outcome.result is SpfResult.PASS else "does not designate"
        comment = f"domain of {outcome.domain} {verb} {outcome.ip} as permitted sender"
    elif outcome.result in (SpfResult.TEMPERROR, SpfResult.PERMERROR):
        comment = outcome.explanation
    return _result("spf", outcome.result.value, comment=comment, properties=[prop])


def dkim_result(result: DkimResult) -> authres.AuthenticationResult:
    return _result("dkim", result.result.value, reason=result.reason, properties=[
        ("header", "d", result.domain), ("header", "s", result.selector),
        ("header", "a", result.algorithm), ("header", "b", result.header_b)])


def dmarc_result(outcome: DmarcOutcome) -> authres.AuthenticationResult:
    """dmarc=… (p=… dis=…) header.from=…, the comment as large receivers write it."""
    comment = ""
    if outcome.record is not None:
        parts = [f"p={outcome.record.p.value}"]
        if outcome.record.sp is not None:
            parts.append(f"sp={outcome.record.sp.value}")
        parts.append(f"dis={outcome.disposition.value}")
        if outcome.override:
            parts.append(f"override={outcome.override}")
        comment = " ".join(parts)
    elif outcome.override:
        comment = f"override={outcome.override}"
    return _result("dmarc", outcome.result.value, comment=comment, reason=outcome.reason,
                   properties=[("header", "from", outcome.from_domain)])


def arc_result(outcome: ArcOutcome) -> authres.AuthenticationResult:
    comment = ""
    if outcome.instances:
        comment = f"i={outcome.instances}"
        if outcome.last_sealer:
            comment += f" d={outcome.last_sealer}"
    return _result("arc", outcome.result.value, comment=comment,
                   reason=outcome.reason if outcome.result.value == "fail" else "")


def authentication_results(authserv_id: str, *, spf: SpfOutcome | None = None,
                           dkim: Sequence[DkimResult] = (), dmarc: DmarcOutcome | None = None,
                           arc: ArcOutcome | None = None) -> bytes:
    """The complete field, one result per line (RFC 8601 §2.2), ending in CRLF.

    With no DKIM signature at all the message still gets `dkim=none` (RFC 8601 §2.7.1), so
    a reader can tell "not signed" from "not checked".
    """
    results: list[authres.AuthenticationResult] = []
    if spf is not None:
        results.append(spf_result(spf))
    if dkim:
        results.extend(dkim_result(r) for r in dkim)
    elif spf is not None or dmarc is not None:
        results.append(_result("dkim", "none"))
    if dmarc is not None:
        results.append(dmarc_result(dmarc))
    if arc is not None:
        results.append(arc_result(arc))
    header = authres.AuthenticationResultsHeader(authserv_id=_value(authserv_id).lower(),
                                                 results=results)
    if not results:
        return (str(header) + "\r\n").encode("utf-8")
    lines = [f"{FIELD_NAME}: {header.authserv_id}"] + [str(r) for r in results]
    return (";\r\n\t".join(lines) + "\r\n").encode("utf-8")


# --- reading ------------------------------------------------------------------------------

def authserv_id(value: bytes) -> str | None:
    """The authserv-id of an Authentication-Results value (RFC 8601 §2.2), lower case.

    Parsed by hand rather than by authres: a forged field must be recognised even when
    the rest of it is deliberately unparsable.
    """
    text = unfold(value).decode("utf-8", "replace")
    i, n = 0, len(text)
    while i < n:  # [CFWS]: whitespace and (nested) comments
        if text[i] in " \t":
            i += 1
        elif text[i] == "(":
            depth = 0
            while i < n:
                if text[i] == "\\":
                    i += 2
                    continue
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
                if depth == 0:
                    break
        else:
            break
    if i < n and text[i] == '"':  # value = token / quoted-string
        out = []
        i += 1
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                i += 1
            out.append(text[i])
            i += 1
        ident = "".join(out)
    else:
        m = re.match(r"[^\s;()]+", text[i:])
        ident = m.group(0) if m else ""
    ident = ident.strip().rstrip(".").lower()
    return ident or None


def remove_forged(message: bytes, our_authserv_id: str) -> bytes:
    """`message` without the Authentication-Results fields that claim to be ours."""
    header, _ = split_header(message)
    ours = our_authserv_id.rstrip(".").lower()
    drop = [(start, end) for name, start, end in iter_field_spans(header)
            if name == "authentication-results"
            and authserv_id(_field_value(header[start:end])) == ours]
    if not drop:
        return message
    out = []
    pos = 0
    for start, end in drop:
        out.append(message[pos:start])
        pos = end
    out.append(message[pos:])
    return b"".join(out)


def _field_value(field: bytes) -> bytes:
    return field.split(b":", 1)[1] if b":" in field else b""


def parse(field: str) -> authres.AuthenticationResultsHeader:
    """An Authentication-Results field (name included) parsed by authres."""
    return authres.AuthenticationResultsHeader.parse(unfold(field.encode("utf-8")).decode(
        "utf-8").rstrip("\r\n"))
