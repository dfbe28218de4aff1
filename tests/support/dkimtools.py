"""Independent DKIM implementations from Debian, driven from tests.

- Perl Mail::DKIM (`libmail-dkim-perl`): `perl_verify` checks every signature of a
  message with Mail::DKIM::Verifier, its DNS pointed at a test server (Net::DNS::Resolver
  with nameservers and port set, installed with `Mail::DKIM::DNS::resolver`);
  `perl_arc_verify` checks an ARC chain with Mail::DKIM::ARC::Verifier; `perl_sign`
  signs with Mail::DKIM::Signer. Debian 12's Mail::DKIM (1.20230212)
  implements rsa-sha256 only (no ed25519-sha256), so it reports Ed25519 signatures as
  unsupported ("invalid").
- OpenDKIM (`opendkim-tools`): `opendkim-testmsg` signs (needs no DNS) and verifies. It
  has no option to choose a nameserver: libopendkim asks the C library resolver, which
  reads /etc/resolv.conf and always uses port 53. `opendkim_verify` therefore runs it in a
  private mount namespace (`unshare -rm`) where /etc/resolv.conf is bind-mounted to a
  file naming the test server, which must listen on port 53 of a loopback address;
  `opendkim_dns_available()` says whether this host allows both.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

OPENDKIM_TESTMSG = shutil.which("opendkim-testmsg") or "/usr/sbin/opendkim-testmsg"

PERL_VERIFY = r"""
use strict; use warnings;
use Mail::DKIM::Verifier; use Mail::DKIM::DNS; use Net::DNS::Resolver;
my ($server, $port) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(
    nameservers => [$server], port => $port, recurse => 1, udp_timeout => 3,
    tcp_timeout => 3, retry => 1));
binmode STDIN;
my $v = Mail::DKIM::Verifier->new();
while (<STDIN>) { s/\r?\n\z/\015\012/; $v->PRINT($_); }
$v->CLOSE;
print "overall ", $v->result, "\n";
foreach my $sig ($v->signatures) {
    printf "sig %s %s %s %s\n", $sig->domain, $sig->selector, $sig->algorithm,
        $sig->result_detail;
}
"""

PERL_ARC_VERIFY = r"""
use strict; use warnings;
use Mail::DKIM::ARC::Verifier; use Mail::DKIM::DNS; use Net::DNS::Resolver;
my ($server, $port) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(
    nameservers => [$server], port => $port, recurse => 1, udp_timeout => 3,
    tcp_timeout => 3, retry => 1));
binmode STDIN;
my $v = Mail::DKIM::ARC::Verifier->new();
while (<STDIN>) { s/\r?\n\z/\015\012/; $v->PRINT($_); }
$v->CLOSE;
print $v->result, "\n", ($v->result_detail // ''), "\n";
"""

PERL_SIGN = r"""
use strict; use warnings;
use Mail::DKIM::Signer; use Mail::DKIM::TextWrap;
my ($domain, $selector, $keyfile) = @ARGV;
binmode STDIN; binmode STDOUT;
my $s = Mail::DKIM::Signer->new(Algorithm => 'rsa-sha256', Method => 'relaxed/relaxed',
    Domain => $domain, Selector => $selector, KeyFile => $keyfile,
    Headers => 'from:to:subject:date:message-id');
my $msg = '';
while (<STDIN>) { s/\r?\n\z/\015\012/; $s->PRINT($_); $msg .= $_; }
$s->CLOSE;
print $s->signature->as_string, "\015\012", $msg;
"""


def perl_available() -> bool:
    try:
        subprocess.run(["perl", "-MMail::DKIM::Verifier", "-MNet::DNS::Resolver", "-e", "1"],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def perl_verify(message: bytes, server: tuple[str, int]) -> tuple[str, list[tuple[str, ...]]]:
    """(overall result, [(domain, selector, algorithm, result detail)]) from Mail::DKIM."""
    proc = subprocess.run(["perl", "-e", PERL_VERIFY, server[0], str(server[1])],
                          input=message, capture_output=True, timeout=60, check=True)
    overall = ""
    sigs: list[tuple[str, ...]] = []
    for line in proc.stdout.decode().splitlines():
        if line.startswith("overall "):
            overall = line.split(" ", 1)[1]
        elif line.startswith("sig "):
            domain, selector, algorithm, detail = line[4:].split(" ", 3)
            sigs.append((domain, selector, algorithm, detail))
    return overall, sigs


def perl_arc_verify(message: bytes, server: tuple[str, int]) -> tuple[str, str]:
    """(result, detail) of Mail::DKIM::ARC::Verifier: pass / fail / none."""
    proc = subprocess.run(["perl", "-e", PERL_ARC_VERIFY, server[0], str(server[1])],
                          input=message, capture_output=True, timeout=60, check=True)
    result, _, detail = proc.stdout.decode().partition("\n")
    return result.strip(), detail.strip()


def perl_sign(message: bytes, domain: str, selector: str, keyfile: Path) -> bytes:
    proc = subprocess.run(["perl", "-e", PERL_SIGN, domain, selector, str(keyfile)],
                          input=message, capture_output=True, timeout=60, check=True)
    return proc.stdout


def opendkim_available() -> bool:
    return Path(OPENDKIM_TESTMSG).exists()


def opendkim_sign(message: bytes, domain: str, selector: str, keyfile: Path) -> bytes:
    """The message signed by libopendkim (relaxed/simple, its default; CRLF kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([OPENDKIM_TESTMSG, "-C", "-d", domain, "-s", selector, "-k",
                               str(keyfile), "-t", tmp], input=message, capture_output=True,
                              timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"opendkim-testmsg failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def _unshare(resolv_conf: Path, *argv: str) -> list[str]:
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, str(resolv_conf), *argv]


def opendkim_dns_available() -> bool:
    """Can we give opendkim-testmsg a private resolv.conf (user + mount namespace)?"""
    if not opendkim_available() or shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "resolv.conf"
        conf.write_text("nameserver 127.0.0.1\n")
        try:
            proc = subprocess.run(_unshare(conf, "cat", "/etc/resolv.conf"),
                                  capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return False
    return proc.returncode == 0 and proc.stdout.strip() == b"nameserver 127.0.0.1"


def opendkim_verify(message: bytes, nameserver: str) -> tuple[int, str]:
    """(exit status, stderr) of opendkim-testmsg verifying `message` with DNS from
    `nameserver`:53. Status 0 and no output mean every signature verified."""
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "resolv.conf"
        conf.write_text(f"nameserver {nameserver}\noptions timeout:2 attempts:1\n")
        proc = subprocess.run(_unshare(conf, OPENDKIM_TESTMSG, "-C", "-t", tmp),
                              input=message, capture_output=True, timeout=60)
    return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace").strip()
