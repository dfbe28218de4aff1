"""The DNS records a mail domain publishes for Kittiwake (`kittiwake dns DOMAIN`), and a
check of what DNS serves now (`kittiwake dns DOMAIN --check`). Layer L2.

Records, as zone-file lines:
- MX to the server's hostname (RFC 5321 §5.1) and, when its addresses are known, A/AAAA;
- SPF (RFC 7208): `v=spf1 [ip4:… ip6:…] mx -all`: only this server sends for the domain;
- one TXT per DKIM selector (RFC 6376 §3.6.2.1): every key, active or not yet or no longer
  active, so rotation and mail in transit both verify;
- DMARC (RFC 7489 §6.3) `p=quarantine` with aggregate reports (rua) to a local address: a
  safe start that already protects the domain; plus the RFC 7489 §7.1 authorisation
  record when reports go to another domain;
- MTA-STS (RFC 8461 §3.1) and TLS-RPT (RFC 8460 §3) stubs; the MTA-STS policy file itself
  must be served over HTTPS at mta-sts.DOMAIN (`mta_sts_policy` gives its text);
- SRV records for mail client autoconfiguration (RFC 6186, RFC 8314 §5.1).

The check compares by meaning, not by spelling: tag order, case and spacing in TXT
records do not matter, MX preference and SRV priority/weight do not matter, and extra
unrelated records are fine; two SPF or DMARC records are not (receivers then ignore both).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from kittiwake.dns import DnsSettings, DnsTemporaryError, ascii_name

TTL = 3600

# RFC 6186 §3 (and RFC 8314 §5.1 for submissions): service label → standard port.
DEFAULT_SERVICES: Mapping[str, int | None] = {
    "submissions": 465, "submission": 587, "imaps": 993, "imap": 143,
    "pop3s": 995, "pop3": 110}


@dataclass(frozen=True, slots=True)
class Record:
    name: str  # owner, A-label, without the trailing dot
    rtype: str  # MX TXT SRV A AAAA
    value: str  # MX "10 host", SRV "0 1 993 host", TXT the text, A/AAAA the address
    purpose: str  # for people: "SPF", "DKIM selector rsa20250101", …
    kind: str  # how `check` compares: mx address spf dkim dmarc report-auth mta-sts tls-rpt srv

    def zone_line(self, ttl: int = TTL) -> str:
        if self.rtype == "TXT":
            data = _txt_rdata(self.value)
        elif self.rtype in ("MX", "SRV"):
            *numbers, target = self.value.split()
            data = " ".join([*numbers, target.rstrip(".") + "."])
        else:
            data = self.value
        return f"{self.name}. {ttl} IN {self.rtype} {data}"


def _txt_rdata(text: str) -> str:
    """RFC 1035 §3.3.14: <=255-octet character-strings, quoted, \\ and " escaped."""
    raw = text.encode("utf-8")
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    quoted = []
    for chunk in chunks:
        s = "".join("\\" + chr(b) if b in (0x22, 0x5C) else chr(b) if 0x20 <= b < 0x7F
                    else f"\\{b:03d}" for b in chunk)
        quoted.append(f'"{s}"')
    return quoted[0] if len(quoted) == 1 else "( " + " ".join(quoted) + " )"


def mta_sts_policy(hostname: str, mode: str = "testing", max_age: int = 604800) -> str:
    """The RFC 8461 §3.2 policy file for https://mta-sts.DOMAIN/.well-known/mta-sts.txt."""
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {hostname}\r\nmax_age: {max_age}\r\n"


