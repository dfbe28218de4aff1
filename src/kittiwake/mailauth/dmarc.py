"""DMARC (RFC 7489): the From domain's policy, identifier alignment and the disposition.

A message passes DMARC when SPF passed for a domain aligned with the RFC5322.From domain,
or a DKIM signature verified for an aligned d= (§3.1, §4.2). Aligned means the same
organisational domain (relaxed, the default) or the very same name (strict, adkim=s /
aspf=s). The organisational domain is the public suffix plus one label (§3.2), from the
Public Suffix List shipped with the publicsuffixlist package: no network fetch at run time.

Policy discovery (§6.6.3): `_dmarc.<From domain>`, else `_dmarc.<organisational domain>`,
where sp= (if any) applies to subdomains. Records not starting with v=DMARC1 are ignored;
more than one DMARC record means none. A record with a bad p= still counts as p=none when
it names a valid rua= (step 6), so reports keep flowing.

The disposition is the policy, sampled by pct= (§6.6.4: a message outside the sample gets
the next milder policy) and then overridden by local lists: a domain on the "always accept"
list is delivered, one on the "never accept" list rejected (§7.2 local_policy), and a
failure that came through a trusted ARC sealer is delivered (RFC 8617 §7.2, "forwarded").
"""

from __future__ import annotations

import enum
import functools
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from publicsuffixlist import PublicSuffixList

from kittiwake.dns import DnsTemporaryError, Resolver, ascii_name
from kittiwake.mailauth.arc import ArcOutcome, ArcResult
from kittiwake.mailauth.dkim import DkimResult, DkimStatus
from kittiwake.mailauth.spf import SpfOutcome, SpfResult
from kittiwake.message.envelope import parse_address_list
from kittiwake.message.headers import get_all_fields, split_header, unfold


