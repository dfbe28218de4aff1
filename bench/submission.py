#!/usr/bin/env python3
"""Submission throughput: many concurrent clients doing STARTTLS + AUTH + send.

One Kittiwake instance (`kittiwake serve`, a subprocess with its own data dir) listens for
submission on 127.0.0.1; an asyncio client opens `--sessions` concurrent connections, each
doing EHLO, STARTTLS (TLS 1.3), EHLO, AUTH — PLAIN (an argon2id verification on the
server, ~0.1-0.2 s of CPU by design) or SCRAM-SHA-256 (stored keys: cheap for the server) —
and then `--per-session` messages (MAIL/RCPT/DATA) to a local mailbox, reconnecting for
`--seconds`. Accepted messages/second is the client's count of 250 replies to the end of
data over the wall time; afterwards the Maildir files are counted, so a server that
acknowledges but loses mail cannot look fast.

    python bench/submission.py [--seconds 10] [--sessions 1,10,50] [--per-session 1,10]
                               [--auth plain,scram-sha-256] [--size 4096] [--workers 1]

The client runs in this process, on the same machine: on a small box it competes with the
server for CPU, so the figures are a floor. This module also holds the helpers
bench/queue_delivery.py uses (a Kittiwake instance, port and Maildir waits).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
PASSWORD = "benchmark password"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"{host}:{port} not listening")


def count_files(maildir: Path) -> int:
    return sum(len(os.listdir(maildir / sub)) for sub in ("new", "cur") if (maildir / sub).exists())


def wait_count(maildir: Path, expected: int, timeout: float = 300.0) -> tuple[int, float]:
    """(files, monotonic time the count was reached or the wait gave up)."""
    deadline = time.monotonic() + timeout
    n = count_files(maildir)
    while n < expected and time.monotonic() < deadline:
        time.sleep(0.02)
        n = count_files(maildir)
    return n, time.monotonic()


@dataclass
class Instance:
    """A Kittiwake server for benchmarks: `kittiwake serve` with its own config and data."""

    root: Path
    host: str
    hostname: str
    domain: str
    users: tuple[str, ...]
    kinds: tuple[str, ...] = ("smtp", "submission")
    workers: int = 1
    sections: dict[str, dict[str, object]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.ports = {kind: free_port(self.host) for kind in self.kinds}
        self.write_config()
        self.cli("domain", "add", self.domain)
        for user in self.users:
            self.cli("user", "add", f"{user}@{self.domain}", "--password-stdin",
                     input=PASSWORD + "\n")

    @property
    def config(self) -> Path:
        return self.root / "kittiwake.toml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def maildir(self, user: str) -> Path:
        return self.data / "mail" / self.domain / user

    def write_config(self) -> None:
        lines = [f'[server]\nhostname = "{self.hostname}"\ndata_dir = "data"\n'
                 f"workers = {self.workers}\n[log]\nlevel = \"warning\"\n"
                 "[limits]\nmax_connections_per_ip = 20000\n"]
        for table, values in self.sections.items():
            lines.append(f"[{table}]")
            for key, value in values.items():
                text = str(value).lower() if isinstance(value, bool) else \
                    repr(value).replace("'", '"')
                lines.append(f"{key} = {text}")
        for kind, port in self.ports.items():
            lines.append(f'[[listener]]\nkind = "{kind}"\naddress = "{self.host}:{port}"')
        self.config.write_text("\n".join(lines) + "\n")

    def cli(self, *args: str, input: str | None = None) -> str:
        r = subprocess.run([sys.executable, "-m", "kittiwake.cli", "--config", str(self.config),
                            *args], input=input, text=True, capture_output=True, env=ENV)
        if r.returncode != 0:
            raise RuntimeError(f"kittiwake {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def start(self) -> None:
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kittiwake.cli", "--config", str(self.config), "serve"],
            stdout=log, stderr=log, env=ENV)
        for port in self.ports.values():
            wait_port(self.host, port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


# --- the load -------------------------------------------------------------------------------

class SmtpError(Exception):
    pass


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    text = b""
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpError("connection closed")
        text += line
        if line[3:4] != b"-":
            return int(line[:3]), text


async def _command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes,
                   expect: int) -> None:
    writer.write(line)
    code, text = await _reply(reader)
    if code != expect:
        raise SmtpError(f"{line[:40]!r} → {text!r}")


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


async def _auth_plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      user: str) -> None:
    token = _b64(f"\0{user}\0{PASSWORD}".encode())
    await _command(reader, writer, b"AUTH PLAIN " + token + b"\r\n", 235)


async def _auth_scram(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      user: str) -> None:
    """SCRAM-SHA-256 (RFC 5802, RFC 7677), client side, no channel binding."""
    first_bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={secrets.token_urlsafe(18)}"
    writer.write(b"AUTH SCRAM-SHA-256 " + _b64(b"n,," + first_bare.encode()) + b"\r\n")
    code, text = await _reply(reader)
    if code != 334:
        raise SmtpError(f"SCRAM first: {text!r}")
    server_first = base64.b64decode(text[4:].strip()).decode()
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = _hmac(salted, b"Client Key")
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    writer.write(_b64(f"{without_proof},p={_b64(proof).decode()}".encode()) + b"\r\n")
    code, text = await _reply(reader)
    expected = b"v=" + _b64(_hmac(_hmac(salted, b"Server Key"), auth_message))
    if code != 334 or base64.b64decode(text[4:].strip()) != expected:
        raise SmtpError(f"SCRAM final: {text!r}")
    await _command(reader, writer, b"\r\n", 235)  # RFC 4954 §4: empty answer, then 235


async def session(host: str, port: int, user: str, rcpt: str, message: bytes, count: int,
                  ctx: ssl.SSLContext, mechanism: str) -> int:
    """One connection: STARTTLS, AUTH, then `count` messages. Returns 250s got."""
    reader, writer = await asyncio.open_connection(host, port)
    sent = 0
    try:
        await _reply(reader)
        await _command(reader, writer, b"EHLO bench.client\r\n", 250)
        await _command(reader, writer, b"STARTTLS\r\n", 220)
        await writer.start_tls(ctx)
        await _command(reader, writer, b"EHLO bench.client\r\n", 250)
        if mechanism == "scram-sha-256":
            await _auth_scram(reader, writer, user)
        else:
            await _auth_plain(reader, writer, user)
        for _ in range(count):
            # PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, as real MUAs do.
            writer.write(f"MAIL FROM:<{user}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
            for expect in (250, 250, 354):
                code, text = await _reply(reader)
                if code != expect:
                    raise SmtpError(text.decode(errors="replace"))
            await _command(reader, writer, message + b".\r\n", 250)
            sent += 1
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
    return sent


async def load(host: str, port: int, user: str, rcpt: str, seconds: float, sessions: int,
               per_session: int, size: int, mechanism: str) -> tuple[int, float, int]:
    """`sessions` concurrent clients sending for `seconds` (each finishes its connection).
    Returns (messages acknowledged, wall seconds, failed sessions)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the bench's self-signed cert
    body = (b"x" * 76 + b"\r\n") * max(1, size // 78)
    message = (f"From: {user}\r\nTo: {rcpt}\r\nSubject: bench\r\n\r\n").encode() + body
    errors = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def client() -> int:
        nonlocal errors
        done = 0
        while time.perf_counter() < deadline:
            try:
                done += await session(host, port, user, rcpt, message, per_session, ctx,
                                      mechanism)
            except (OSError, SmtpError, ssl.SSLError) as e:
                errors += 1
                print(f"    session failed: {e}", file=sys.stderr)
        return done

    counts = await asyncio.gather(*(client() for _ in range(sessions)))
    return sum(counts), time.perf_counter() - t0, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    ap.add_argument("--sessions", default="1,10,50", help="concurrent clients per run")
    ap.add_argument("--per-session", default="1,10",
                    help="messages per connection (1: TLS + AUTH for every message)")
    ap.add_argument("--auth", default="plain,scram-sha-256", help="SASL mechanisms to run")
    ap.add_argument("--size", type=int, default=4096, help="message body bytes (default 4096)")
    ap.add_argument("--workers", type=int, default=1, help="Kittiwake worker processes")
    args = ap.parse_args()
    host = "127.0.0.1"
    rows = []
    with tempfile.TemporaryDirectory(prefix="kwbench-sub-") as tmp:
        kw = Instance(Path(tmp) / "a", host, "mx.a.test", "a.test", ("alice", "bob"),
                      kinds=("submission",), workers=args.workers)
        kw.start()
        try:
            maildir = kw.maildir("bob")
            for mechanism in args.auth.lower().split(","):
                for per in (int(x) for x in args.per_session.split(",")):
                    for sessions in (int(x) for x in args.sessions.split(",")):
                        before = count_files(maildir)
                        sent, secs, errors = asyncio.run(load(
                            host, kw.ports["submission"], "alice@a.test", "bob@a.test",
                            args.seconds, sessions, per, args.size, mechanism))
                        delivered, _ = wait_count(maildir, before + sent, timeout=60)
                        delivered -= before
                        rows.append((mechanism, per, sessions, sent, secs, delivered, errors))
                        print(f"  auth={mechanism} per_session={per} sessions={sessions} "
                              f"sent={sent} in {secs:.1f}s = {sent / secs:.1f} msg/s "
                              f"delivered={delivered} errors={errors}", flush=True)
        finally:
            kw.stop()
    print(f"\nSubmission: STARTTLS + AUTH + {args.size}-byte messages to a local mailbox, "
          f"{args.seconds:.0f} s per run, Kittiwake workers={args.workers}, "
          f"{os.cpu_count()} CPUs\n")
    print("| AUTH | messages/connection | sessions | sent | messages/s | delivered | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mechanism, per, sessions, sent, secs, delivered, errors in rows:
        print(f"| {mechanism.upper()} | {per} | {sessions} | {sent} | {sent / secs:.1f} "
              f"| {delivered} | {errors} |")
    return 0 if all(r[3] == r[5] and not r[6] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
