"""IMAP benchmark: Kittiwake and Dovecot side by side over the same Maildir corpus.

    python bench/imap_bench.py [--count 5000] [--seed 42] [--workdir /tmp/imap-bench]
                               [--no-dovecot] [--sessions 10] [--bodies 100]

Makes (or reuses) a corpus with ../shared/tools/make-corpus.py, starts Kittiwake's IMAP
server (a child process: the real store, group-commit writer and indexer, implicit TLS) and
Dovecot (Debian's dovecot-imapd, configured here on loopback with its own copy of the
Maildir), copies the corpus into each server's INBOX *after* it started, so the first
SELECT meets a never-indexed Maildir, then times the same commands against both with one
lean client (raw socket, literals skipped, no response parsing beyond framing):

    first SELECT, SELECT, UID FETCH 1:* (FLAGS), FETCH 1:* (ENVELOPE BODYSTRUCTURE) cold and
    warm, FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)]), UID SEARCH FROM,
    UID SEARCH TEXT (the manifest's planted tokens: hit counts are checked), 100 random
    full bodies (page cache dropped first, then the same again cached), N concurrent
    sessions, and the servers' peak memory (RSS of the server process and its children,
    sampled every 50 ms).

After the first SELECT and the cold FETCH, everything is measured in the steady state:
for Kittiwake once its background indexer has caught up with the walk-in (the time that
took is printed); "warm" FETCH is for Dovecot its second run.  Runs as root (Dovecot's mail processes use
the `nobody` user).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS_TOOL = REPO.parent / "shared" / "tools" / "make-corpus.py"
OWNER = "user@example.test"
PASSWORD = "bench-password"
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


# ---------------------------------------------------------------------------- the client


class Client:
    """Just enough IMAP: send a command, read to its tagged completion, skip literals."""

    def __init__(self, port: int) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.sock = ctx.wrap_socket(raw)
        self.buf = b""
        self.n = 0
        self._line()  # greeting

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed")
        self.buf += data

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[: i + 2], self.buf[i + 2 :]
                return line
            self._fill()

    def _skip(self, n: int) -> None:
        while len(self.buf) < n:
            self._fill()
        self.buf = self.buf[n:]

    def cmd(self, text: str) -> tuple[bytes, int, bytes]:
        """(tagged line, untagged response count, first untagged lines)"""
        self.n += 1
        tag = b"b%d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        count = 0
        head = b""
        while True:
            line = self._line()
            while (m := _LITERAL.search(line)) is not None:
                self._skip(int(m.group(1)))
                line = self._line()
            if line.startswith(tag + b" "):
                return line, count, head
            if line.startswith(b"* "):
                count += 1
                if len(head) < 2000 or line.startswith(b"* SEARCH"):
                    head += line

    def ok(self, text: str) -> tuple[int, bytes]:
        tagged, count, head = self.cmd(text)
        if b" OK" not in tagged[:12]:
            raise RuntimeError(f"{text!r} -> {tagged!r}")
        return count, head

    def close(self) -> None:
        try:
            self.cmd("LOGOUT")
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------------------- memory


class Sampler(threading.Thread):
    """Peak RSS (KiB) of a process tree, sampled."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.per_process: dict[str, int] = {}
        self.stop = False

    def tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children.get(p, [])
        return out

    def run(self) -> None:
        while not self.stop:
            total = 0
            for p in self.tree():
                try:
                    status = Path(f"/proc/{p}/status").read_text()
                    cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmRSS:"):
                        kib = int(line.split()[1])
                        total += kib
                        key = cmd.decode(errors="replace")[:60]
                        self.per_process[key] = max(self.per_process.get(key, 0), kib)
            self.peak = max(self.peak, total)
            time.sleep(0.05)


# ---------------------------------------------------------------------------- servers


