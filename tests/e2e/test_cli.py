"""The `kittiwake` command as a user runs it: init, the development default, management."""

from __future__ import annotations

import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time

import pytest
from conftest import ENV, kittiwake, wait_port

SUBCOMMANDS = [
    [], ["init"], ["serve"], ["check-config"], ["domain"], ["domain", "add"], ["domain", "del"],
    ["domain", "list"], ["user"], ["user", "add"], ["user", "del"], ["user", "list"],
    ["user", "passwd"], ["alias"], ["alias", "add"], ["alias", "del"], ["alias", "list"],
    ["queue"], ["queue", "list"], ["queue", "show"], ["queue", "retry"], ["queue", "delete"],
    ["queue", "flush"], ["sendmail"], ["dns"], ["dkim"], ["dkim", "keygen"], ["dkim", "activate"],
    ["dkim", "list"], ["dmarc"], ["dmarc", "report"],
]


@pytest.mark.parametrize("sub", SUBCOMMANDS, ids=lambda s: " ".join(s) or "kittiwake")
def test_every_subcommand_has_help(sub):
    r = kittiwake(*sub, "--help")
    assert r.returncode == 0
    assert "usage:" in r.stdout


def test_init_writes_config_data_dir_and_certificate(tmp_path):
    r = kittiwake("init", "--domain", "example.org", "--hostname", "mail.example.org",
                  "--dir", str(tmp_path), "--bind", "127.0.0.1")
    assert "Next steps" in r.stdout
    cfg = tmp_path / "kittiwake.toml"
    assert 'hostname = "mail.example.org"' in cfg.read_text()
    assert (tmp_path / "kittiwake-data" / "tls" / "cert.pem").exists()
    key = tmp_path / "kittiwake-data" / "tls" / "key.pem"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert kittiwake("domain", "list", config=cfg).stdout.split() == ["example.org"]
    assert kittiwake("check-config", config=cfg).returncode == 0
    again = kittiwake("init", "--domain", "example.org", "--hostname", "mail.example.org",
                      "--dir", str(tmp_path), check=False)
    assert again.returncode != 0  # never overwrites silently


def test_user_and_alias_management(tmp_path):
    kittiwake("init", "--domain", "example.org", "--hostname", "mail.example.org", "--dir", str(tmp_path))
    cfg = tmp_path / "kittiwake.toml"
    kittiwake("user", "add", "ann@example.org", "--password-stdin", config=cfg, input="s3cret-pass\n")
    assert kittiwake("user", "list", config=cfg).stdout.split() == ["ann@example.org"]
    short = kittiwake("user", "add", "bo@example.org", "--password-stdin", config=cfg, input="x\n", check=False)
    assert short.returncode != 0
    nodomain = kittiwake("user", "add", "x@other.org", "--password-stdin", config=cfg,
                         input="long enough\n", check=False)
    assert nodomain.returncode != 0 and "other.org" in nodomain.stderr
    kittiwake("alias", "add", "info@example.org", "ann@example.org", "ext@remote.org", config=cfg)
    listing = kittiwake("alias", "list", config=cfg).stdout
    assert "info@example.org -> ann@example.org" in listing
    assert "info@example.org -> ext@remote.org" in listing
    kittiwake("alias", "del", "info@example.org", config=cfg)
    assert kittiwake("alias", "list", config=cfg).stdout.strip() == ""
    kittiwake("user", "passwd", "ann@example.org", "--password-stdin", config=cfg, input="another-pass\n")
    import sqlite3
    db = sqlite3.connect(tmp_path / "kittiwake-data" / "kittiwake.db")
    [(stored,)] = db.execute("SELECT password_hash FROM accounts")
    assert stored.startswith("$argon2id$") and "another-pass" not in stored
    kittiwake("user", "del", "ann@example.org", config=cfg)
    assert kittiwake("user", "list", config=cfg).stdout.strip() == ""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks not installed")
@pytest.mark.skipif(not _port_free(2525), reason="port 2525 busy")
def test_development_default_accepts_mail_for_postmaster_at_localhost(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "KITTIWAKE_CONFIG"}
    proc = subprocess.Popen([sys.executable, "-m", "kittiwake.cli", "serve"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", 2525)
        r = subprocess.run(["swaks", "--to", "postmaster@localhost", "--server", "127.0.0.1:2525"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout
        new = tmp_path / "kittiwake-data" / "mail" / "localhost" / "postmaster" / "new"
        assert len(list(new.iterdir())) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_sigterm_lets_a_transaction_finish_and_then_stops(make_server):
    srv = make_server(limits={"shutdown_grace": 10.0})
    idle = socket.create_connection((srv.host, srv.smtp), timeout=10)
    idle_f = idle.makefile("rb")
    assert idle_f.readline().startswith(b"220")
    c = smtplib.SMTP(srv.host, srv.smtp, timeout=10)
    c.ehlo("c")
    c.mail("x@remote.test")
    c.rcpt("alice@example.test")
    srv.proc.send_signal(signal.SIGTERM)
    assert idle_f.readline().startswith(b"421 4.3.2")  # idle session told at once
    time.sleep(0.3)
    code, _ = c.data(b"Subject: in flight\r\n\r\nfinished during shutdown\r\n")
    assert code == 250
    assert srv.proc.wait(timeout=20) == 0
    srv.proc = None
    assert len(srv.messages("alice@example.test")) == 1
    with pytest.raises(OSError):
        socket.create_connection((srv.host, srv.smtp), timeout=2).close()
