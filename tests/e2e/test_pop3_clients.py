"""Real POP3 clients against the real server: curl (pop3:// with STLS, pop3s://) and
fetchmail (UIDL-based --keep runs, and deleting runs), each compared byte for byte with what
was delivered. Debian packages: curl, fetchmail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_pop3_poplib import ALICE, PASSWORD, Pop3Env, message, pop3

__all__ = ["pop3"]  # the fixture, imported for pytest

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
needs_fetchmail = pytest.mark.skipif(shutil.which("fetchmail") is None,
                                     reason="fetchmail not installed (apt-get install fetchmail)")


def curl(env: Pop3Env, url: str, *args: str, user: str = ALICE,
         password: str = PASSWORD) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", "--cacert", str(env.ca_pem),
         "--user", f"{user}:{password}", *args, url],
        capture_output=True, timeout=30, check=False)


@needs_curl
def test_curl_pop3_with_stls_retrieves_byte_for_byte(pop3: Pop3Env) -> None:
    contents = [message(n) for n in range(2)]
    for c in contents:
        pop3.deliver(c)
    base = f"pop3://127.0.0.1:{pop3.ports['pop3']}/"
    listing = curl(pop3, base, "--ssl-reqd")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout == b"".join(f"{n} {len(c)}\r\n".encode()
                                      for n, c in enumerate(contents, 1))
    for n, c in enumerate(contents, 1):
        got = curl(pop3, f"{base}{n}", "--ssl-reqd")
        assert got.returncode == 0, got.stderr
        assert got.stdout == c
    uidl = curl(pop3, base, "--ssl-reqd", "--request", "UIDL")
    validity = pop3.maildrop().uidvalidity
    assert uidl.stdout == b"".join(f"{n} {validity}.{r.uid}\r\n".encode()
                                   for n, r in enumerate(pop3.rows(), 1))


@needs_curl
def test_curl_pop3s_implicit_tls(pop3: Pop3Env) -> None:
    content = message(7, b"." * 50 + b"\r\n")
    pop3.deliver(content)
    got = curl(pop3, f"pop3s://127.0.0.1:{pop3.ports['pop3s']}/1")
    assert got.returncode == 0, got.stderr
    assert got.stdout == content


@needs_curl
def test_curl_without_tls_cannot_log_in(pop3: Pop3Env) -> None:
    pop3.deliver(message(1))
    got = curl(pop3, f"pop3://127.0.0.1:{pop3.ports['pop3']}/1")
    assert got.returncode == 67  # CURLE_LOGIN_DENIED: USER refused, PLAIN not offered
    assert got.stdout == b""


@needs_curl
def test_curl_wrong_password_is_denied(pop3: Pop3Env) -> None:
    got = curl(pop3, f"pop3s://127.0.0.1:{pop3.ports['pop3s']}/", password="wrong")
    assert got.returncode == 67


# --- fetchmail -------------------------------------------------------------------------------

SAVE = """import os, sys, time
out = sys.argv[1]
name = f"{time.time_ns()}-{os.getpid()}.eml"
with open(os.path.join(out, name), "wb") as f:
    f.write(sys.stdin.buffer.read())
"""


class Fetchmail:
    """fetchmail with its own rc, id file and HOME; messages go to an MDA that writes one
    file each. `invisible` stops it adding a Received field, `no stripcr` keeps CRLF, so
    what lands on disk must equal what was delivered."""

    def __init__(self, env: Pop3Env, root: Path, *, implicit_tls: bool) -> None:
        self.env = env
        self.root = root
        self.out = root / "out"
        self.out.mkdir(parents=True)
        (root / "save.py").write_text(SAVE)
        self.implicit_tls = implicit_tls

    def run(self, *, keep: bool) -> subprocess.CompletedProcess[str]:
        port = self.env.ports["pop3s" if self.implicit_tls else "pop3"]
        rc = self.root / "fetchmailrc"
        rc.write_text(
            "set no bouncemail\nset invisible\n"
            f"poll localhost via 127.0.0.1 protocol POP3 port {port} uidl\n"
            f'  user "{ALICE}" there with password "{PASSWORD}" is "me" here\n'
            + ("  ssl\n" if self.implicit_tls else "")
            + f'  sslcertck sslcertfile "{self.env.ca_pem}" sslcommonname localhost\n'
            f'  mda "{sys.executable} {self.root / "save.py"} {self.out}"\n'
            f"  {'keep' if keep else 'no keep'} no rewrite no stripcr\n")
        rc.chmod(0o600)
        return subprocess.run(
            ["fetchmail", "--fetchmailrc", str(rc), "--idfile", str(self.root / "ids"),
             "--pidfile", str(self.root / "pid"), "--nosyslog", "--verbose"],
            capture_output=True, text=True, timeout=60, check=False,
            env=dict(os.environ, HOME=str(self.root)))

    def fetched(self) -> list[bytes]:
        files = sorted(self.out.iterdir(), key=lambda p: p.name)
        data = [p.read_bytes() for p in files]
        for p in files:
            p.unlink()
        return data


@needs_fetchmail
def test_fetchmail_keep_fetches_only_new_mail_by_uidl(pop3: Pop3Env, tmp_path: Path) -> None:
    first = [message(n) for n in range(3)]
    for c in first:
        pop3.deliver(c)
    fm = Fetchmail(pop3, tmp_path / "fm", implicit_tls=False)  # STLS on the plain port
    result = fm.run(keep=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "STLS" in result.stdout
    assert fm.fetched() == first
    assert len(pop3.rows()) == 3  # kept on the server

    later = [message(n) for n in range(3, 5)]
    for c in later:
        pop3.deliver(c)
    result = fm.run(keep=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert fm.fetched() == later  # only what the UIDL list had not seen
    result = fm.run(keep=True)
    assert result.returncode == 1  # fetchmail: "no mail"
    assert fm.fetched() == []
    assert len(pop3.rows()) == 5


@needs_fetchmail
def test_fetchmail_without_keep_deletes_what_it_fetched(pop3: Pop3Env, tmp_path: Path) -> None:
    contents = [message(n, b".\r\n..\r\n") for n in range(4)]
    for c in contents:
        pop3.deliver(c)
    fm = Fetchmail(pop3, tmp_path / "fm", implicit_tls=True)
    result = fm.run(keep=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert fm.fetched() == contents
    assert pop3.rows() == []
    assert pop3.files() == []
    late = message(99)
    pop3.deliver(late)
    result = fm.run(keep=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert fm.fetched() == [late]
    assert pop3.rows() == []
