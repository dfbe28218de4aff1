"""Mail addresses and paths as pure values (RFC 5321 §4.1.2, RFC 6531 §3.3 for UTF-8).

`parse_address` reads a Mailbox (`local@domain`), `parse_path` the `<...>` form used by MAIL
FROM and RCPT TO. Both are strict about syntax and limits (RFC 5321 §4.5.3.1) because the
values end up in file names, queue rows and other servers' commands; leniency belongs to the
caller (e.g. the SMTP core accepting `<postmaster>` without a domain, RFC 5321 §4.5.1).

Internationalised domains are validated with the stdlib IDNA codec's nameprep (prohibited
characters, bidi rules), but A-labels are computed with plain Punycode: the stdlib codec
implements IDNA2003, which maps "ß" to "ss" and would send mail for `straße.de` to the wrong
domain, whereas DNS today uses IDNA2008 (`xn--strae-oqa.de`).
"""

from __future__ import annotations

import encodings.idna
import ipaddress
import stringprep
import unicodedata
from dataclasses import dataclass

# RFC 5321 §4.5.3.1.1-3 limits, in octets (UTF-8 octets under SMTPUTF8, RFC 6531 §3.3).
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256  # including the angle brackets
MAX_LABEL = 63  # RFC 1035 §2.3.4

# RFC 5322 §3.2.3 atext, as used by RFC 5321 Dot-string.
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
# IDNA2003 treats these as label separators; in SMTP only "." separates labels, so a domain
# containing them is refused rather than silently split differently by different software.
_IDEOGRAPHIC_DOTS = frozenset("\u3002\uff0e\uff61")


