"""ARC, Authenticated Received Chain (RFC 8617), behind dkimpy: verifying a chain on inbound
mail, and sealing mail that Kittiwake forwards.

Forwarding breaks SPF (our address is not the original sender's) and often DKIM (footers,
re-encoding). ARC lets each intermediary record what it saw (ARC-Authentication-Results),
sign the message as it passes it on (ARC-Message-Signature) and seal the chain so far
(ARC-Seal, whose cv= says whether the chain it received validated). A receiver that trusts
the sealer may then accept a DMARC failure (RFC 8617 §7.2, RFC 7489 §7.2 local policy
override "forwarded"/"trusted_forwarder").

As for DKIM, the keys (ARC uses DKIM key records, RFC 8617 §4.1.2 and §4.1.3) are fetched
asynchronously first and dkimpy then runs in a worker thread against them. Sealing uses
rsa-sha256: RFC 8617 §4.1.3 defines only that algorithm, so the domain's active RSA key
seals, and an Ed25519 key cannot.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from dataclasses import dataclass

import dkim
import dkim.util

from kittiwake.dns import Resolver
from kittiwake.mailauth.dkim import SIGNED_FIELDS, SIGNED_IF_PRESENT, fetch_keys
from kittiwake.mailauth.dkimkeys import DkimKey, KeyAlgorithm
from kittiwake.message.headers import iter_fields, split_header, unfold

log = logging.getLogger(__name__)

MAX_INSTANCES = 50  # RFC 8617 §4.2.1: i= is 1 to 50
_ARC_FIELDS = ("arc-seal", "arc-message-signature", "arc-authentication-results")
_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


class ArcResult(enum.Enum):
    """RFC 8617 §4.4 chain validation status, as reported in arc= (RFC 8601 registry)."""

    NONE = "none"  # no ARC sets
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class ArcOutcome:
    result: ArcResult
    instances: int = 0  # the highest i= (0: no chain)
    reason: str = ""
    # d= of each ARC-Seal, newest first: the intermediaries a local policy may trust.
    sealers: tuple[str, ...] = ()

    @property
    def cv(self) -> str:
        """The chain validation status as an ARC-Seal cv= would carry it (RFC 8617 §4.1.3)."""
        return self.result.value

    @property
    def last_sealer(self) -> str | None:
        return self.sealers[0] if self.sealers else None


def _key_names(message: bytes) -> tuple[set[str], int, tuple[str, ...]]:
    """(key record names to fetch, highest instance, ARC-Seal d= newest first)."""
    header, _ = split_header(message)
    names: set[str] = set()
    seals: list[tuple[int, str]] = []
    highest = 0
    for field, value in iter_fields(header):
        if field not in _ARC_FIELDS:
            continue
        try:
            tags = dkim.util.parse_tag_value(unfold(value))
        except dkim.util.InvalidTagValueList:
            continue
        try:
            instance = int(tags.get(b"i", b"0"))
        except ValueError:
            continue
        highest = max(highest, instance)
        if field == "arc-authentication-results":
            continue
        d = tags.get(b"d", b"").decode("utf-8", "replace").lower().rstrip(".")
        s = tags.get(b"s", b"").decode("utf-8", "replace").lower()
        if _NAME_RE.fullmatch(d) and _NAME_RE.fullmatch(s):
            names.add(f"{s}._domainkey.{d}")
            if field == "arc-seal":
                seals.append((instance, d))
    sealers = tuple(d for _, d in sorted(seals, reverse=True))
    return names, highest, sealers


def _verify_sync(message: bytes, keys: dict[str, list[str] | None]) -> tuple[ArcResult, str]:
    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        wanted = name.decode("utf-8", "replace").rstrip(".").lower()
        records = keys.get(wanted)
        if records is None:
            if wanted in keys:
                raise dkim.DnsTimeoutError(f"DNS lookup of {wanted} failed")
            return None
        return records[0].encode("utf-8") if records else None

    try:
        arc = dkim.ARC(message)
        cv, _results, reason = arc.verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as exc:
        return ArcResult.FAIL, str(exc)
    except Exception:  # a library bug on hostile input must not block the message
        log.exception("event=arc_internal_error")
        return ArcResult.FAIL, "internal error"
    if cv == dkim.CV_Pass:
        return ArcResult.PASS, ""
    if cv == dkim.CV_None:
        return ArcResult.NONE, ""
    # CV_Fail, or None for a chain an earlier sealer already declared failed (§5.2).
    return ArcResult.FAIL, str(reason)


class ArcVerifier:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def verify(self, message: bytes) -> ArcOutcome:
        names, highest, sealers = _key_names(message)
        if highest == 0 and not names:
            return ArcOutcome(ArcResult.NONE)
        if highest > MAX_INSTANCES:
            return ArcOutcome(ArcResult.FAIL, highest, f"more than {MAX_INSTANCES} ARC sets",
                              sealers)
        keys = await fetch_keys(self.resolver, names)
        result, reason = await asyncio.to_thread(_verify_sync, message, keys)
        if result is ArcResult.FAIL and any(v is None for v in keys.values()):
            reason = (reason + "; " if reason else "") + "a key lookup failed (DNS)"
        return ArcOutcome(result, highest, re.sub(r"[^\x20-\x7e]", "?", reason)[:200], sealers)


async def verify_arc(message: bytes, resolver: Resolver) -> ArcOutcome:
    return await ArcVerifier(resolver).verify(message)


def arc_seal(message: bytes, key: DkimKey, authserv_id: str) -> bytes:
    """The next ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results) to
    prepend to `message` before forwarding it.

    The message must carry our Authentication-Results (authserv-id `authserv_id`) with an
    arc= result: that becomes the ARC-Authentication-Results, and its arc= the seal's cv=
    (RFC 8617 §5.1.1). Returns b"" when there is nothing to seal (no such header, or the
    chain is already terminated). CPU-bound: use `asyncio.to_thread` on the loop.
    """
    if key.algorithm is not KeyAlgorithm.RSA:
        raise ValueError("ARC seals with rsa-sha256 only (RFC 8617 §4.1.3)")
    header, _ = split_header(message)
    include = [n.encode("ascii") for n in _sealed_fields(header)]
    arc = dkim.ARC(message, signature_algorithm=b"rsa-sha256", linesep=b"\r\n")
    arc.should_not_sign.discard(b"dkim-signature")  # see _sealed_fields
    # dkimpy compares with authres' parse, which lower-cases the authserv-id.
    headers = arc.sign(key.selector.encode("ascii"), key.domain.encode("ascii"),
                       key.dkimpy_private_key, authserv_id.lower().encode("ascii"),
                       include_headers=include)
    return b"".join(headers)


def _sealed_fields(header: bytes) -> list[str]:
    """The AMS covers the fields DKIM signs, plus the DKIM-Signature fields themselves so a
    later verifier knows which signatures we saw (RFC 8617 §4.1.2 allows any but ARC-Seal)."""
    present = {name for name, _ in iter_fields(header)}
    names = [n for n in SIGNED_FIELDS if n in present or n == "from"]
    names += [n for n in SIGNED_IF_PRESENT if n in present]
    if "dkim-signature" in present:
        names.append("dkim-signature")
    return names