class DmarcResult(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"  # no policy published (or no From domain to look it up for)
    TEMPERROR = "temperror"  # the policy lookup failed; try later
    PERMERROR = "permerror"  # a policy exists but is unusable / From is unusable


class Policy(enum.Enum):
    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"

    @property
    def milder(self) -> Policy:
        return {Policy.REJECT: Policy.QUARANTINE}.get(self, Policy.NONE)


_SEVERITY = {Policy.NONE: 0, Policy.QUARANTINE: 1, Policy.REJECT: 2}


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """The tags of a DMARC record (RFC 7489 §6.3) that evaluation and reporting use."""

    p: Policy
    sp: Policy | None = None
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: tuple[str, ...] = ("0",)
    raw: str = ""


@dataclass(frozen=True, slots=True)
class DmarcOutcome:
    result: DmarcResult
    from_domain: str
    org_domain: str
    policy: Policy = Policy.NONE  # what the domain asks for this message (p= or sp=)
    disposition: Policy = Policy.NONE  # what to do: after pct= and local overrides
    record: DmarcRecord | None = None
    record_domain: str = ""  # where the record was found
    spf_aligned: bool = False
    dkim_aligned: bool = False
    sampled_out: bool = False  # pct= left this message out of the sample
    override: str = ""  # RFC 7489 §7.2 PolicyOverride type when local policy intervened
    reason: str = ""


class DmarcRecordError(ValueError):
    pass


_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


def parse_record(text: str) -> DmarcRecord:
    """Parse a DMARC TXT record (RFC 7489 §6.3, §6.4); DmarcRecordError when unusable."""
    parts = [p.strip() for p in text.split(";")]
    tags: dict[str, str] = {}
    for i, part in enumerate(parts):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep:
            raise DmarcRecordError(f"not a tag: {part!r}")
        if i == 0 and (name != "v" or value != "DMARC1"):
            raise DmarcRecordError("v=DMARC1 must come first")  # §6.4: v is first, exact
        tags.setdefault(name, value)  # first wins; §6.3 ignores unknown tags

    def uris(name: str) -> tuple[str, ...]:
        values = [u.strip() for u in tags.get(name, "").split(",") if u.strip()]
        return tuple(u for u in values if _URI_RE.fullmatch(u))

    rua, ruf = uris("rua"), uris("ruf")
    try:
        p = Policy(tags.get("p", "").lower())
        sp = Policy(tags["sp"].lower()) if "sp" in tags else None
    except ValueError:
        if not rua:
            raise DmarcRecordError("missing or invalid p= or sp=") from None
        p, sp = Policy.NONE, None  # §6.6.3 step 6
    # §6.3: "Syntax errors in the remainder of the record SHOULD be discarded in favor of
    # default values": a bad pct= or adkim= does not void the policy.
    pct = tags.get("pct", "100")
    pct = pct if pct.isdigit() and 0 <= int(pct) <= 100 else "100"
    alignment = {}
    for name in ("adkim", "aspf"):
        value = tags.get(name, "r").lower()
        alignment[name] = value if value in ("r", "s") else "r"
    fo = tuple(x.strip() for x in tags.get("fo", "0").split(":") if x.strip()) or ("0",)
    return DmarcRecord(p=p, sp=sp, pct=int(pct), adkim=alignment["adkim"],
                       aspf=alignment["aspf"], rua=rua, ruf=ruf, fo=fo, raw=text)


@functools.cache
def _public_suffix_list() -> PublicSuffixList:
    # Loaded once (≈70 ms) and never changed: immutable shared data, not mutable state.
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label; the name itself when it is a public
    suffix (or unknown TLD alone)."""
    name = domain.rstrip(".").lower()
    return _public_suffix_list().privatesuffix(name) or name


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    a, b = identifier.rstrip(".").lower(), from_domain.rstrip(".").lower()
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def from_domains(message: bytes) -> list[str]:
    """Every domain in every From field (normally exactly one), A-label, lower case."""
    header, _ = split_header(message)
    domains: list[str] = []
    for value in get_all_fields(header, "from"):
        # Parsed raw: RFC 2047 words are display names, never addresses (decoding first
        # would let "=?utf-8?q?=3Cx=40evil=3E?=" smuggle in a second address).
        text = unfold(value).decode("utf-8", "replace")
        for addr in parse_address_list(text) or []:
            host = (addr[3] or "").strip()
            if not host or host.startswith("["):  # no domain, or an address literal
                continue
            try:
                name = ascii_name(host)
            except UnicodeError:
                continue
            if name and name not in domains:
                domains.append(name)
    return domains


def _listed(domain: str, names: Iterable[str]) -> bool:
    d = domain.rstrip(".").lower()
    return any(d == n or d.endswith("." + n) for n in (x.rstrip(".").lower() for x in names))


@dataclass(frozen=True, slots=True)
class DmarcPolicyOptions:
    """Local policy (RFC 7489 §7.2 overrides)."""

    always_accept_from: tuple[str, ...] = ()  # domains (and subdomains) delivered regardless
    never_accept_from: tuple[str, ...] = ()  # domains (and subdomains) always refused
    trusted_arc_sealers: tuple[str, ...] = ()  # a failing message they sealed is delivered


class DmarcEvaluator:
    def __init__(self, resolver: Resolver, options: DmarcPolicyOptions | None = None,
                 rng: Callable[[], float] | None = None) -> None:
        self.resolver = resolver
        self.options = options or DmarcPolicyOptions()
        self._random = rng or random.random  # injectable: pct= sampling in tests

    async def discover(self, from_domain: str) -> tuple[DmarcRecord | None, str, str]:
        """(record, domain it was found at, problem) — §6.6.3. Raises DnsTemporaryError."""
        org = organizational_domain(from_domain)
        for domain in dict.fromkeys([from_domain, org]):
            # Step 3: records that do not start with v=DMARC1 are not DMARC records.
            texts = [t for t in await self.resolver.txt(f"_dmarc.{domain}")
                     if re.match(r"v\s*=\s*DMARC1\s*(;|$)", t.strip())]
            if not texts:
                continue  # step 3: none here → the organisational domain
            if len(texts) > 1:  # step 4: discovery ends, no policy applies
                return None, domain, f"more than one DMARC record at _dmarc.{domain}"
            try:
                return parse_record(texts[0]), domain, ""
            except DmarcRecordError as exc:  # step 6: no usable p= and no rua=
                return None, domain, f"invalid DMARC record at _dmarc.{domain}: {exc}"
        return None, "", ""

    async def evaluate(self, from_domain: str, spf: SpfOutcome | None,
                       dkim: Sequence[DkimResult], arc: ArcOutcome | None = None
                       ) -> DmarcOutcome:
        org = organizational_domain(from_domain)
        base = DmarcOutcome(DmarcResult.NONE, from_domain, org)
        try:
            record, where, problem = await self.discover(from_domain)
        except DnsTemporaryError as exc:
            outcome = replace(base, result=DmarcResult.TEMPERROR, reason=str(exc)[:100])
            return self._override(outcome, arc)
        if record is None:
            result = DmarcResult.PERMERROR if problem else DmarcResult.NONE
            return self._override(replace(base, result=result, reason=problem), arc)
        subdomain = where != from_domain
        policy = record.sp if subdomain and record.sp is not None else record.p
        spf_ok = (spf is not None and spf.result is SpfResult.PASS
                  and aligned(spf.domain, from_domain, record.aspf))
        dkim_ok = any(r.result is DkimStatus.PASS and aligned(r.domain, from_domain,
                                                              record.adkim) for r in dkim)
        passed = spf_ok or dkim_ok
        disposition = Policy.NONE
        sampled_out = False
        if not passed:
            disposition = policy
            if record.pct < 100 and self._random() * 100 >= record.pct:
                disposition, sampled_out = policy.milder, True  # §6.6.4
        outcome = DmarcOutcome(
            DmarcResult.PASS if passed else DmarcResult.FAIL, from_domain, org, policy,
            disposition, record, where, spf_ok, dkim_ok, sampled_out,
            override="sampled_out" if sampled_out else "")
        return self._override(outcome, arc)

    def _override(self, outcome: DmarcOutcome, arc: ArcOutcome | None) -> DmarcOutcome:
        opts = self.options
        if _listed(outcome.from_domain, opts.never_accept_from):
            return replace(outcome, disposition=Policy.REJECT, override="local_policy",
                            reason="sender domain refused by local policy")
        if outcome.disposition is Policy.NONE:
            return outcome
        if _listed(outcome.from_domain, opts.always_accept_from):
            return replace(outcome, disposition=Policy.NONE, override="local_policy")
        if (arc is not None and arc.result is ArcResult.PASS and arc.last_sealer
                and _listed(arc.last_sealer, opts.trusted_arc_sealers)):
            return replace(outcome, disposition=Policy.NONE, override="trusted_forwarder")
        return outcome

    async def check(self, message: bytes, spf: SpfOutcome | None, dkim: Sequence[DkimResult],
                    arc: ArcOutcome | None = None) -> DmarcOutcome:
        """The message's DMARC outcome. With several From domains (RFC 5322 forbids it, a
        forger might try) each is evaluated and the strictest outcome wins (§6.6.1)."""
        domains = from_domains(message)
        if not domains:
            outcome = DmarcOutcome(DmarcResult.PERMERROR, "", "",
                                   reason="no usable From domain")
            return self._override(outcome, arc)
        outcomes = [await self.evaluate(d, spf, dkim, arc) for d in domains]
        return max(outcomes, key=_strictness)


def _strictness(outcome: DmarcOutcome) -> tuple[int, int]:
    return (_SEVERITY[outcome.disposition], outcome.result is DmarcResult.FAIL)


async def check_dmarc(message: bytes, spf: SpfOutcome | None, dkim: Sequence[DkimResult],
                      resolver: Resolver, *, options: DmarcPolicyOptions | None = None,
                      arc: ArcOutcome | None = None,
                      rng: Callable[[], float] | None = None) -> DmarcOutcome:
    return await DmarcEvaluator(resolver, options, rng).check(message, spf, dkim, arc)


__all__ = ["DmarcEvaluator", "DmarcOutcome", "DmarcPolicyOptions", "DmarcRecord",
           "DmarcRecordError", "DmarcResult", "Policy", "aligned", "check_dmarc",
           "from_domains", "organizational_domain", "parse_record"]
