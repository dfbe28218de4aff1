"""Real Kittiwake servers on loopback for end-to-end tests.

Each server is a `kittiwake serve` subprocess with its own config and data dir, so tests see
exactly what a user would run, and crash tests can kill -9 it.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 15.0,
              proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait for a listener; with `proc`, give up as soon as that process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


def port_free(host: str, port: int) -> bool:
    """True when nothing holds `port` on `host` (a fixed port a test is about to use)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition",
               interval: float = 0.1) -> object:
    """Poll `predicate` until it returns something truthy (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def kittiwake(*args: str, config: Path | None = None, input: str | None = None,
              cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kittiwake.cli"]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd + list(args), input=input, capture_output=True, text=True,
                          cwd=cwd, check=check, timeout=60, env=ENV)


@dataclass
class Server:
    root: Path
    host: str
    ports: dict[str, int]
    extra: dict[str, object] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def config(self) -> Path:
        return self.root / "kittiwake.toml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def cert(self) -> Path:
        return self.data / "tls" / "cert.pem"

    @property
    def hostname(self) -> str:
        """The configured server hostname: the name its self-signed certificate carries."""
        return str(self.extra.get("hostname", "mx.test"))

    @property
    def smtp(self) -> int:
        return self.ports["smtp"]

    def write_config(self, limits: dict[str, object] | None = None, workers: int = 1,
                     hostname: str = "mx.test",
                     sections: dict[str, dict[str, object]] | None = None) -> None:
        """Write kittiwake.toml: [limits] from `limits`, any other table (e.g. "queue",
        "dns", "submission", "delivery") from `sections`, one [[listener]] per port."""
        lines = [
            "[server]", f'hostname = "{hostname}"', 'data_dir = "data"', f"workers = {workers}", "",
            "[log]", 'level = "info"', "",
        ]
        self.extra["hostname"] = hostname
        # Tests talk only to loopback: never the system resolver (it is off-host). DNS goes
        # to a closed loopback port unless a test brings its own server, and SPF/DKIM/DMARC
        # run only where a test asks for them.
        defaults: dict[str, dict[str, object]] = {
            "dns": {"nameservers": ["127.0.0.1"], "port": 9, "timeout": 1.0},
            "mailauth": {"verify": False},
        }
        for table, values in (sections or {}).items():
            defaults[table] = {**defaults.get(table, {}), **values}
        tables = {"limits": limits or {}, **defaults}
        for table, values in tables.items():
            lines.append(f"[{table}]")
            lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
            lines.append("")
        for kind, port in self.ports.items():
            lines += ["", "[[listener]]", f'kind = "{kind}"', f'address = "{self.host}:{port}"']
        self.config.write_text("\n".join(lines) + "\n")

    def cli(self, *args: str, input: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        return kittiwake(*args, config=self.config, input=input, check=check)

    def add_user(self, address: str, password: str = "correct horse battery") -> None:
        self.cli("user", "add", address, "--password-stdin", input=password + "\n")

    def start(self) -> None:
        assert self.proc is None
        self.log_path = self.root / "server.log"
        logf = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kittiwake.cli", "--config", str(self.config), "serve"],
            stdout=logf, stderr=logf, env=ENV,
        )
        for port in self.ports.values():
            try:
                wait_port(self.host, port, proc=self.proc)
            except TimeoutError:
                self.stop()
                raise RuntimeError(f"server did not start:\n{self.log()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    # --- inspecting the store -------------------------------------------------------------
    def maildir(self, address: str, folder: str = "") -> Path:
        local, domain = address.rsplit("@", 1)
        base = self.data / "mail" / domain / local
        return base / folder if folder else base

    def messages(self, address: str, folder: str = "") -> list[bytes]:
        md = self.maildir(address, folder)
        files = sorted((md / "new").glob("*")) + sorted((md / "cur").glob("*"))
        return [f.read_bytes() for f in files]

    def index_rows(self, address: str, mailbox: str = "INBOX") -> list[tuple[int, str, int]]:
        db = sqlite3.connect(self.data / "kittiwake.db")
        try:
            return list(db.execute(
                "SELECT m.uid, m.filename, m.size FROM messages m JOIN mailboxes b ON "
                "m.mailbox_id = b.id JOIN accounts a ON b.account_id = a.id "
                "WHERE a.address = ? AND b.name = ? ORDER BY m.uid", (address.lower(), mailbox)))
        finally:
            db.close()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value).replace("'", '"')


def body_of(stored: bytes) -> bytes:
    """Strip the headers Kittiwake prepends (Return-Path, Delivered-To, Received, and the
    Authentication-Results/Received-SPF of a verifying server)."""
    rest = stored

    def strip_field(data: bytes) -> bytes:
        end = data.index(b"\r\n", 0)
        while data[end + 2:end + 3] in (b" ", b"\t"):
            end = data.index(b"\r\n", end + 2)
        return data[end + 2:]

    for name in (b"Return-Path:", b"Delivered-To:", b"Received:"):
        assert rest.startswith(name), rest[:200]
        rest = strip_field(rest)
    while rest.startswith((b"Authentication-Results:", b"Received-SPF:")):
        rest = strip_field(rest)
    return rest


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[object]:
    servers: list[Server] = []

    def factory(name: str = "kw", *, host: str = "127.0.0.1", kinds: tuple[str, ...] = ("smtp",),
                limits: dict[str, object] | None = None, domains: tuple[str, ...] = ("example.test",),
                users: tuple[str, ...] = ("alice@example.test", "bob@example.test"),
                start: bool = True, workers: int = 1,
                sections: dict[str, dict[str, object]] | None = None) -> Server:
        root = tmp_path / name
        root.mkdir()
        srv = Server(root=root, host=host, ports={k: free_port(host) for k in kinds})
        srv.write_config(limits, workers=workers, sections=sections)
        for d in domains:
            srv.cli("domain", "add", d)
        for u in users:
            srv.add_user(u)
        if start:
            srv.start()
        servers.append(srv)
        return srv

    yield factory
    for s in servers:
        s.stop()


# --- two instances on port 25 with real DNS (issue 3: sending mail between servers) -------

A_HOST, B_HOST = "127.0.0.2", "127.0.0.3"
PASSWORD = "correct horse battery"
# The MX hosts' names are the instances' hostnames, which their self-signed certificates name.
MAIL_ZONES = {
    "a.test": f"@ MX 10 mx\nmx A {A_HOST}\n",
    "b.test": f"@ MX 10 mx\nmx A {B_HOST}\n",
    "null.test": "@ MX 0 .\n",  # RFC 7505 null MX: accepts no mail
}
# Fast retries for tests: first retry after 1 s, never more than 2 s apart, the spool looked
# at twice a second; a short brute-force lockout so the throttle test can see it end.
QUEUE_FAST = {"minimal_backoff": 1.0, "maximal_backoff": 2.0, "poll_interval": 0.5}
AUTH_LOCKOUT = 8.0


@dataclass
class MailPair:
    """a.test on 127.0.0.2:25 (+ submission, submissions) and b.test on 127.0.0.3:25
    (+ submission), both resolving MX records through the same NSD."""

    a: Server
    b: Server
    dns: Any

    def check_alive(self) -> None:
        """Fail with the server's exit status and log when one died behind our back."""
        for name, srv in (("a.test", self.a), ("b.test", self.b)):
            code = srv.proc.poll() if srv.proc is not None else None
            if srv.proc is None or code is not None:
                pytest.fail(f"{name}'s server is not running (exit status {code}); log tail:\n"
                            f"{srv.log()[-3000:]}")