def serve_kittiwake(data: Path, port_file: Path) -> None:
    """Child process: the store and the IMAP server on an ephemeral implicit-TLS port."""
    sys.path.insert(0, str(REPO / "src"))
    import asyncio
    import logging

    from kittiwake.imapserver.server import ImapServer, ImapServerSettings, ListenerSpec
    from kittiwake.inbound import DirectoryCredentials
    from kittiwake.store import Directory, MailStore, StoreSettings
    from kittiwake.tlsconfig import server_context, write_self_signed

    logging.basicConfig(filename=str(data / "server.log"), level=logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        directory = Directory(data / "kittiwake.db")
        if not directory.is_local_domain("example.test"):
            directory.add_domain("example.test")
            directory.add_account(OWNER, PASSWORD)
        cert, key = data / "cert.pem", data / "key.pem"
        write_self_signed(cert, key, "localhost")
        store = MailStore(StoreSettings(data, hostname="bench"))
        await store.start()
        server = ImapServer(ImapServerSettings(max_connections_per_ip=100),
                            [ListenerSpec("imaps", "127.0.0.1", 0, "implicit")], store.imap,
                            DirectoryCredentials(directory), server_context(cert, key))
        await server.start()
        store.imap.start_indexer()
        port_file.write_text(str(server.bound_ports()[0]))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        profile = None
        if os.environ.get("BENCH_PROFILE"):
            import cProfile

            profile = cProfile.Profile()
            profile.enable()
        await stop.wait()
        if profile is not None:
            profile.disable()
            profile.dump_stats(str(data / "server.prof"))
        await server.shutdown()
        await store.imap.stop_indexer()
        await store.close()

    if not os.environ.get("BENCH_NO_UVLOOP"):
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
    asyncio.run(main())


DOVECOT_CONF = """base_dir = {w}/run
state_dir = {w}/state
log_path = {w}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{w}/cert.pem
ssl_key = <{w}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
mail_location = maildir:{w}/Maildir
mail_max_userip_connections = 100
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={w}/home
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing on port {port}")


def copy_maildir(corpus: Path, dest: Path) -> None:
    for sub in ("cur", "new"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(corpus / sub):
            shutil.copy2(entry.path, dest / sub / entry.name)
    os.sync()  # the copy's write-back must not land in the server's first fsyncs


# ---------------------------------------------------------------------------- the run


def _hits(head: bytes) -> int:
    """Numbers in the `* SEARCH` line (Dovecot sends `* OK Searched n%` lines first)."""
    for line in head.split(b"\r\n"):
        if line.startswith(b"* SEARCH"):
            return len(line.split()) - 2
    return 0


def drop_page_cache() -> bool:
    """Write back and drop the page cache (root only); False when not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def operations(port: int, manifest: dict, args: argparse.Namespace,
               warm_up: Callable[[], float | None]) -> dict[str, str]:
    out: dict[str, str] = {}
    c = Client(port)
    c.ok(f'LOGIN "{OWNER}" "{PASSWORD}"')
    t, _ = timed(lambda: c.ok("SELECT INBOX"))
    out["first SELECT (never indexed)"] = f"{t:.3f}"
    t, _ = timed(lambda: c.ok("FETCH 1:* (ENVELOPE BODYSTRUCTURE)"))
    out["FETCH 1:* (ENVELOPE BODYSTRUCTURE) cold"] = f"{t:.3f}"
    # Everything else is measured in the steady state: for Kittiwake once its background
    # indexer has caught up with the walk-in (the time that took is reported).
    settle = warm_up()
    if settle is not None:
        out["(background indexing finished after)"] = f"{settle:.1f}"
    t, _ = timed(lambda: c.ok("SELECT INBOX"))
    out["SELECT"] = f"{t:.3f}"
    t, res = timed(lambda: c.ok("UID FETCH 1:* (FLAGS)"))
    out["UID FETCH 1:* (FLAGS)"] = f"{t:.3f}"
    count = res[0]  # type: ignore[index]
    t, _ = timed(lambda: c.ok("FETCH 1:* (ENVELOPE BODYSTRUCTURE)"))
    out["FETCH 1:* (ENVELOPE BODYSTRUCTURE) warm"] = f"{t:.3f}"
    t, _ = timed(lambda: c.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"))
    out["FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"] = f"{t:.3f}"
    sender = manifest["search_from"]["search"]
    t, res = timed(lambda: c.cmd(f"UID SEARCH FROM {sender}"))
    hits = _hits(res[2])  # type: ignore[index]
    expect = manifest["search_from"]["messages"]
    out["UID SEARCH FROM x"] = f"{t:.3f}" + ("" if hits == expect else f" ({hits}≠{expect}!)")
    total = 0.0
    wrong = []
    for token, info in manifest["planted_tokens"].items():
        t, res = timed(lambda token=token: c.cmd(f"UID SEARCH TEXT {token}"))
        total += t
        hits = _hits(res[2])  # type: ignore[index]
        if hits != info["messages"]:
            wrong.append(f"{token}:{hits}≠{info['messages']}")
    n = len(manifest["planted_tokens"])
    out["UID SEARCH TEXT x (mean)"] = f"{total / n:.3f}" + (f" ({' '.join(wrong)}!)"
                                                            if wrong else "")
    rng = random.Random(7)
    picks = [rng.randint(1, count) for _ in range(args.bodies)]
    # From disk, then again from the page cache.  Dropped first so that both servers
    # start equal: this VM reclaims idle page cache (DAMON), so how much of a server's
    # copy is still cached depends on how long ago it was read (Kittiwake's indexer
    # read it minutes before; Dovecot's copy was written seconds before).
    cold = drop_page_cache()
    t, _ = timed(lambda: [c.ok(f"FETCH {n} (BODY.PEEK[])") for n in picks])
    out[f"{args.bodies} random full bodies" + (" (from disk)" if cold else "")] = f"{t:.3f}"
    t, _ = timed(lambda: [c.ok(f"FETCH {n} (BODY.PEEK[])") for n in picks])
    out[f"the same {args.bodies} again (cached)"] = f"{t:.3f}"
    c.close()

    def session(i: int, times: list[float]) -> None:
        start = time.perf_counter()
        s = Client(port)
        s.ok(f'LOGIN "{OWNER}" "{PASSWORD}"')
        s.ok("EXAMINE INBOX")
        s.ok("UID FETCH 1:* (FLAGS)")
        lo = 1 + (i * 997) % max(1, count - 500)
        s.ok(f"FETCH {lo}:{lo + 499} (ENVELOPE BODYSTRUCTURE)")
        s.ok(f"UID SEARCH TEXT {next(iter(manifest['planted_tokens']))}")
        s.close()
        times.append(time.perf_counter() - start)

    times: list[float] = []
    threads = [threading.Thread(target=session, args=(i, times)) for i in range(args.sessions)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out[f"{args.sessions} concurrent sessions (wall)"] = f"{time.perf_counter() - start:.3f}"
    return out


def run_kittiwake(work: Path, corpus: Path, manifest: dict,
                  args: argparse.Namespace) -> dict[str, str]:
    data = work / "kittiwake"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    port_file = data / "port"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, __file__, "--serve-kittiwake", str(data),
                             str(port_file)], env=env)
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kittiwake did not start")
            time.sleep(0.1)
        port = int(port_file.read_text())
        # A copy, as for Dovecot, not hard links: the corpus files were written long ago
        # and this VM's proactive reclaim (DAMON) may have dropped them from the page
        # cache, while Dovecot's fresh copy is in it — reads would not compare.
        copy_maildir(corpus, data / "mail" / "example.test" / "user")
        time.sleep(0.1)

        def settle() -> float:
            start = time.perf_counter()
            db = sqlite3.connect(f"file:{data / 'kittiwake.db'}?mode=ro", uri=True)
            while db.execute(
                    "SELECT COUNT(*) FROM mailboxes m LEFT JOIN index_state s ON"
                    " s.mailbox_id = m.id WHERE m.uidnext - 1 > COALESCE(s.indexed_uid, 0)"
            ).fetchone()[0]:
                time.sleep(0.2)
            db.close()
            return time.perf_counter() - start

        results = operations(port, manifest, args, settle)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        sampler.stop = True
    results["peak server memory (MiB, RSS incl. children)"] = f"{sampler.peak / 1024:.0f}"
    if os.environ.get("BENCH_VERBOSE"):
        print(sampler.per_process)
    return results


def run_dovecot(work: Path, corpus: Path, manifest: dict,
                args: argparse.Namespace) -> dict[str, str]:
    w = work / "dovecot"
    if w.exists():
        subprocess.run(["doveadm", "-c", str(w / "dovecot.conf"), "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(w, ignore_errors=True)
    for sub in ("run", "state", "home", "Maildir"):
        (w / sub).mkdir(parents=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(w / "key.pem"), "-out", str(w / "cert.pem"), "-days", "2", "-subj",
                    "/CN=localhost"], check=True, capture_output=True)
    port = free_port()
    (w / "dovecot.conf").write_text(DOVECOT_CONF.format(w=w, port=port, password=PASSWORD))
    os.chmod(work, 0o755)
    os.chmod(w, 0o755)
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(w / "dovecot.conf")])
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        wait_port(port)
        copy_maildir(corpus, w / "Maildir")  # its own copy: it renames files
        subprocess.run(["chown", "-R", "65534:65534", str(w / "Maildir"), str(w / "home")],
                       check=True)
        results = operations(port, manifest, args, lambda: None)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        sampler.stop = True
    results["peak server memory (MiB, RSS incl. children)"] = f"{sampler.peak / 1024:.0f}"
    return results


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-kittiwake":
        serve_kittiwake(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/imap-bench"))
    ap.add_argument("--no-dovecot", action="store_true")
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--bodies", type=int, default=100)
    args = ap.parse_args()
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus-{args.count}-{args.seed}"
    if not (corpus / "manifest.json").exists():
        print(f"making corpus of {args.count} messages ...", flush=True)
        subprocess.run([sys.executable, str(CORPUS_TOOL), "--count", str(args.count),
                        "--seed", str(args.seed), "--out", str(corpus), "--format", "maildir",
                        "--owner", OWNER], check=True)
    manifest = json.loads((corpus / "manifest.json").read_text())
    print(f"corpus: {manifest['count']} messages, {manifest['total_bytes'] / 1e6:.0f} MB",
          flush=True)
    results = {"Kittiwake": run_kittiwake(work, corpus, manifest, args)}
    if not args.no_dovecot and shutil.which("dovecot"):
        results["Dovecot"] = run_dovecot(work, corpus, manifest, args)
    names = list(results)
    rows = list(results[names[0]])
    width = max(len(r) for r in rows)
    print(f"\n{'operation (seconds)':{width}}  " + "  ".join(f"{n:>12}" for n in names))
    for row in rows:
        print(f"{row:{width}}  " + "  ".join(f"{results[n].get(row, '-'):>12}" for n in names))


if __name__ == "__main__":
    main()
