"""Never lose mail: kill -9 under load, restart, and every acknowledged message is there."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
import threading
import time

import pytest

BODY = (b"x" * 98 + b"\r\n") * 30


def _sender(srv, n: int, acked: list[bytes], stop: threading.Event) -> None:
    i = 0
    while not stop.is_set() and i < 2000:
        try:
            with smtplib.SMTP(srv.host, srv.smtp, timeout=5) as c:
                while not stop.is_set() and i < 2000:
                    mid = b"<crash-%d-%d@remote.test>" % (n, i)
                    msg = b"Message-ID: " + mid + b"\r\nSubject: crash\r\n\r\n" + BODY
                    i += 1
                    c.sendmail("x@remote.test", ["alice@example.test"], msg)
                    acked.append(mid)  # only after the 250
        except (OSError, smtplib.SMTPException) as e:
            print("sender stopped:", repr(e))
            return


@pytest.mark.skipif(not shutil.which("smtp-source"), reason="postfix smtp-source not installed")
def test_kill9_under_load_loses_no_acknowledged_message(make_server):
    srv = make_server()
    load = subprocess.Popen(
        ["smtp-source", "-s", "10", "-m", "100000", "-l", "10240", "-f", "x@remote.test",
         "-t", "bob@example.test", f"{srv.host}:{srv.smtp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    acked: list[bytes] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_sender, args=(srv, n, acked, stop)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        srv.kill9()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        load.kill()
        load.wait()
    assert len(acked) >= 20, "the load did not get going"
    srv.start()  # restart: the store reconciles the Maildir with the index
    md = srv.maildir("alice@example.test")
    files = list((md / "new").iterdir()) + list((md / "cur").iterdir())
    contents = [f.read_bytes() for f in files]
    present = {line for c in contents for line in c.split(b"\r\n") if line.startswith(b"Message-ID: ")}
    missing = [m for m in acked if b"Message-ID: " + m not in present]
    assert not missing, f"{len(missing)} acknowledged messages lost"
    for c in contents:  # every visible file is a whole message, not a torn write
        assert c.endswith(BODY)
    rows = srv.index_rows("alice@example.test")
    assert sorted(f for _, f, _ in rows) == sorted(f.name.split(":")[0] for f in files)
    assert len({u for u, _, _ in rows}) == len(rows)
    for box in ("alice", "bob"):
        tmp = srv.maildir(f"{box}@example.test") / "tmp"
        assert not any(p.name in {f.name for f in files} for p in tmp.iterdir())
