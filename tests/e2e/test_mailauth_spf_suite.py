"""The RFC 7208 test suite through Kittiwake's SPF path, against a real DNS server.

Every scenario of the openspf.org suite (`tests/support/rfc7208-tests.yml`, as shipped in
pyspf's sdist) is served by NSD on loopback (see `support.spfsuite` for the conversion and
the TIMEOUT emulation); every test case runs `SpfChecker.check` (the async API used for
inbound mail, pyspf in a worker thread, DNS through kittiwake's driver) and must give one of
the expected results, and the expected explanation where the suite names one. Scenarios
are grouped so that compatible ones share a server; the servers start in parallel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import dns.rcode
import pytest

from kittiwake.mailauth.spf import SpfChecker
from support.dnsserver import DnsServer, nsd_available, requires_nsd
from support.spfsuite import SpfCase, all_cases, group_scenarios, load_scenarios, zones_for

pytestmark = requires_nsd

SCENARIOS = load_scenarios()
GROUPS = group_scenarios(SCENARIOS)
CASES = list(all_cases(GROUPS))

# Cases pyspf itself gets wrong (none at the time of writing: pyspf 2.0.14 passes them all).
LIBRARY_FAILURES: dict[str, str] = {}


@pytest.fixture(scope="module")
def servers() -> Iterator[list[DnsServer]]:
    if not nsd_available():
        pytest.skip("needs nsd")
    started = [DnsServer(zones_for(group)) for group in GROUPS]
    try:
        with ThreadPoolExecutor(len(started)) as pool:
            list(pool.map(DnsServer.start, started))
        yield started
    finally:
        for server in started:
            server.stop()


def test_suite_is_complete() -> None:
    # 16 scenarios, 203 cases in the 2014.04 release; all of them run.
    assert len(SCENARIOS) == 16
    assert len(CASES) == sum(len(s.cases) for s in SCENARIOS) == 203
    assert len(GROUPS) < len(SCENARIOS)


def test_every_zone_loaded_except_the_timeout_ones(servers: list[DnsServer]) -> None:
    for server, group in zip(servers, GROUPS, strict=True):
        broken = set().union(*(s.timeouts for s in group))
        for origin in server.zones:
            rcode = server.query(origin, "SOA").rcode()
            expected = dns.rcode.SERVFAIL if origin in broken else dns.rcode.NOERROR
            assert rcode == expected, f"zone {origin}: {dns.rcode.to_text(rcode)}\n{server.log()}"


def _param(group: int, case: SpfCase) -> object:
    marks = []
    if case.id in LIBRARY_FAILURES:
        marks.append(pytest.mark.xfail(reason=LIBRARY_FAILURES[case.id], strict=True))
    return pytest.param(group, case, id=case.id, marks=marks)


@pytest.mark.parametrize(("group", "case"), [_param(g, c) for g, c in CASES])
def test_rfc7208(servers: list[DnsServer], group: int, case: SpfCase) -> None:
    # The suite's driver sets the default explanation to "DEFAULT" (RFC 7208 §6.2).
    checker = SpfChecker(servers[group].settings(timeout=2.0), default_explanation="DEFAULT")
    outcome = asyncio.run(checker.check(case.host, case.mailfrom, case.helo))
    assert outcome.result.value in case.results, (
        f"{case.scenario} / {case.id} (RFC 7208 {case.spec}): got {outcome.result.value} "
        f"({outcome.explanation}), expected {' or '.join(case.results)}")
    if case.explanation is not None:
        assert outcome.explanation == case.explanation
