#!/usr/bin/env python3
"""Queue delivery throughput between two Kittiwake instances.

Instance A (a.test) has N messages for bob@b.test in its outbound queue; instance B (b.test)
is their destination, found through a real NSD serving b.test's MX record. The queue is
filled while A is stopped (through the spool, the same durable enqueue the server uses),
then A is started and the clock runs until all N messages are in bob's Maildir at B. The
figure therefore covers A's whole path — spool, MX lookup, SMTP with STARTTLS and
PIPELINING over reused connections, B's durable delivery — plus A's start-up (~0.5 s).

    python bench/queue_delivery.py [--messages 2000] [--size 4096] [--per-domain 5,20]

Needs nsd (apt-get install nsd). Uses 127.0.0.12 (A) and 127.0.0.13 (B) on free ports;
A's [delivery] port points at B's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent),
                str(Path(__file__).resolve().parents[1] / "src"),
                str(Path(__file__).resolve().parents[1] / "tests")]

from submission import Instance, wait_count  # noqa: E402

from kittiwake.queue.models import QueuedRecipientSpec  # noqa: E402
from kittiwake.queue.spool import Spool  # noqa: E402
from support.dnsserver import DnsServer, nsd_available  # noqa: E402

A_HOST, B_HOST = "127.0.0.12", "127.0.0.13"


def fill(spool_dir: Path, n: int, size: int) -> float:
    """Queue `n` messages for bob@b.test; returns the seconds it took."""
    body = (b"x" * 76 + b"\r\n") * max(1, size // 78)
    t0 = time.perf_counter()
    with Spool(spool_dir, fsync=True) as spool:
        for i in range(n):
            content = (f"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: bench {i}\r\n"
                       f"Message-ID: <bench-{i}@a.test>\r\n\r\n").encode() + body
            spool.enqueue(f"Q{i:07d}", content, "alice@a.test",
                          [QueuedRecipientSpec("bob@b.test")], origin="submission",
                          now=time.time())
    return time.perf_counter() - t0


def run(root: Path, dns_port: int, n: int, size: int, per_domain: int, concurrency: int
        ) -> tuple[float, float, int]:
    # Both ask the bench's NSD: A for b.test's MX, B for a.test's SPF/DKIM/DMARC records
    # (none are published, so B's checks find "none" without waiting on outside DNS).
    dns = {"nameservers": ["127.0.0.1"], "port": dns_port}
    b = Instance(root / "b", B_HOST, "mx.b.test", "b.test", ("bob",), kinds=("smtp",),
                 sections={"dns": dns})
    a = Instance(root / "a", A_HOST, "mx.a.test", "a.test", ("alice",), kinds=("smtp",),
                 sections={"dns": dns,
                           "delivery": {"port": b.ports["smtp"], "per_domain": per_domain,
                                        "concurrency": concurrency}})
    a.write_config()
    enqueue_s = fill(a.data, n, size)
    b.start()
    try:
        maildir = b.maildir("bob")
        t0 = time.monotonic()
        a.start()
        try:
            got, t1 = wait_count(maildir, n, timeout=600)
        finally:
            a.stop()
    finally:
        b.stop()
    return enqueue_s, t1 - t0, got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000, help="messages queued (default 2000)")
    ap.add_argument("--size", type=int, default=4096, help="message body bytes (default 4096)")
    ap.add_argument("--per-domain", default="5,20",
                    help="[delivery] per_domain values to run (5 is the default)")
    ap.add_argument("--concurrency", type=int, default=20, help="[delivery] concurrency")
    args = ap.parse_args()
    if not nsd_available():
        print("nsd not found: apt-get install nsd", file=sys.stderr)
        return 1
    rows = []
    zones = {"b.test": f"@ MX 10 mx\nmx A {B_HOST}\n", "a.test": f"@ MX 10 mx\nmx A {A_HOST}\n"}
    with tempfile.TemporaryDirectory(prefix="kwbench-queue-") as tmp, DnsServer(zones) as dns:
        for per_domain in (int(x) for x in args.per_domain.split(",")):
            enqueue_s, secs, got = run(Path(tmp) / f"pd{per_domain}", dns.port, args.messages,
                                       args.size, per_domain, args.concurrency)
            rows.append((per_domain, enqueue_s, secs, got))
            print(f"  per_domain={per_domain} enqueue={args.messages / enqueue_s:.0f} msg/s "
                  f"delivery: {got}/{args.messages} in {secs:.2f}s = {got / secs:.1f} msg/s",
                  flush=True)
    print(f"\nQueue delivery a.test → b.test, {args.messages} messages of {args.size} bytes, "
          f"{os.cpu_count()} CPUs\n")
    print("| per_domain | enqueue msg/s | delivery seconds | delivered | delivery msg/s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for per_domain, enqueue_s, secs, got in rows:
        print(f"| {per_domain} | {args.messages / enqueue_s:.0f} | {secs:.2f} | {got} "
              f"| {got / secs:.0f} |")
    return 0 if all(r[3] == args.messages for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
