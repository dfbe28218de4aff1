"""DNS for mail routing: the `Resolver` seam and its dnspython implementation (DESIGN.md L2).

Outbound delivery needs MX lookups with the RFC 5321 §5.1 rules (preference order, random
order among equal preferences, the implicit MX when a domain has none) and RFC 7505 null MX;
SPF/DKIM/DMARC need TXT records and the queue needs A/AAAA addresses. Everything above this
module talks to the `Resolver` protocol, so tests and other implementations can stand in.

Failures are split the way mail needs them: a name that definitively does not exist is a
permanent answer (bounce), anything that may fix itself (SERVFAIL, REFUSED, timeouts) is
temporary (retry later). `mx()` reports this as a `DnsStatus` value; `addresses()` and
`txt()` return the records (an empty list means "no such records") and raise
`DnsTemporaryError` when no answer could be had.

Names with U-labels are queried in A-label form (IDNA2008-style Punycode, the same
conversion `kittiwake.address` uses, so "straße.de" is never looked up as "strasse.de").
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import random
import unicodedata
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from kittiwake.address import Address


class DnsStatus(enum.Enum):
    """The outcome of an MX lookup, as the queue needs it (RFC 5321 §5.1, RFC 7505)."""

    OK = "ok"  # hosts holds the targets (or the domain itself: implicit MX)
    NULL_MX = "null-mx"  # RFC 7505: the domain says it accepts no mail → bounce at once
    NXDOMAIN = "nxdomain"  # the domain does not exist → bounce
    TEMPFAIL = "tempfail"  # SERVFAIL, REFUSED, timeout … → try again later


@dataclass(frozen=True, slots=True)
class MxResult:
    """Hosts to try, in order, for one mail domain.

    `hosts` are ASCII (A-label) host names; with `implicit` the single host is the domain
    itself (it has no MX records, RFC 5321 §5.1). `detail` explains a failure for logs and
    bounce texts.
    """

    hosts: tuple[str, ...]
    status: DnsStatus
    implicit: bool = False
    detail: str = ""


class DnsTemporaryError(Exception):
    """No answer could be had (SERVFAIL, timeout, …); the caller should retry later."""


class Resolver(Protocol):
    """What mail code needs from DNS. Implementations never raise for a missing name."""

    async def mx(self, domain: str) -> MxResult: ...

    async def addresses(self, host: str) -> list[str]:
        """A then AAAA addresses of `host`; [] when it has none; DnsTemporaryError."""
        ...

    async def txt(self, name: str) -> list[str]:
        """Each TXT record's strings joined (RFC 7208 §3.3); [] when none; DnsTemporaryError."""
        ...


@dataclass(frozen=True, slots=True)
class DnsSettings:
    nameservers: tuple[str, ...] = ()  # () → the system's (/etc/resolv.conf)
    port: int = 53
    timeout: float = 5.0  # seconds for one whole lookup, retries included


def ascii_name(name: str) -> str:
    """The A-label form of a DNS name, without a trailing dot.

    Underscore labels (`_dmarc`, `sel._domainkey`) are left alone: they are not host names,
    so they are not validated as such here.
    """
    name = name.rstrip(".")
    if name.isascii():
        return name.lower()
    # Address.ascii_domain converts each non-ASCII label to an A-label (RFC 5891 §4.4);
    # NFC and lower case first, as IDNA2008 U-labels must be (RFC 5891 §5.2).
    return Address("", unicodedata.normalize("NFC", name).lower()).ascii_domain


def order_mx(records: list[tuple[int, str]], rng: random.Random) -> MxResult:
    """Order MX (preference, target) records for delivery.

    RFC 5321 §5.1: lowest preference first, and hosts with equal preference in random order
    to spread the load. RFC 7505 §3: a single MX with preference 0 and the root as target is
    a null MX. Null targets mixed with real ones violate RFC 7505 §3 (the null MX MUST be the
    only one); they are skipped and the real targets used.
    """
    targets = [(pref, host.rstrip(".").lower()) for pref, host in records]
    real = [(pref, host) for pref, host in targets if host != ""]
    if not real:
        return MxResult((), DnsStatus.NULL_MX, detail="domain does not accept mail (null MX)")
    shuffled = real[:]
    rng.shuffle(shuffled)
    shuffled.sort(key=lambda rec: rec[0])  # stable: the shuffle survives among equals
    hosts: list[str] = []
    for _, host in shuffled:
        if host not in hosts:  # the same host under two preferences: try it once
            hosts.append(host)
    return MxResult(tuple(hosts), DnsStatus.OK)


