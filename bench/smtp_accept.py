#!/usr/bin/env python3
"""Accepted durable messages per second: Kittiwake vs Postfix, same load, same run.

Load: Postfix's `smtp-source` sending 10 KB messages over 1, 10 and 50 concurrent sessions,
several messages per connection. After each run the delivered Maildir files are counted, so a
server that acknowledges but loses mail cannot look fast. Postfix (the Debian package) is
configured by this script for a virtual Maildir domain on 127.0.0.1 and stopped afterwards;
its rate includes its own queue fsync before 250, Kittiwake's includes the Maildir fsync and
index commit before 250.

    python bench/smtp_accept.py [--messages 2000] [--sessions 1,10,50] [--no-postfix]
    python bench/smtp_accept.py --idle 10000    # RSS per idle connection after EHLO
"""

from __future__ import annotations

import argparse
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening")


def count_files(maildir: Path) -> int:
    return sum(len(os.listdir(maildir / sub)) for sub in ("new", "cur") if (maildir / sub).exists())


def smtp_source(port: int, sessions: int, messages: int, rcpt: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(
        ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", "10240", "-d",
         "-f", "bench@remote.test", "-t", rcpt, f"{HOST}:{port}"],
        capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {r.stderr.strip()}")
    return elapsed


def wait_count(maildir: Path, expected: int, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    n = count_files(maildir)
    while n < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        n = count_files(maildir)
    return n


# --- Kittiwake --------------------------------------------------------------------------
class Kittiwake:
    name = "kittiwake"

    def __init__(self, root: Path, workers: int) -> None:
        self.root = root
        self.port = free_port()
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        cfg = root / "kittiwake.toml"
        cfg.write_text(
            f'[server]\nhostname = "bench.test"\ndata_dir = "data"\nworkers = {workers}\n'
            '[log]\nlevel = "warning"\n[limits]\nmax_connections_per_ip = 20000\n'
            # Like the Postfix reference: no SPF/DKIM/DMARC, and DNS only on loopback.
            '[mailauth]\nverify = false\n[dns]\nnameservers = ["127.0.0.1"]\nport = 9\n'
            f'[[listener]]\nkind = "smtp"\naddress = "{HOST}:{self.port}"\n')
        self.config = cfg
        self._cli("domain", "add", "bench.test")
        self._cli("user", "add", "sink@bench.test", "--password-stdin", input="benchmark-pass\n")
        self.maildir = root / "data" / "mail" / "bench.test" / "sink"

    def _cli(self, *args: str, input: str | None = None) -> None:
        subprocess.run([sys.executable, "-m", "kittiwake.cli", "--config", str(self.config), *args],
                       input=input, text=True, check=True, capture_output=True)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kittiwake.cli", "--config", str(self.config), "serve"],
            stdout=subprocess.DEVNULL, stderr=(self.root / "server.log").open("ab"))
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
            self.proc = None


# --- Postfix ----------------------------------------------------------------------------
MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = bench.test
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = static:sink/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 200
maillog_file = {root}/maillog
maillog_file_prefixes = /tmp, /var
smtputf8_enable = no
biff = no
"""


class Postfix:
    name = "postfix"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.conf = root / "etc"
        self.conf.mkdir(parents=True)
        (root / "mail").mkdir()
        (root / "queue").mkdir()
        (root / "data").mkdir()
        postfix_user = pwd.getpwnam("postfix")
        os.chown(root / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        for parent in (root, *root.parents):  # Postfix's daemons run unprivileged
            if parent == Path("/tmp"):
                break
            os.chmod(parent, 0o755)
        nobody = pwd.getpwnam("nobody")
        os.chown(root / "mail", nobody.pw_uid, nobody.pw_gid)
        (self.conf / "main.cf").write_text(MAIN_CF.format(root=root, uid=nobody.pw_uid, gid=nobody.pw_gid))
        master = Path("/etc/postfix/master.cf").read_text().splitlines()
        out = []
        for line in master:
            if line.startswith("smtp ") and " inet " in line:
                line = f"{HOST}:{self.port} inet n - n - - smtpd"
            out.append(line)
        out.append("postlog unix-dgram n - n - 1 postlogd")
        (self.conf / "master.cf").write_text("\n".join(out) + "\n")
        self.maildir = root / "mail" / "sink"

    def _postfix(self, *args: str) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), *args], check=True, capture_output=True)

    def start(self) -> None:
        self._postfix("check")
        self._postfix("start")
        wait_port(self.port)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True)
        time.sleep(1)


def run_load(server, sessions_list: list[int], messages: int) -> list[tuple[int, float, int]]:
    rows = []
    server.start()
    try:
        expected = 0
        for sessions in sessions_list:
            n = max(messages, sessions * 20)
            before = count_files(server.maildir)
            elapsed = smtp_source(server.port, sessions, n, "sink@bench.test")
            expected = before + n
            got = wait_count(server.maildir, expected) - before
            rows.append((sessions, n / elapsed, got))
            print(f"  {server.name:9} sessions={sessions:3d} messages={n} "
                  f"accepted/s={n / elapsed:8.1f} delivered={got}", flush=True)
    finally:
        server.stop()
    return rows


def idle_rss(connections: int, workers: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections * 2 + 1000), hard))
    with tempfile.TemporaryDirectory() as tmp:
        kw = Kittiwake(Path(tmp), workers)
        kw.start()
        try:
            assert kw.proc is not None

            def rss() -> int:
                pids = [kw.proc.pid] + [int(p) for p in subprocess.run(
                    ["pgrep", "-P", str(kw.proc.pid)], capture_output=True, text=True).stdout.split()]
                total = 0
                for pid in pids:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
                return total

            base = rss()
            socks = []
            t0 = time.perf_counter()
            for i in range(connections):
                s = socket.create_connection((HOST, kw.port))
                socks.append(s)
                if i % 500 == 499:
                    time.sleep(0.05)
            for s in socks:  # greeting, then EHLO, then leave them idle
                s.recv(4096)
                s.sendall(b"EHLO idle.test\r\n")
            for s in socks:
                data = b""
                while not data.endswith(b"\r\n") or b"250 " not in data:
                    data += s.recv(4096)
            after = rss()
            print(f"idle connections={connections} setup_s={time.perf_counter() - t0:.1f} "
                  f"rss_before={base / 1e6:.1f}MB rss_after={after / 1e6:.1f}MB "
                  f"per_connection={(after - base) / connections:.0f} bytes")
            for s in socks:
                s.close()
        finally:
            kw.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000, help="messages per run (default 2000)")
    ap.add_argument("--sessions", default="1,10,50")
    ap.add_argument("--workers", type=int, default=2, help="Kittiwake worker processes")
    ap.add_argument("--no-postfix", action="store_true")
    ap.add_argument("--idle", type=int, default=0, help="measure RSS with N idle connections instead")
    args = ap.parse_args()
    if args.idle:
        idle_rss(args.idle, 1)
        return 0
    if not shutil.which("smtp-source"):
        print("smtp-source not found: apt-get install postfix", file=sys.stderr)
        return 1
    sessions = [int(x) for x in args.sessions.split(",")]
    results: dict[str, list[tuple[int, float, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="kwbench-") as tmp:
        print(f"Kittiwake (workers={args.workers}):")
        (Path(tmp) / "kw").mkdir()
        results["kittiwake"] = run_load(Kittiwake(Path(tmp) / "kw", args.workers), sessions, args.messages)
        if not args.no_postfix and shutil.which("postfix"):
            print("Postfix:")
            results["postfix"] = run_load(Postfix(Path(tmp) / "pf"), sessions, args.messages)
    print("\n| sessions | Kittiwake msg/s | delivered | Postfix msg/s | delivered | ratio |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for i, s in enumerate(sessions):
        k = results["kittiwake"][i]
        p = results.get("postfix", [])
        if p:
            print(f"| {s} | {k[1]:.0f} | {k[2]} | {p[i][1]:.0f} | {p[i][2]} | {k[1] / p[i][1]:.2f}× |")
        else:
            print(f"| {s} | {k[1]:.0f} | {k[2]} | – | – | – |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