def records_for(domain: str, hostname: str, server_ips: Sequence[str] = (),
                dkim_selectors_txt: Iterable[tuple[str, str]] = (),
                report_address: str | None = None, *,
                services: Mapping[str, int | None] = DEFAULT_SERVICES,
                mta_sts_mode: str = "testing") -> list[Record]:
    """Everything to publish for `domain` served by `hostname`.

    `dkim_selectors_txt`: (record name or bare selector, TXT text) pairs, as
    `DkimKeyStore.dns_records` gives them. `report_address` receives DMARC and TLS
    reports (default postmaster@domain). `services`: client-facing port per RFC 6186
    service, None for "not offered here" (a "0 0 0 ." record, RFC 6186 §3.4).
    """
    d = ascii_name(domain)
    host = ascii_name(hostname)
    rua = report_address or f"postmaster@{d}"
    out = [Record(d, "MX", f"10 {host}", "MX: mail for the domain goes to this server", "mx")]
    ip4: list[str] = []
    ip6: list[str] = []
    for text in server_ips:
        ip = ipaddress.ip_address(text)
        (ip4 if ip.version == 4 else ip6).append(str(ip))
        out.append(Record(host, "A" if ip.version == 4 else "AAAA", str(ip),
                          "address of the mail server", "address"))
    terms = [f"ip4:{a}" for a in ip4] + [f"ip6:{a}" for a in ip6]
    out.append(Record(d, "TXT", " ".join(["v=spf1", *terms, "mx", "-all"]),
                      "SPF: only this server sends mail for the domain", "spf"))
    for name, text in dkim_selectors_txt:
        owner = name if "._domainkey." in name else f"{name}._domainkey.{d}"
        selector = owner.split("._domainkey.", 1)[0]
        out.append(Record(ascii_name(owner), "TXT", text, f"DKIM selector {selector}", "dkim"))
    out.append(Record(f"_dmarc.{d}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:{rua}",
                      "DMARC: failing mail goes to spam; aggregate reports to " + rua,
                      "dmarc"))
    report_domain = ascii_name(rua.rpartition("@")[2])
    if report_domain != d:
        # RFC 7489 §7.1: the report domain must agree to receive the reports.
        out.append(Record(f"{d}._report._dmarc.{report_domain}", "TXT", "v=DMARC1",
                          f"DMARC: {report_domain} accepts reports for {d}", "report-auth"))
    policy_id = hashlib.sha256(mta_sts_policy(host, mta_sts_mode).encode()).hexdigest()[:16]
    out.append(Record(f"_mta-sts.{d}", "TXT", f"v=STSv1; id={policy_id}",
                      f"MTA-STS (policy file at https://mta-sts.{d}/.well-known/mta-sts.txt)",
                      "mta-sts"))
    out.append(Record(f"_smtp._tls.{d}", "TXT", f"v=TLSRPTv1; rua=mailto:{rua}",
                      "TLS-RPT: TLS failure reports", "tls-rpt"))
    for service, port in services.items():
        value = f"0 1 {port} {host}" if port else "0 0 0 ."
        out.append(Record(f"_{service}._tcp.{d}", "SRV", value,
                          f"client autoconfiguration: {service}", "srv"))
    return out


def zone_text(records: Iterable[Record], ttl: int = TTL) -> str:
    """Zone-file lines, each after a comment saying what it is for."""
    lines = []
    for record in records:
        lines.append(f"; {record.purpose}")
        lines.append(record.zone_line(ttl))
    return "\n".join(lines) + "\n"


# --- checking -----------------------------------------------------------------------------

class CheckStatus(enum.Enum):
    OK = "ok"
    MISSING = "missing"
    DIFFERENT = "different"
    ERROR = "error"  # DNS did not answer: unknown


@dataclass(frozen=True, slots=True)
class CheckResult:
    record: Record
    status: CheckStatus
    found: tuple[str, ...]
    message: str

    @property
    def ok(self) -> bool:
        return self.status is CheckStatus.OK


class RecordResolver(Protocol):
    async def records(self, name: str, rtype: str) -> list[str]:
        """Normalised rdata (see `DnsRecordResolver`); [] when none; DnsTemporaryError."""
        ...