class DnsResolver:
    """`Resolver` on dnspython's asyncio resolver, against the configured nameservers."""

    def __init__(self, settings: DnsSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        if settings.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = list(settings.nameservers)
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.port = settings.port
        resolver.timeout = settings.timeout
        resolver.lifetime = settings.timeout
        self._resolver = resolver

    async def mx(self, domain: str) -> MxResult:
        try:
            name = ascii_name(domain)
        except UnicodeError:
            return MxResult((), DnsStatus.NXDOMAIN, detail=f"{domain!r}: invalid domain name")
        try:
            answer = await self._query(name, dns.rdatatype.MX)
        except dns.resolver.NXDOMAIN:
            return MxResult((), DnsStatus.NXDOMAIN, detail=f"{name}: domain not found")
        except dns.resolver.NoAnswer:
            # RFC 5321 §5.1: no MX, but the name exists → it is its own (implicit) MX. Whether
            # it has addresses is for the caller to find out when it connects.
            return MxResult((name,), DnsStatus.OK, implicit=True)
        except _TEMPORARY as exc:
            return MxResult((), DnsStatus.TEMPFAIL, detail=f"{name}: {_describe(exc)}")
        records = [(int(rr.preference), rr.exchange.to_text(omit_final_dot=True))
                   for rr in answer]
        # The root name prints as "" with omit_final_dot … or "." with it kept; normalise.
        records = [(pref, "" if host in ("", ".") else host) for pref, host in records]
        return order_mx(records, self._rng)

    async def addresses(self, host: str) -> list[str]:
        literal = _ip_literal(host)
        if literal is not None:
            return [literal]
        try:
            name = ascii_name(host)
        except UnicodeError:
            return []
        results = await asyncio.gather(self._addresses(name, dns.rdatatype.A),
                                       self._addresses(name, dns.rdatatype.AAAA))
        found = [addr for addrs in results if isinstance(addrs, list) for addr in addrs]
        if found:
            return found  # one family answering is enough to try delivery
        errors = [res for res in results if isinstance(res, DnsTemporaryError)]
        if errors:
            raise errors[0]
        return []

    async def txt(self, name: str) -> list[str]:
        try:
            qname = ascii_name(name)
        except UnicodeError:
            return []
        try:
            answer = await self._query(qname, dns.rdatatype.TXT)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except _TEMPORARY as exc:
            raise DnsTemporaryError(f"{qname} TXT: {_describe(exc)}") from None
        # RFC 7208 §3.3 / RFC 6376 §3.6.2.2: a record's strings are concatenated without
        # spaces; that is how >255-octet SPF and DKIM records are published.
        return [b"".join(rr.strings).decode("utf-8", "replace") for rr in answer]

    async def _addresses(self, name: str, rdtype: dns.rdatatype.RdataType
                         ) -> list[str] | DnsTemporaryError:
        try:
            answer = await self._query(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except _TEMPORARY as exc:
            return DnsTemporaryError(f"{name} {rdtype.name}: {_describe(exc)}")
        return [rr.address for rr in answer]

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer:
        # Absolute name and no search list: "example" must never become "example.corp".
        try:
            qname = dns.name.from_text(name + ".")
        except (dns.exception.SyntaxError, dns.name.NameTooLong):  # empty/long label or name
            raise dns.resolver.NXDOMAIN from None  # a name that cannot exist
        return await self._resolver.resolve(qname, rdtype, search=False,
                                            lifetime=self.settings.timeout)


# dnspython raises NoNameservers for SERVFAIL/REFUSED from every server, LifetimeTimeout
# when time runs out, and other DNSException subclasses for malformed answers, YXDOMAIN
# (a DNAME too long) etc.; none of them says the name does not exist.
_TEMPORARY = (dns.exception.DNSException, OSError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, dns.resolver.LifetimeTimeout):
        return "DNS timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "DNS server failure"
    return f"DNS error ({type(exc).__name__})"


def _ip_literal(host: str) -> str | None:
    """`host` as an IP address if it is one ("1.2.3.4", "[1.2.3.4]", "[IPv6:::1]")."""
    text = host
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if text[:5].lower() == "ipv6:":
            text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
