"""DKIM signing and verification (RFC 6376; Ed25519 RFC 8463; crypto updates RFC 8301),
behind dkimpy.

Signing: relaxed/relaxed canonicalisation (survives the header refolding and whitespace
changes relays make, RFC 6376 §3.4), one signature per active key (RSA and Ed25519 side by
side, RFC 8463 §4), and a header list that *over-signs* (RFC 6376 §8.15): every field in
the list is named once more than it occurs, so nobody can add a second From, Subject … or a
first Cc after signing without breaking the signature.

Verification: every DKIM-Signature gets its own result (RFC 6376 §6.1, RFC 8601 §2.7.1
result names). dkimpy reports most failures as a bare False, so the key lookup and the key
checks happen here, before dkimpy hashes anything: the keys are fetched asynchronously
through the `Resolver` (all signatures at once), and a DNS failure (temperror), a missing
or revoked key, a key that does not fit the algorithm (permerror) and a signature that
does not verify (fail) are told apart. dkimpy's hashing runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import dkim
import dkim.util

from kittiwake.dns import DnsTemporaryError, Resolver
from kittiwake.mailauth.dkimkeys import DkimKey, KeyAlgorithm, check_domain
from kittiwake.message.headers import iter_fields, split_header

log = logging.getLogger(__name__)

# Signed and over-signed always (RFC 6376 §5.4.1 lists them as the fields to sign), even
# when absent: a Reply-To or Cc added to a signed message would redirect replies or
# address more people under the author's name, so adding one must break the signature …
SIGNED_FIELDS = ("from", "subject", "date", "to", "cc", "reply-to", "message-id",
                 "mime-version", "content-type", "content-transfer-encoding")
# … and these when the message has them (adding one only changes threading).
SIGNED_IF_PRESENT = ("in-reply-to", "references")

MAX_SIGNATURES = 10  # more are reported as neutral, not evaluated (a cheap DoS otherwise)
MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers MUST NOT accept smaller keys


class DkimStatus(enum.Enum):
    """RFC 8601 §2.7.1 results for one signature."""

    PASS = "pass"
    FAIL = "fail"  # verified and found wrong (body hash, signature)
    NEUTRAL = "neutral"  # not evaluated
    TEMPERROR = "temperror"  # the key could not be fetched now; may work later
    PERMERROR = "permerror"  # can never verify: malformed, no key, revoked, unsupported


@dataclass(frozen=True, slots=True)
class DkimResult:
    domain: str  # d=
    selector: str  # s=
    algorithm: str  # a=
    result: DkimStatus
    reason: str = ""
    identity: str = ""  # i=
    header_b: str = ""  # leading characters of b= (RFC 6008 §4), set per message

    @property
    def passed(self) -> bool:
        return self.result is DkimStatus.PASS


# --- signing ------------------------------------------------------------------------------

def signed_header_list(message: bytes) -> list[str]:
    """h= for `message`: each listed field once per occurrence plus once more."""
    header, _ = split_header(message)
    present = Counter(name for name, _ in iter_fields(header))
    names: list[str] = []
    for name in SIGNED_FIELDS:
        names += [name] * (present[name] + 1)
    for name in SIGNED_IF_PRESENT:
        if present[name]:
            names += [name] * (present[name] + 1)
    return names


def sign(message: bytes, domain: str, keys: Sequence[DkimKey]) -> bytes:
    """DKIM-Signature fields for `message`, one per key, to prepend (CRLF line ends).

    Every signature covers the message as given (none signs another's DKIM-Signature), so
    their order does not matter. CPU-bound: call through `asyncio.to_thread` on the loop.
    """
    d = check_domain(domain)
    include = [name.encode("ascii") for name in signed_header_list(message)]
    out = []
    for key in keys:
        if key.domain != d:
            raise ValueError(f"key {key.record_name} cannot sign for {d}")
        out.append(dkim.sign(
            message, key.selector.encode("ascii"), d.encode("ascii"), key.dkimpy_private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=key.algorithm.signature_algorithm.encode("ascii"),
            include_headers=include, linesep=b"\r\n"))
    return b"".join(out)


# --- verification -------------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


@dataclass
class _Signature:
    index: int
    tags: dict[bytes, bytes] | None
    problem: str = ""  # set when the signature cannot be evaluated at all

    def tag(self, name: bytes) -> str:
        return _text((self.tags or {}).get(name))

    @property
    def key_name(self) -> str | None:
        d, s = self.tag(b"d").lower().rstrip("."), self.tag(b"s").lower()
        if not (d and s and _NAME_RE.fullmatch(d) and _NAME_RE.fullmatch(s)):
            return None
        return f"{s}._domainkey.{d}"

    def result(self, status: DkimStatus, reason: str) -> DkimResult:
        return DkimResult(domain=self.tag(b"d").lower().rstrip("."), selector=self.tag(b"s"),
                          algorithm=self.tag(b"a").lower(), result=status, reason=reason,
                          identity=self.tag(b"i"), header_b=re.sub(r"\s+", "", self.tag(b"b")))


class _Prepared:
    """A message parsed by dkimpy once, verified signature by signature."""

    def __init__(self, message: bytes) -> None:
        self.signatures: list[_Signature] = []
        self.parse_error = ""
        try:
            self.dk = dkim.DKIM(message, minkey=MIN_RSA_BITS)
        except dkim.DKIMException as exc:
            self.parse_error = f"message format: {exc}"
            header, _ = split_header(message)
            values = [v for n, v in iter_fields(header) if n == "dkim-signature"]
            self.signatures = [_Signature(i, None, self.parse_error) for i in range(len(values))]
            return
        values = [v for n, v in self.dk.headers if n.lower() == b"dkim-signature"]
        for i, value in enumerate(values):
            try:
                tags = dkim.util.parse_tag_value(value)
            except dkim.util.InvalidTagValueList as exc:
                self.signatures.append(_Signature(i, None, f"malformed signature: {exc}"))
                continue
            sig = _Signature(i, tags)
            sig.problem = _precheck(sig) if i < MAX_SIGNATURES else ""
            self.signatures.append(sig)

    def key_names(self) -> set[str]:
        return {s.key_name for s in self.signatures[:MAX_SIGNATURES]
                if not s.problem and s.key_name}

    def verify_all(self, keys: dict[str, list[str] | None]) -> list[DkimResult]:
        results = []
        for sig in self.signatures:
            if sig.index >= MAX_SIGNATURES:
                results.append(sig.result(DkimStatus.NEUTRAL,
                                          f"not evaluated: more than {MAX_SIGNATURES} signatures"))
            elif sig.problem:
                results.append(sig.result(DkimStatus.PERMERROR, sig.problem))
            else:
                results.append(self._verify(sig, keys.get(sig.key_name or "")))
        return _unique_b_prefixes(results)

    def _verify(self, sig: _Signature, records: list[str] | None) -> DkimResult:
        if records is None:
            return sig.result(DkimStatus.TEMPERROR, "key lookup failed (DNS)")
        record, problem = _choose_key(sig, records)
        if record is None:
            return sig.result(DkimStatus.PERMERROR, problem)

        def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
            return record.encode("utf-8")

        try:
            ok = self.dk.verify(sig.index, dnsfunc=dnsfunc)
        except dkim.ValidationError as exc:
            reason = str(exc)
            if reason.startswith("body hash mismatch"):
                return sig.result(DkimStatus.FAIL, "body hash did not verify")
            return sig.result(DkimStatus.PERMERROR, _short(reason))
        except dkim.DKIMException as exc:  # key too small, bad canonicalisation, …
            return sig.result(DkimStatus.PERMERROR, _short(str(exc)))
        except Exception:  # a library bug on hostile input must not block the message
            log.exception("event=dkim_internal_error d=%s s=%s", sig.tag(b"d"), sig.tag(b"s"))
            return sig.result(DkimStatus.PERMERROR, "internal error")
        if ok:
            return sig.result(DkimStatus.PASS, "")
        return sig.result(DkimStatus.FAIL, "signature did not verify")


def _precheck(sig: _Signature) -> str:
    """RFC 6376 §6.1.1 checks dkimpy leaves out; "" when fine."""
    tags = sig.tags or {}
    for required in (b"v", b"a", b"b", b"bh", b"d", b"h", b"s"):
        if required not in tags:
            return f"missing {required.decode()}= tag"
    if tags[b"v"] != b"1":
        return "unsupported version"
    algorithm = tags[b"a"].lower()
    if algorithm == b"rsa-sha1":
        return "rsa-sha1 is not accepted (RFC 8301 §3.1)"
    if algorithm not in (b"rsa-sha256", b"ed25519-sha256"):
        return f"unsupported algorithm {_text(algorithm)}"
    signed = [h.strip().lower() for h in tags[b"h"].split(b":")]
    if b"from" not in signed:
        return "From field not signed"
    if sig.key_name is None:
        return "invalid d= or s="
    return ""


def _choose_key(sig: _Signature, records: list[str]) -> tuple[str | None, str]:
    """The key record to use and, when there is none, why (a permerror reason)."""
    if not records:
        return None, "no key for signature"
    problem = "no usable key"
    for record in records:  # RFC 6376 §3.6.2.2: several records → use one that works
        try:
            tags = dkim.util.parse_tag_value(record.encode("utf-8"))
        except dkim.util.InvalidTagValueList:
            problem = "key record syntax"
            continue
        if b"p" not in tags:
            problem = "key record has no p="
            continue
        if not tags[b"p"].strip():
            return None, "key revoked"  # RFC 6376 §3.6.1: empty p= means revoked
        key_type = _text(tags.get(b"k", b"rsa")).lower()
        if not sig.tag(b"a").lower().startswith(key_type + "-"):
            problem = f"key type {key_type} does not match a={sig.tag(b'a')}"
            continue
        hashes = [h.strip() for h in _text(tags.get(b"h", b"")).lower().split(":") if h.strip()]
        if hashes and "sha256" not in hashes:
            problem = "key does not allow sha256 (h=)"
            continue
        try:
            dkim.evaluate_pk(sig.key_name, record.encode("utf-8"))
        except dkim.KeyFormatError as exc:
            problem = f"key syntax: {_short(str(exc))}"
            continue
        except Exception:  # binascii errors and the like from a garbled p=
            problem = "key syntax"
            continue
        return record, ""
    return None, problem


def _short(text: str, limit: int = 100) -> str:
    return re.sub(r"[^\x20-\x7e]", "?", text)[:limit]


def _unique_b_prefixes(results: list[DkimResult]) -> list[DkimResult]:
    """header.b: at least 8 characters of b=, more if needed to tell signatures apart."""
    full = [r.header_b for r in results]
    out = []
    for r in results:
        length = 8
        while length < len(r.header_b) and sum(
                1 for b in full if b[:length] == r.header_b[:length]) > 1:
            length += 4
        out.append(DkimResult(r.domain, r.selector, r.algorithm, r.result, r.reason,
                              r.identity, r.header_b[:length]))
    return out


class DkimVerifier:
    """Verifies every DKIM signature of inbound messages."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def verify(self, message: bytes) -> list[DkimResult]:
        try:
            prepared = await asyncio.to_thread(_Prepared, message)
        except Exception:  # a library bug on hostile input must not block the message
            log.exception("event=dkim_internal_error stage=parse")
            return [DkimResult("", "", "", DkimStatus.PERMERROR, "internal error")]
        if not prepared.signatures:
            return []
        keys = await fetch_keys(self.resolver, prepared.key_names())
        return await asyncio.to_thread(prepared.verify_all, keys)


async def fetch_keys(resolver: Resolver, names: set[str]) -> dict[str, list[str] | None]:
    """TXT records at each key name, all lookups at once; None where DNS failed."""
    ordered = sorted(names)
    answers = await asyncio.gather(*(resolver.txt(n) for n in ordered), return_exceptions=True)
    keys: dict[str, list[str] | None] = {}
    for name, answer in zip(ordered, answers, strict=True):
        if isinstance(answer, list):
            keys[name] = answer
        else:
            if not isinstance(answer, DnsTemporaryError):
                log.warning("event=dkim_key_lookup_error name=%s error=%r", name, answer)
            keys[name] = None
    return keys


async def verify(message: bytes, resolver: Resolver) -> list[DkimResult]:
    """All signatures of `message`, in header order."""
    return await DkimVerifier(resolver).verify(message)


__all__ = ["MAX_SIGNATURES", "SIGNED_FIELDS", "SIGNED_IF_PRESENT", "DkimKey", "DkimResult",
           "DkimStatus", "DkimVerifier", "KeyAlgorithm", "fetch_keys", "sign",
           "signed_header_list", "verify"]