class DnsRecordResolver:
    """`RecordResolver` on dnspython, against the configured nameservers.

    Normalised rdata: TXT strings joined (RFC 7208 §3.3), MX "pref host", SRV "prio
    weight port host", hosts lower case without the trailing dot, addresses as text.
    """

    def __init__(self, settings: DnsSettings) -> None:
        if settings.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = list(settings.nameservers)
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.port = settings.port
        resolver.timeout = resolver.lifetime = settings.timeout
        self._resolver = resolver

    async def records(self, name: str, rtype: str) -> list[str]:
        qname = dns.name.from_text(ascii_name(name) + ".")
        try:
            answer = await self._resolver.resolve(qname, rtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTemporaryError(f"{name} {rtype}: {type(exc).__name__}") from None
        out = []
        for rr in answer:
            if rr.rdtype == dns.rdatatype.TXT:
                out.append(b"".join(rr.strings).decode("utf-8", "replace"))
            elif rr.rdtype == dns.rdatatype.MX:
                out.append(f"{rr.preference} {_host(rr.exchange)}")
            elif rr.rdtype == dns.rdatatype.SRV:
                out.append(f"{rr.priority} {rr.weight} {rr.port} {_host(rr.target)}")
            else:
                out.append(rr.to_text())
        return out


def _host(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower() or "."


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = " ".join(value.split())
    return tags


def _compare(record: Record, found: list[str]) -> tuple[CheckStatus, str]:
    kind, want = record.kind, record.value
    if kind in ("mx", "srv"):
        *_, target = want.split()
        matching = [f for f in found if f.split()[-1].rstrip(".").lower() == target
                    and (kind == "mx" or f.split()[2] == want.split()[2])]
        if matching:
            return CheckStatus.OK, ""
        return (CheckStatus.DIFFERENT if found else CheckStatus.MISSING,
                f"expected {want}")
    if kind == "address":
        return (CheckStatus.OK, "") if want in found else (
            CheckStatus.DIFFERENT if found else CheckStatus.MISSING, f"expected {want}")
    prefix = {"spf": "v=spf1", "dkim": "", "dmarc": "v=dmarc1", "report-auth": "v=dmarc1",
              "mta-sts": "v=stsv1", "tls-rpt": "v=tlsrptv1"}[kind]
    candidates = [f for f in found if f.strip().lower().startswith(prefix)]
    if kind == "dkim":
        candidates = [f for f in found if "p" in _tags(f)]
    if not candidates:
        return CheckStatus.MISSING, ""
    if len(candidates) > 1 and kind in ("spf", "dmarc", "mta-sts", "tls-rpt"):
        return CheckStatus.DIFFERENT, f"{len(candidates)} records where one is allowed"
    if kind == "spf":
        same = sorted(want.lower().split()) == sorted(candidates[0].lower().split())
        return (CheckStatus.OK, "") if same else (CheckStatus.DIFFERENT, f"expected {want}")
    if kind == "dkim":
        key = "".join(_tags(want)["p"].split())
        if any("".join(_tags(c).get("p", "").split()) == key for c in candidates):
            return CheckStatus.OK, ""
        return CheckStatus.DIFFERENT, "publishes another key"
    if kind in ("report-auth", "mta-sts"):
        return CheckStatus.OK, ""  # presence is the point; the id changes with the policy
    want_tags, got_tags = _tags(want), _tags(candidates[0])
    if {k: v.lower() for k, v in want_tags.items()} == {k: v.lower() for k, v in
                                                        got_tags.items()}:
        return CheckStatus.OK, ""
    return CheckStatus.DIFFERENT, f"expected {want}"


async def _check_one(record: Record, resolver: RecordResolver) -> CheckResult:
    where = f"{record.purpose} ({record.name} {record.rtype})"
    try:
        found = await resolver.records(record.name, record.rtype)
    except DnsTemporaryError as exc:
        return CheckResult(record, CheckStatus.ERROR, (), f"{where}: DNS lookup failed: {exc}")
    status, detail = _compare(record, found)
    shown = "; ".join(repr(f) for f in found) or "nothing"
    if status is CheckStatus.OK:
        message = f"ok       {where}"
    elif status is CheckStatus.MISSING:
        message = f"MISSING  {where}: publish  {record.zone_line()}"
    else:
        message = f"WRONG    {where}: DNS has {shown}; {detail}; publish  {record.zone_line()}"
    return CheckResult(record, status, tuple(found), message)


async def check(records: Iterable[Record], resolver: RecordResolver) -> list[CheckResult]:
    """Each record against what DNS serves, all lookups at once, in the given order."""
    return list(await asyncio.gather(*(_check_one(r, resolver) for r in records)))
