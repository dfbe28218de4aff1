"""A real authoritative DNS server (NSD) on loopback for tests.

Tests that need DNS (MX routing, SPF, DKIM, DMARC) run NSD from Debian's `nsd` package in
the foreground, as the current user, without chroot, on 127.0.0.1 and a free port, serving
zones given as zone-file text. Nothing is mocked: dnspython (or any resolver pointed at
`server.address`) talks UDP/TCP to a real server.

    with DnsServer({"mx.test": "@ MX 10 mx1\\nmx1 A 127.0.0.2\\n"}) as server:
        resolver = DnsResolver(server.settings())

A zone's text gets `$ORIGIN`, `$TTL` and, when it has none, an SOA and NS record prepended,
so a test only writes the records it cares about. `txt_record()` splits long values into
255-octet strings (RFC 1035 §3.3.14) as DKIM keys need. `dns_server_fixture(zones)` makes a
pytest fixture from a zone mapping.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

NSD = shutil.which("nsd") or "/usr/sbin/nsd"


def nsd_available() -> bool:
    return Path(NSD).exists()


requires_nsd = pytest.mark.skipif(not nsd_available(), reason="needs nsd (apt-get install nsd)")


def txt_record(owner: str, value: str, ttl: int | None = None) -> str:
    """A TXT record line for `value`, split into <=255-octet quoted strings."""
    raw = value.encode("utf-8")
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    quoted = " ".join('"' + _escape(chunk) + '"' for chunk in chunks)
    ttl_text = f" {ttl}" if ttl is not None else ""
    return f"{owner}{ttl_text} IN TXT ( {quoted} )"


def _escape(chunk: bytes) -> str:
    out = []
    for byte in chunk:
        if byte in (0x22, 0x5C):  # " and \ are escaped with a backslash
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:  # RFC 1035 §5.1: \DDD for anything else
            out.append(f"\\{byte:03d}")
    return "".join(out)


def free_udp_tcp_port(host: str = "127.0.0.1", attempts: int = 20) -> int:
    """A port free for both UDP and TCP on `host` (DNS needs both)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port")


class DnsServer:
    """NSD serving `zones` (origin → zone-file text) on `host`:`port` (free port if None)."""

    def __init__(self, zones: Mapping[str, str], *, host: str = "127.0.0.1",
                 port: int | None = None, workdir: Path | None = None,
                 start_timeout: float = 10.0) -> None:
        if not zones:
            raise ValueError("at least one zone is needed")
        self.zones = {origin.rstrip(".").lower(): text for origin, text in zones.items()}
        self.host = host
        self.port = port or 0
        self.start_timeout = start_timeout
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="nsd-"))
        self.proc: subprocess.Popen[bytes] | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> DnsServer:
        if self.proc is not None:
            raise RuntimeError("already started")
        if not nsd_available():
            raise RuntimeError("nsd is not installed (apt-get install -y nsd)")
        # A port picked as free can be taken before NSD binds it; try a few.
        fixed = self.port != 0
        for _ in range(1 if fixed else 3):
            if not fixed:
                self.port = free_udp_tcp_port(self.host)
            self._write_files()
            log = (self.workdir / "nsd.stderr").open("ab")
            self.proc = subprocess.Popen([NSD, "-d", "-c", str(self.workdir / "nsd.conf")],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
            if self._wait_ready():
                return self
            self.stop(remove=False)
        raise RuntimeError(f"nsd did not start:\n{self.log()}")

    def stop(self, *, remove: bool = True) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if remove and self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- use ------------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def settings(self, timeout: float = 2.0) -> Any:
        """`kittiwake.dns.DnsSettings` pointing at this server."""
        from kittiwake.dns import DnsSettings

        return DnsSettings(nameservers=(self.host,), port=self.port, timeout=timeout)

    def query(self, name: str, rdtype: str = "A", timeout: float = 1.0) -> dns.message.Message:
        """Ask the server directly (UDP), e.g. to check a zone loaded."""
        q = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
        return dns.query.udp(q, self.host, port=self.port, timeout=timeout)

    def log(self) -> str:
        parts = []
        for name in ("nsd.log", "nsd.stderr"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    # --- internals ------------------------------------------------------------------------
    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        d = self.workdir
        conf = [
            "server:",
            f"    ip-address: {self.host}@{self.port}",
            f"    port: {self.port}",
            '    username: ""',  # no privilege drop: tests run as whoever they are
            '    chroot: ""',
            f'    zonesdir: "{d}"',
            '    database: ""',  # no nsd.db: zones are read from the text files
            f'    pidfile: "{d}/nsd.pid"',
            f'    xfrdfile: "{d}/xfrd.state"',
            f'    zonelistfile: "{d}/zone.list"',
            f'    logfile: "{d}/nsd.log"',
            "    server-count: 1",
            "    verbosity: 1",
            "    do-ip6: no",
            "    hide-version: yes",
            "    reuseport: no",
            "remote-control:",
            "    control-enable: no",
        ]
        for i, (origin, text) in enumerate(self.zones.items()):
            filename = f"zone{i}.zone"
            (d / filename).write_text(self._zone_text(origin, text))
            conf += ["zone:", f'    name: "{origin}"', f'    zonefile: "{filename}"']
        (d / "nsd.conf").write_text("\n".join(conf) + "\n")

    @staticmethod
    def _zone_text(origin: str, text: str) -> str:
        head = [f"$ORIGIN {origin}.", "$TTL 300"]
        if not any(_record_type(line) == "SOA" for line in text.splitlines()):
            head += [f"@ IN SOA ns.{origin}. hostmaster.{origin}. ( 1 3600 600 86400 300 )",
                     f"@ IN NS ns.{origin}."]
        return "\n".join(head) + "\n" + text + "\n"

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        origin = next(iter(self.zones))
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                answer = self.query(origin, "SOA", timeout=0.2)
            except (OSError, dns.exception.DNSException):
                time.sleep(0.05)
                continue
            return answer.rcode() == dns.rcode.NOERROR
        return False


def _record_type(line: str) -> str | None:
    words = line.split(";", 1)[0].split('"', 1)[0].split()
    return next((w.upper() for w in words if w.upper() in ("SOA", "NS")), None)


Scope = Literal["session", "package", "module", "class", "function"]


def dns_server_fixture(zones: Mapping[str, str], *, scope: Scope = "module"
                       ) -> Callable[..., Iterator[DnsServer]]:
    """A pytest fixture serving `zones`: `dns = dns_server_fixture({...})` in a test module."""

    @pytest.fixture(scope=scope)
    def _fixture() -> Iterator[DnsServer]:
        if not nsd_available():
            pytest.skip("needs nsd (apt-get install nsd)")
        with DnsServer(zones) as server:
            yield server

    return _fixture