def _mail_server(root: Path, host: str, hostname: str, kinds: tuple[str, ...],
                 dns_port: int) -> Server:
    if not port_free(host, 25):
        pytest.fail(f"port 25 on {host} is already held by another process; the two-instance "
                    "tests need it (stop whatever listens there, e.g. `ss -ltnp 'sport = :25'`)")
    ports = {"smtp": 25} | {k: free_port(host) for k in kinds}
    root.mkdir()
    srv = Server(root=root, host=host, ports=ports)
    srv.write_config({"shutdown_grace": 1.0}, hostname=hostname, sections={
        "queue": dict(QUEUE_FAST),
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": 2.0},
        "submission": {"auth_max_failures": 3, "auth_lockout": AUTH_LOCKOUT},
    })
    return srv


@pytest.fixture
def mail_pair(mail_pair_session: MailPair) -> Iterator[MailPair]:
    """The running pair, checked before and after each test (a test that stops one of
    them must start it again)."""
    mail_pair_session.check_alive()
    yield mail_pair_session
    mail_pair_session.check_alive()


@pytest.fixture(scope="session")
def mail_pair_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailPair]:
    from support.dnsserver import DnsServer, nsd_available

    if not nsd_available():
        pytest.skip("needs nsd (apt-get install nsd)")
    root = tmp_path_factory.mktemp("pair")
    with DnsServer(MAIL_ZONES) as dns:
        a = _mail_server(root / "a", A_HOST, "mx.a.test", ("submission", "submissions"),
                         dns.port)
        b = _mail_server(root / "b", B_HOST, "mx.b.test", ("submission",), dns.port)
        a.cli("domain", "add", "a.test")
        for user in ("alice@a.test", "carol@a.test", "victim@a.test"):
            a.add_user(user, PASSWORD)
        b.cli("domain", "add", "b.test")
        b.add_user("bob@b.test", PASSWORD)
        # Forwarding out of b.test: lets a test see what b.test does with the DSN parameters
        # a.test passed on, when b.test itself has to bounce.
        b.cli("alias", "add", "fwd@b.test", "nobody@null.test")
        pair = MailPair(a, b, dns)
        try:
            a.start()
            b.start()
            yield pair
        finally:
            a.stop()
            b.stop()


