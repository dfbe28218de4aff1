"""Real Kittiwake servers on loopback for end-to-end tests.

Each server is a `kittiwake serve` subprocess with its own config and data dir, so tests see
exactly what a user would run, and crash tests can kill -9 it.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


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
    def smtp(self) -> int:
        return self.ports["smtp"]

    def write_config(self, limits: dict[str, object] | None = None, workers: int = 1,
                     hostname: str = "mx.test") -> None:
        lines = [
            "[server]", f'hostname = "{hostname}"', 'data_dir = "data"', f"workers = {workers}", "",
            "[log]", 'level = "info"', "", "[limits]",
        ]
        for k, v in (limits or {}).items():
            value = str(v).lower() if isinstance(v, bool) else repr(v).replace("'", '"')
            lines.append(f"{k} = {value}")
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
                wait_port(self.host, port)
            except TimeoutError:
                self.stop()
                raise RuntimeError(self.log()) from None

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


def body_of(stored: bytes) -> bytes:
    """Strip the headers Kittiwake prepends (Return-Path, Delivered-To, Received)."""
    rest = stored
    for name in (b"Return-Path:", b"Delivered-To:", b"Received:"):
        assert rest.startswith(name), rest[:200]
        end = rest.index(b"\r\n", 0)
        while rest[end + 2:end + 3] in (b" ", b"\t"):
            end = rest.index(b"\r\n", end + 2)
        rest = rest[end + 2:]
    return rest


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[object]:
    servers: list[Server] = []

    def factory(name: str = "kw", *, host: str = "127.0.0.1", kinds: tuple[str, ...] = ("smtp",),
                limits: dict[str, object] | None = None, domains: tuple[str, ...] = ("example.test",),
                users: tuple[str, ...] = ("alice@example.test", "bob@example.test"),
                start: bool = True, workers: int = 1) -> Server:
        root = tmp_path / name
        root.mkdir()
        srv = Server(root=root, host=host, ports={k: free_port(host) for k in kinds})
        srv.write_config(limits, workers=workers)
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