class AddressError(ValueError):
    """The text is not a valid address/path; `str(err)` says why (never sent verbatim)."""


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox `local@domain`.

    `local` is the local part's value (quotes and quoted-pair escapes removed), case kept;
    `domain` is lower-cased, in Unicode (U-label) form for IDNs, or an address literal such as
    "[127.0.0.1]" / "[IPv6:::1]" kept as sent.
    """

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{quote_local_part(self.local)}@{self.domain}"

    @property
    def ascii_domain(self) -> str:
        """The domain with A-labels (for DNS lookups and non-SMTPUTF8 peers)."""
        if self.domain.startswith("["):
            return self.domain
        return ".".join(_to_alabel(label) for label in self.domain.split("."))

    @property
    def is_ascii(self) -> bool:
        """True when the address can be sent without SMTPUTF8 (RFC 6531 §3.2)."""
        return self.local.isascii() and self.domain.isascii()


def quote_local_part(local: str) -> str:
    """RFC 5321 §4.1.2: a local part is sent as a Dot-string when it is one, otherwise as a
    Quoted-string with '\\' and '"' escaped by quoted-pairs (the minimal form, §4.1.2 SHOULD)."""
    if _is_dot_string(local):
        return local
    escaped = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def parse_address(text: str, *, smtputf8: bool) -> Address:
    """Parse an RFC 5321 §4.1.2 Mailbox. Non-ASCII is allowed only when `smtputf8`."""
    _check_text(text, smtputf8)
    if len(text.encode("utf-8")) + 2 > MAX_PATH:
        raise AddressError("address too long")
    if text.startswith('"'):
        local, end = _parse_quoted_string(text, smtputf8)
        raw_local = text[:end]
        rest = text[end:]
    else:
        at = text.find("@")
        if at < 0:
            raise AddressError("missing '@'")
        raw_local = local = text[:at]
        rest = text[at:]
        if not _is_dot_string(local):
            raise AddressError("local part is not a Dot-string")
    if not rest.startswith("@"):
        raise AddressError("missing '@' after local part")
    if len(raw_local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError("local part too long")
    return Address(local, parse_domain(rest[1:], smtputf8=smtputf8, literal_ok=True))


def parse_path(text: str, *, smtputf8: bool) -> Address | None:
    """Parse an RFC 5321 §4.1.2 Path `<[A-d-l:]Mailbox>`; None for the null path `<>`.

    A source route (A-d-l) is checked for syntax and dropped: RFC 5321 §3.3 and Appendix C
    say servers SHOULD ignore it.
    """
    _check_text(text, smtputf8)
    if len(text) < 2 or text[0] != "<" or text[-1] != ">":
        raise AddressError("path must be enclosed in angle brackets")
    if len(text.encode("utf-8")) > MAX_PATH:
        raise AddressError("path too long")
    inner = text[1:-1]
    if inner == "":
        return None
    if inner.startswith("@"):
        inner = _skip_source_route(inner, smtputf8)
    return parse_address(inner, smtputf8=smtputf8)


def parse_domain(text: str, *, smtputf8: bool, literal_ok: bool = False) -> str:
    """Validate a Domain (or, if `literal_ok`, an address-literal) and return its stored
    form: lower-cased U-labels, or the literal as sent."""
    _check_text(text, smtputf8)
    if text.startswith("["):
        if not literal_ok:
            raise AddressError("address literal not allowed here")
        _check_literal(text)
        return text
    if text == "":
        raise AddressError("empty domain")
    if len(text.encode("utf-8")) > MAX_DOMAIN:
        raise AddressError("domain too long")
    labels = [_parse_label(label) for label in text.split(".")]
    if sum(len(_to_alabel(label)) + 1 for label in labels) - 1 > MAX_DOMAIN:
        raise AddressError("domain too long in A-label form")
    return ".".join(labels)


# --- helpers ---------------------------------------------------------------------------------


def _check_text(text: str, smtputf8: bool) -> None:
    # Invalid UTF-8 decoded with surrogateescape shows up as lone surrogates (category Cs);
    # controls (C0, DEL, C1) are never valid in addresses.
    for ch in text:
        if ch.isascii():
            if ch < " " or ch == "\x7f":
                raise AddressError("control character in address")
        elif not smtputf8:
            raise AddressError("non-ASCII address requires SMTPUTF8")
        elif unicodedata.category(ch) in ("Cc", "Cs"):
            raise AddressError("invalid character in address")


def _is_atext(ch: str) -> bool:
    # RFC 6531 §3.3: atext =/ UTF8-non-ascii (whether it is allowed is checked elsewhere).
    return ch in _ATEXT or (not ch.isascii() and unicodedata.category(ch) not in ("Cc", "Cs"))


def _is_dot_string(local: str) -> bool:
    # Dot-string = Atom *("." Atom); Atom = 1*atext — no leading, trailing or double dots.
    return local != "" and all(atom != "" and all(_is_atext(c) for c in atom)
                               for atom in local.split("."))


def _parse_quoted_string(text: str, smtputf8: bool) -> tuple[str, int]:
    """Return (value, index after the closing quote) for a Quoted-string at text[0]."""
    out: list[str] = []
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            if not out:
                # Syntactically allowed but RFC 5321 §4.1.2 says an empty local part SHOULD
                # NOT be used; no mailbox here has one, and it confuses every consumer.
                raise AddressError("empty quoted local part")
            return "".join(out), i + 1
        if ch == "\\":
            # quoted-pairSMTP = %d92 %d32-126 (RFC 5321 §4.1.2)
            if i + 1 >= len(text) or not (" " <= text[i + 1] <= "~"):
                raise AddressError("bad quoted-pair")
            out.append(text[i + 1])
            i += 2
            continue
        # qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF8-non-ascii (RFC 6531 §3.3)
        if not (" " <= ch <= "~" or (smtputf8 and not ch.isascii())):
            raise AddressError("bad character in quoted local part")
        out.append(ch)
        i += 1
    raise AddressError("unterminated quoted local part")


def _parse_label(label: str) -> str:
    if label == "":
        raise AddressError("empty domain label")
    if label.isascii():
        lower = label.lower()
        _check_ldh(lower)
        if lower.startswith("xn--"):
            return _alabel_to_ulabel(lower)
        return lower
    return _check_ulabel(unicodedata.normalize("NFC", label).lower())


def _check_ldh(label: str) -> None:
    # RFC 5321 §4.1.2 sub-domain = Let-dig [Ldh-str]; RFC 1035 §2.3.4 label <= 63 octets.
    if len(label) > MAX_LABEL:
        raise AddressError("domain label too long")
    if not all(c in _LDH for c in label):
        raise AddressError("invalid character in domain")
    if label.startswith("-") or label.endswith("-"):
        raise AddressError("domain label starts or ends with a hyphen")


def _check_ulabel(label: str) -> str:
    """Validate a lower-cased NFC U-label (RFC 6531 §3.3 sub-domain =/ U-label)."""
    if any(c in _IDEOGRAPHIC_DOTS for c in label):
        raise AddressError("ideographic full stop in domain")
    # IDNA2008 (RFC 5892) disallows compatibility forms (fullwidth letters, "ⅷ") and
    # invisible characters that nameprep would silently drop (RFC 3454 table B.1, e.g.
    # U+200B): refusing them beats registering a look-alike of another domain.
    if unicodedata.normalize("NFKC", label) != label or any(
            stringprep.in_table_b1(c) for c in label):
        raise AddressError("domain label is not in canonical form")
    # The ASCII part of a U-label must still be LDH (RFC 5890 §2.3.2.1).
    if not all(c in _LDH for c in label if c.isascii()):
        raise AddressError("invalid character in domain")
    if label.startswith("-") or label.endswith("-"):
        raise AddressError("domain label starts or ends with a hyphen")
    try:
        # Nameprep (RFC 3491) rejects prohibited code points and bad bidi labels.
        encodings.idna.nameprep(label)
    except UnicodeError as exc:
        raise AddressError(f"invalid internationalised domain label: {exc}") from None
    if len(_to_alabel(label)) > MAX_LABEL:
        raise AddressError("domain label too long")
    return label


def _alabel_to_ulabel(label: str) -> str:
    try:
        ulabel = label[4:].encode("ascii").decode("punycode")
    except UnicodeError:
        raise AddressError("invalid A-label") from None
    # An A-label must decode to a valid U-label that encodes back to itself (RFC 5891 §5.4).
    if ulabel.isascii() or unicodedata.normalize("NFC", ulabel).lower() != ulabel:
        raise AddressError("invalid A-label")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in ulabel):
        raise AddressError("invalid A-label")
    _check_ulabel(ulabel)
    if _to_alabel(ulabel) != label:
        raise AddressError("A-label does not round-trip")
    return ulabel


def _to_alabel(label: str) -> str:
    if label.isascii():
        return label
    return "xn--" + label.encode("punycode").decode("ascii")


def _check_literal(text: str) -> None:
    # RFC 5321 §4.1.3: "[" IPv4 / "IPv6:" IPv6 / General-address-literal "]".
    if not text.endswith("]"):
        raise AddressError("unterminated address literal")
    body = text[1:-1]
    if body[:5].lower() == "ipv6:":
        addr = body[5:]
        # ipaddress accepts a "%scope" suffix, which is not part of RFC 5321 IPv6-addr.
        if "%" in addr:
            raise AddressError("bad IPv6 address literal")
        try:
            ipaddress.IPv6Address(addr)
        except ValueError:
            raise AddressError("bad IPv6 address literal") from None
        return
    if ":" in body:
        # General-address-literal: no standardised tags besides IPv6 exist; refuse.
        raise AddressError("general address literals are not supported")
    try:
        ipaddress.IPv4Address(body)
    except ValueError:
        raise AddressError("bad IPv4 address literal") from None


def _skip_source_route(inner: str, smtputf8: bool) -> str:
    """Consume `A-d-l ":"` (At-domain *("," At-domain)) and return the Mailbox text."""
    i = 0
    while True:
        if i >= len(inner) or inner[i] != "@":
            raise AddressError("bad source route")
        j = i + 1
        if inner.startswith("[", j):
            # A literal may contain ':' (IPv6), so find its closing bracket first.
            k = inner.find("]", j)
            if k < 0:
                raise AddressError("bad source route")
            end = k + 1
        else:
            end = j
            while end < len(inner) and inner[end] not in ",:":
                end += 1
        parse_domain(inner[j:end], smtputf8=smtputf8, literal_ok=True)
        if end >= len(inner):
            raise AddressError("bad source route")
        if inner[end] == ":":
            return inner[end + 1:]
        if inner[end] != ",":
            raise AddressError("bad source route")
        i = end + 1