class NamedSMTP_SSL(smtplib.SMTP_SSL):
    """SMTP over implicit TLS (RFC 8314) to an address, verifying the certificate against a
    host name that only the test's DNS knows (the stdlib would check the address)."""

    def __init__(self, host: str, port: int, tls_name: str, **kwargs: Any) -> None:
        self.tls_name = tls_name
        super().__init__(host, port, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout, self.source_address)
        return self.context.wrap_socket(sock, server_hostname=self.tls_name)


def trusting(cert: Path) -> ssl.SSLContext:
    """A client context that trusts exactly this (self-signed) certificate."""
    return ssl.create_default_context(cafile=str(cert))


def submit(srv: Server, message: bytes, rcpts: list[str], *, sender: str = "alice@a.test",
           user: str = "alice@a.test", mail_options: tuple[str, ...] = (),
           rcpt_options: tuple[str, ...] = ()) -> str:
    """Submit over the 465-kind listener with AUTH; return the queue id from the 250."""
    with NamedSMTP_SSL(srv.host, srv.ports["submissions"], srv.hostname,
                       context=trusting(srv.cert), timeout=20) as c:
        c.login(user, PASSWORD)
        code, reply = c.mail(sender, list(mail_options))
        assert code == 250, reply
        for rcpt in rcpts:
            code, reply = c.rcpt(rcpt, list(rcpt_options))
            assert code == 250, (rcpt, reply)
        code, reply = c.data(message)
        assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[-1]


def with_marker(messages: list[bytes], marker: bytes) -> list[bytes]:
    return [m for m in messages if marker in m]


def wait_mail(srv: Server, address: str, marker: bytes, count: int = 1,
              timeout: float = 20.0) -> list[bytes]:
    """Wait until `address` has `count` messages containing `marker`; return them."""
    def found() -> list[bytes] | None:
        got = with_marker(srv.messages(address), marker)
        return got if len(got) >= count else None

    try:
        result = wait_until(found, timeout, f"{count} message(s) with {marker!r} for {address}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- server log tail ---\n{srv.log()[-4000:]}") from None
    assert isinstance(result, list)
    return result
