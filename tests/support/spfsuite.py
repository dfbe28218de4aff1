"""The RFC 7208 test suite as zone files for a real DNS server.

`rfc7208-tests.yml` (next to this file; the openspf.org suite, release 2014.04, shipped in
pyspf's source distribution, licence in rfc7208-tests.LICENSE) holds scenarios: DNS data
("zonedata") and test cases (client IP, MAIL FROM, HELO → expected result(s), sometimes an
expected explanation). This module turns a set of scenarios into NSD zones and groups the
scenarios so that one NSD can serve several at once.

Conversion, following the suite's reference driver (pyspf's test/testspf.py):

- SPF (type 99) records are also published as TXT unless the name has an explicit TXT
  record (the suite relies on that "auto-magic duplication"); `TXT: NONE` suppresses it.
- A TXT with no strings (`SPF: []`, illegal on the wire) becomes one empty string, which
  reads the same once strings are concatenated (RFC 7208 §3.3).
- Names and strings are written byte for byte with RFC 1035 \\DDD escapes, so names with
  spaces, colons or slashes exist exactly as the macro tests expect.
- TIMEOUT: the reference driver raises a DNS timeout for every query type the name has
  no records of. NSD cannot time out on purpose, but it answers SERVFAIL for a zone it is
  configured for and could not load, and a stub resolver reports that as a lookup failure
  just like a timeout (both are temperror in RFC 7208 §2.6.6). So a TIMEOUT name becomes
  its own deliberately broken zone; names below it that the scenario defines get their
  own (good) zones so they still resolve. One case cannot be emulated per type: a name
  with a TXT record *and* TIMEOUT (`spftimeout.example.net`) times out only for the other
  types, and the only other type there is SPF (99), which an RFC 7208 checker never
  queries (§3.1, §4.4); such a name is served with its records and no timeout.
- Every other name goes into one root zone ("."), so NSD is authoritative for the whole
  name space and a name nobody defined is NXDOMAIN, as the real DNS would answer (for
  "[1.2.3.5]" or a macro-expanded single label too), never REFUSED.

Grouping: scenarios share an NSD when none of them defines a name another one defines or
mentions (in its records, MAIL FROM or HELO), and no TIMEOUT zone of one covers a name of
another. A name one scenario expects not to exist therefore never exists because of
another.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SUITE = Path(__file__).with_name("rfc7208-tests.yml")


@dataclass(frozen=True)
class SpfCase:
    id: str
    scenario: str
    spec: str
    helo: str
    host: str
    mailfrom: str
    results: tuple[str, ...]  # the first is preferred, any is acceptable
    explanation: str | None


@dataclass
class Scenario:
    index: int
    description: str
    records: dict[str, list[tuple[str, Any]]]  # name → [(type, value)] as published
    timeouts: set[str]  # names answered with SERVFAIL (own broken zone)
    cases: list[SpfCase]
    mentioned: set[str] = field(default_factory=set)  # names its inputs and records refer to

    @property
    def names(self) -> set[str]:
        return set(self.records) | self.timeouts


def load_scenarios(path: Path = SUITE) -> list[Scenario]:
    with path.open("rb") as f:
        docs = list(yaml.safe_load_all(f))
    return [_scenario(i, doc) for i, doc in enumerate(docs)]


def _scenario(index: int, doc: dict[str, Any]) -> Scenario:
    records: dict[str, list[tuple[str, Any]]] = {}
    timeouts: set[str] = set()
    for raw_name, entries in doc["zonedata"].items():
        name = str(raw_name).lower().rstrip(".")
        rows, timeout = _rdata(entries)
        has_txt = any(t == "TXT" for t, _ in rows)
        if timeout and not has_txt:
            timeouts.add(name)  # the name fails for every type: a broken zone
            continue
        if timeout:
            other = {t for t, _ in rows} - {"TXT", "SPF"}
            assert not other, f"{name}: cannot emulate a per-type timeout for {other}"
        records[name] = rows
    cases = []
    for case_id, data in doc["tests"].items():
        result = data["result"]
        results = tuple(result) if isinstance(result, list) else (result,)
        cases.append(SpfCase(
            id=str(case_id), scenario=doc["description"], spec=str(data.get("spec", "")),
            helo=str(data["helo"]), host=str(data["host"]), mailfrom=str(data["mailfrom"]),
            results=results, explanation=data.get("explanation")))
    scenario = Scenario(index, doc["description"], records, timeouts, cases)
    scenario.mentioned = _mentioned(scenario)
    return scenario


def _rdata(entries: list[Any]) -> tuple[list[tuple[str, Any]], bool]:
    """testspf.getrdata(): SPF → TXT duplication unless an explicit TXT exists."""
    rows: list[tuple[str, Any]] = []
    generated: list[tuple[str, Any]] = []
    generate = True
    timeout = False
    for entry in entries:
        if entry == "TIMEOUT":
            timeout = True
            continue
        for rtype, value in entry.items():
            if rtype in ("TXT", "SPF") and isinstance(value, str):
                value = (value,)
            if rtype == "TXT":
                generate = False
            elif rtype == "SPF" and generate:
                generated.append(("TXT", value))
            if value != ("NONE",):
                rows.append((rtype, value))
    if generate:
        rows.extend(generated)
    return rows, timeout


_DOMAINISH = re.compile(r"[A-Za-z0-9_%{}.\-]+\.[A-Za-z][A-Za-z0-9-]*")


def _mentioned(scenario: Scenario) -> set[str]:
    names = set(scenario.names)
    for case in scenario.cases:
        names.add(case.helo.lower())
        names.add(case.mailfrom.rpartition("@")[2].lower())
    for rows in scenario.records.values():
        for rtype, value in rows:
            texts = [v if isinstance(v, str) else str(v) for v in
                     (value if isinstance(value, list | tuple) else [value])]
            if rtype in ("MX", "PTR", "CNAME", "TXT", "SPF"):
                for text in texts:
                    names.update(m.lower().strip(".") for m in _DOMAINISH.findall(text))
    return {n for n in names if n}


def _covers(ancestor: str, name: str) -> bool:
    return name == ancestor or name.endswith("." + ancestor)


def conflict(a: Scenario, b: Scenario) -> bool:
    if a.names & b.mentioned or b.names & a.mentioned:
        return True
    for x, y in ((a, b), (b, a)):
        for broken in x.timeouts:
            if any(_covers(broken, n) for n in y.mentioned):
                return True
    return False


def group_scenarios(scenarios: Iterable[Scenario]) -> list[list[Scenario]]:
    """First-fit grouping of mutually compatible scenarios (few NSD restarts)."""
    groups: list[list[Scenario]] = []
    for scenario in scenarios:
        for group in groups:
            if not any(conflict(scenario, other) for other in group):
                group.append(scenario)
                break
        else:
            groups.append([scenario])
    return groups


# --- zone text -----------------------------------------------------------------------------

READY_ZONE = "zz-ready.invalid"  # DnsServer waits on its first zone; the root cannot be it


def zones_for(scenarios: Iterable[Scenario]) -> dict[str, str]:
    """origin → zone text for NSD: the root zone, plus the TIMEOUT zones and their children."""
    records: dict[str, list[tuple[str, Any]]] = {}
    timeouts: set[str] = set()
    for scenario in scenarios:
        for name, rows in scenario.records.items():
            records.setdefault(name, []).extend(rows)
        timeouts |= scenario.timeouts
    zones: dict[str, list[str]] = {READY_ZONE: [], ".": [
        "@ IN SOA ns.root.invalid. hostmaster.root.invalid. ( 1 3600 600 86400 300 )",
        "@ IN NS ns.root.invalid."]}
    for name, rows in records.items():
        # Below a broken zone a name needs a zone of its own to resolve at all.
        origin = name if any(_covers(broken, name) for broken in timeouts) else "."
        zones.setdefault(origin, []).extend(_record_line(name, t, v) for t, v in rows)
    out = {origin: "\n".join(lines) + "\n" for origin, lines in zones.items()}
    # A zone file NSD cannot parse: the zone is configured but not loaded, and NSD answers
    # SERVFAIL for every name in it.
    for broken in sorted(timeouts):
        out[broken] = '@ IN TXT "unterminated string: this zone deliberately fails to load\n'
    return out


def _escape_label(label: str) -> str:
    out = []
    for byte in label.encode("utf-8"):
        if chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in "-_"):
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def zone_name(name: str) -> str:
    """An absolute owner/target name in zone-file syntax."""
    name = name.rstrip(".")
    if not name:
        return "."
    return ".".join(_escape_label(label) for label in name.split(".")) + "."


def _character_strings(strings: Iterable[Any]) -> str:
    parts = []
    for s in strings:
        raw = s.encode("utf-8") if isinstance(s, str) else bytes(s)
        chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
        for chunk in chunks:
            text = "".join(
                "\\" + chr(b) if b in (0x22, 0x5C) else chr(b) if 0x20 <= b < 0x7F
                else f"\\{b:03d}" for b in chunk)
            parts.append(f'"{text}"')
    return " ".join(parts) or '""'


def _record_line(name: str, rtype: str, value: Any) -> str:
    owner = zone_name(name)
    if rtype in ("TXT", "SPF"):
        return f"{owner} IN {rtype} {_character_strings(value)}"
    if rtype == "A":
        return f"{owner} IN A {ipaddress.IPv4Address(value)}"
    if rtype == "AAAA":
        return f"{owner} IN AAAA {ipaddress.IPv6Address(value)}"
    if rtype == "MX":
        pref, host = value
        return f"{owner} IN MX {int(pref)} {zone_name(str(host))}"
    if rtype in ("PTR", "CNAME"):
        return f"{owner} IN {rtype} {zone_name(str(value))}"
    raise ValueError(f"unsupported record type {rtype} at {name}")


def all_cases(groups: list[list[Scenario]]) -> Iterator[tuple[int, SpfCase]]:
    for number, group in enumerate(groups):
        for scenario in group:
            for case in scenario.cases:
                yield number, case
