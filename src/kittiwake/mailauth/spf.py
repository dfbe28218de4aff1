"""SPF, the Sender Policy Framework (RFC 7208), behind pyspf.

pyspf implements `check_host()` with the RFC's processing limits (§4.6.4: 10 DNS-querying
terms, 2 void lookups, 10 MX/PTR names, the 20-second recommendation) and macro expansion;
this module gives it a DNS driver, runs it off the event loop and turns its answer into
values: `SpfOutcome` and the `Received-SPF` field of §9.1.

DNS: pyspf looks names up through its module-level `DNSLookup` function (its own test suite
replaces that very function). We install one dispatcher, once, that hands each lookup to the
driver of the check running in the current thread or task (a `ContextVar`), so concurrent
checks against different servers never mix and a lookup made outside a kittiwake check
fails instead of silently asking the system resolver. The driver queries the configured
nameservers with dnspython and returns the whole answer section (CNAMEs included) in the
shape pyspf expects, so pyspf's own CNAME, cache and void-lookup accounting apply.

pyspf is synchronous; `SpfChecker.check` runs it with `asyncio.to_thread` so the event loop
never blocks on DNS.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import spf

from kittiwake.dns import DnsSettings

log = logging.getLogger(__name__)

# RFC 7208 §4.6.4: "MAY impose a limit … at least 20 seconds" for the whole evaluation.
DEFAULT_TIMEOUT = 20.0

# pyspf's answer rows: ((owner, type), value); value depends on the type (see _value).
LookupRow = tuple[tuple[str, str], Any]
Lookup = Callable[[str, str, float], list[LookupRow]]


class SpfResult(enum.Enum):
    """RFC 7208 §2.6 results, spelled as in Received-SPF and Authentication-Results."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    """One check_host() evaluation.

    `identity` is "mailfrom", or "helo" when the reverse-path was null and the HELO name was
    checked as postmaster@HELO (RFC 7208 §2.4); `domain` is the domain checked in either
    case, which is the identity DMARC aligns (RFC 7489 §3.1.2, §4.1). `explanation` is
    sanitised (printable ASCII): with `fail` it may come from the domain's exp= record.
    """

    result: SpfResult
    identity: str
    domain: str
    sender: str
    ip: str
    helo: str
    explanation: str = ""
    mechanism: str = ""


class SpfDnsDriver:
    """pyspf's DNS lookups against the configured nameservers (dnspython, synchronous).

    It sends plain queries (RD set, UDP with TCP fallback) and hands pyspf the answer
    section as it came, CNAMEs included, rather than using dnspython's stub resolver:
    that one turns a CNAME loop into a server failure, while RFC 7208 §5.5 wants pyspf to
    see the loop and skip the name. A server that fails (SERVFAIL, REFUSED, timeout) is
    passed over for the next; when none answers the lookup is a temperror (§2.6.6).
    Thread-safe: no state changes after construction.
    """

    def __init__(self, settings: DnsSettings) -> None:
        servers: tuple[object, ...] = settings.nameservers or _system_nameservers()
        self._servers = tuple(str(s) for s in servers)  # dnspython may hold Nameserver objects
        self._port = settings.port if settings.nameservers else 53
        self._timeout = settings.timeout

    def __call__(self, name: str, qtype: str, timeout: float) -> list[LookupRow]:
        qname = _query_name(name)
        if qname is None:
            return []  # an impossible name cannot exist: NXDOMAIN
        try:
            rdtype = dns.rdatatype.from_text(qtype)
        except dns.rdatatype.UnknownRdatatype:
            return []
        budget = min(timeout, self._timeout) if timeout and timeout > 0 else self._timeout
        response = self._exchange(dns.message.make_query(qname, rdtype), budget, name, qtype)
        if response.rcode() == dns.rcode.NXDOMAIN:
            return []
        rows: list[LookupRow] = []
        wanted = name.rstrip(".").lower()
        for rrset in response.answer:
            # pyspf keys its cache by the name it asked for; answer it under that spelling
            # (the wire form of a U-label or escaped name would not match).
            owner = wanted if rrset.name == qname else _owner_text(rrset.name)
            type_text = dns.rdatatype.to_text(rrset.rdtype)
            for rdata in rrset:
                value = _value(rrset.rdtype, rdata)
                if value is not None:
                    rows.append(((owner, type_text), value))
        return rows

    def _exchange(self, query: dns.message.Message, budget: float, name: str, qtype: str
                  ) -> dns.message.Message:
        deadline = time.monotonic() + budget
        problem = "no nameserver"
        for _round in range(2):  # UDP loss: each server gets a second chance
            for server in self._servers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise spf.TempError(f"DNS timeout for {name} {qtype}")
                try:
                    response, _ = dns.query.udp_with_fallback(
                        query, server, timeout=min(remaining, max(1.0, budget / 3)),
                        port=self._port)
                except (dns.exception.DNSException, OSError) as exc:
                    problem = _describe(exc)
                    continue
                if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return response
                problem = f"server failure ({dns.rcode.to_text(response.rcode())})"
        raise spf.TempError(f"DNS {problem} for {name} {qtype}")


def _system_nameservers() -> tuple[object, ...]:
    try:
        return tuple(dns.resolver.Resolver().nameservers)
    except dns.resolver.NoResolverConfiguration:
        return ()  # every lookup is then a temperror, which the log will show


def _query_name(name: str) -> dns.name.Name | None:
    """The DNS name pyspf means, label by label (no presentation-format escapes)."""
    labels: list[bytes] = []
    for label in name.rstrip(".").split("."):
        if label.isascii():
            raw = label.encode("ascii")
        else:
            try:
                raw = label.encode("idna")
            except UnicodeError:
                raw = label.encode("utf-8")
        labels.append(raw)
    try:
        return dns.name.Name([*labels, b""])
    except (dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong):
        return None


def _owner_text(name: dns.name.Name) -> str:
    return b".".join(name.labels[:-1]).decode("utf-8", "replace").lower()


def _value(rdtype: int, rdata: Any) -> Any:
    # The shapes of pyspf's own dnspython driver: addresses as text, MX as
    # (preference, exchange), TXT as the tuple of character-strings (bytes).
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return rdata.address
    if rdtype == dns.rdatatype.MX:
        return int(rdata.preference), rdata.exchange.to_text(omit_final_dot=True)
    if rdtype in (dns.rdatatype.PTR, dns.rdatatype.CNAME):
        return rdata.target.to_text(omit_final_dot=True)
    if rdtype in (dns.rdatatype.TXT, dns.rdatatype.SPF):
        return tuple(rdata.strings)
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timeout"
    return f"error ({type(exc).__name__})"


# The lookup function of the check running in this context; see the module docstring.
_CURRENT: contextvars.ContextVar[Lookup | None] = contextvars.ContextVar(
    "kittiwake_spf_lookup", default=None)


def _dispatch(name: str, qtype: str, strict: Any = True, timeout: float | None = None
              ) -> list[LookupRow]:
    lookup = _CURRENT.get()
    if lookup is None:
        raise spf.TempError("no DNS driver: SPF lookups go through kittiwake.mailauth.spf")
    return lookup(name, qtype, timeout or DEFAULT_TIMEOUT)


spf.DNSLookup = _dispatch


class SpfChecker:
    """check_host() for inbound mail, with its DNS driver and time budget."""

    def __init__(self, dns_settings: DnsSettings | None = None, *, receiver: str = "",
                 timeout: float = DEFAULT_TIMEOUT, lookup: Lookup | None = None,
                 default_explanation: str | None = None) -> None:
        if lookup is None:
            lookup = SpfDnsDriver(dns_settings or DnsSettings())
        self._lookup = lookup
        self.receiver = receiver
        self.timeout = timeout
        # RFC 7208 §6.2: what a fail says when the domain publishes no exp=.
        self.default_explanation = default_explanation

    async def check(self, ip: str, mail_from: str, helo: str) -> SpfOutcome:
        """RFC 7208 §2.4: the MAIL FROM identity, or postmaster@HELO for a null sender."""
        return await asyncio.to_thread(self.check_sync, ip, mail_from, helo)

    def check_sync(self, ip: str, mail_from: str, helo: str) -> SpfOutcome:
        token = _CURRENT.set(self._lookup)
        try:
            return self._evaluate(ip, mail_from, helo)
        finally:
            _CURRENT.reset(token)

    def _evaluate(self, ip: str, mail_from: str, helo: str) -> SpfOutcome:
        identity = "mailfrom" if mail_from else "helo"
        sender = mail_from or (f"postmaster@{helo}" if helo else "")
        domain = sender.rpartition("@")[2].rstrip(".").lower() if sender else ""
        try:
            query = spf.query(i=ip, s=mail_from, h=helo, receiver=self.receiver or None,
                              strict=True, querytime=self.timeout)
            if self.default_explanation is not None:
                query.set_default_explanation(self.default_explanation)
            result, _code, explanation = query.check()
            mechanism = str(getattr(query, "mechanism", "") or "")
        except spf.TempError as exc:
            result, explanation, mechanism = "temperror", str(exc), ""
        except (spf.PermError, ValueError) as exc:  # e.g. an unusable client IP
            result, explanation, mechanism = "permerror", str(exc), ""
        except Exception:  # a library bug on hostile input must not block the message
            log.exception("event=spf_internal_error ip=%s", ip)
            result, explanation, mechanism = "permerror", "internal error", ""
        return SpfOutcome(result=_RESULTS.get(result, SpfResult.PERMERROR),
                          identity=identity, domain=domain, sender=sender, ip=ip,
                          helo=helo, explanation=_printable(explanation),
                          mechanism=_printable(mechanism))


# pyspf's older names (RFC 4408) and its harsh-mode "ambiguous" mapped to RFC 7208's.
_RESULTS = {r.value: r for r in SpfResult} | {
    "unknown": SpfResult.PERMERROR, "error": SpfResult.TEMPERROR,
    "ambiguous": SpfResult.PERMERROR}


async def check_spf(ip: str, mail_from: str, helo: str, *, dns_settings: DnsSettings,
                    receiver: str = "", timeout: float = DEFAULT_TIMEOUT) -> SpfOutcome:
    """One-off check; long-lived code keeps an `SpfChecker`."""
    return await SpfChecker(dns_settings, receiver=receiver, timeout=timeout).check(
        ip, mail_from, helo)


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _printable(text: str, limit: int = 200) -> str:
    """Explanations come from the sender's DNS (exp=): never a line break or control byte."""
    return _UNPRINTABLE.sub("?", text)[:limit]


# RFC 7208 §9.1 ----------------------------------------------------------------------------

_COMMENTS = {
    SpfResult.PASS: "domain of {sender} designates {ip} as permitted sender",
    SpfResult.FAIL: "domain of {sender} does not designate {ip} as permitted sender",
    SpfResult.SOFTFAIL: "domain of transitioning {sender} does not designate {ip} as "
                        "permitted sender",
    SpfResult.NEUTRAL: "{ip} is neither permitted nor denied by domain of {sender}",
    SpfResult.NONE: "domain of {sender} does not designate permitted sender hosts",
    SpfResult.TEMPERROR: "error in processing during lookup of {sender}",
    SpfResult.PERMERROR: "permanent error in processing domain of {sender}",
}
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def _kv_value(text: str) -> str:
    """RFC 7208 §9.1 key-value-pair: value = dot-atom / quoted-string."""
    text = _printable(text, 255)
    if _DOT_ATOM.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    return _printable(text).replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def received_spf_header(outcome: SpfOutcome, receiver: str) -> bytes:
    """The `Received-SPF` field (RFC 7208 §9.1), folded, ending in CRLF.

    Example: `Received-SPF: pass (mx.example.org: domain of a@example.com designates
    192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="a@example.com";
    helo=mail.example.com; receiver=mx.example.org; identity=mailfrom;`
    """
    comment = _COMMENTS[outcome.result].format(sender=outcome.sender or "<>", ip=outcome.ip)
    # envelope-from is the reverse-path as given: empty for a null sender (§2.4).
    envelope_from = outcome.sender if outcome.identity == "mailfrom" else ""
    pairs = [("client-ip", outcome.ip), ("envelope-from", envelope_from),
             ("helo", outcome.helo), ("receiver", receiver), ("identity", outcome.identity)]
    if outcome.mechanism and outcome.result not in (SpfResult.NONE, SpfResult.PERMERROR,
                                                    SpfResult.TEMPERROR):
        pairs.append(("mechanism", outcome.mechanism))
    if outcome.result in (SpfResult.PERMERROR, SpfResult.TEMPERROR) and outcome.explanation:
        pairs.append(("problem", outcome.explanation))
    head = f"Received-SPF: {outcome.result.value} ({_comment(receiver)}: {_comment(comment)})"
    lines = [head]
    for key, value in pairs:
        if not value and key != "envelope-from":
            continue
        lines.append(f"{key}={_kv_value(value)};")
    return ("\r\n\t".join(lines) + "\r\n").encode("ascii")
