"""Real IMAP clients against a real Kittiwake IMAP server on loopback: IMAPClient, curl
(imap:// with STARTTLS and imaps://), mbsync (isync) syncing both ways, and mutt reading a
message in batch mode.  Each checks that what the client reads is what was delivered.

mbsync and mutt keep mail with LF line endings locally (their documented behaviour), so
their copies are compared after CRLF → LF (and without mbsync's own X-TUID marker
header); everything else byte for byte.
Debian packages: curl, isync, mutt (and util-linux's `script` for mutt's terminal).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from test_imap_server import ALICE, MIME, PASSWORD, ImapEnv, imap_env, message

__all__ = ["imap_env"]  # the fixture, re-exported for pytest

imapclient = pytest.importorskip("imapclient")


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


# ---------------------------------------------------------------------------- IMAPClient


def test_imapclient_full_session(imap_env: ImapEnv) -> None:
    sent = [message(1), MIME]
    for content in sent:
        imap_env.deliver(content)
    c = imapclient.IMAPClient("127.0.0.1", port=imap_env.ports["imaps"], ssl=True,
                              ssl_context=imap_env.client_ctx, timeout=10)
    c.login(ALICE, PASSWORD)
    assert b"MOVE" in c.capabilities() and c.has_capability("IDLE")
    folders = {name for _flags, _delim, name in c.list_folders()}
    assert {"INBOX", "Sent", "Drafts", "Trash", "Archive", "Junk"} <= folders
    assert c.find_special_folder(imapclient.imapclient.SENT) == "Sent"
    info = c.select_folder("INBOX")
    assert info[b"EXISTS"] == 2 and b"UIDVALIDITY" in info
    uids = c.search(["ALL"])
    assert uids == [1, 2]
    data = c.fetch(uids, ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY",
                          "BODYSTRUCTURE", "BODY.PEEK[]", "BODY.PEEK[HEADER]", "MODSEQ",
                          "BINARY.PEEK[1]", "BINARY.SIZE[1]", "UID"])
    for uid, content in zip(uids, sent, strict=True):
        item = data[uid]
        assert item[b"BODY[]"] == content
        assert item[b"RFC822.SIZE"] == len(content)
        assert item[b"BODY[HEADER]"] == content[: content.index(b"\r\n\r\n") + 4]
        assert item[b"FLAGS"] == ()
        assert item[b"MODSEQ"][0] > 0
    assert data[2][b"ENVELOPE"].subject == b"with attachment"
    assert data[2][b"BODYSTRUCTURE"].is_multipart
    assert data[2][b"BINARY[1]"] == b"See the attached file."
    assert c.search(["FROM", "carol"]) == [2]
    assert c.search(["TEXT", "attached"]) == [2]
    c.add_flags([1], [imapclient.SEEN, b"$Label1"])
    assert set(c.get_flags([1])[1]) == {b"\\Seen", b"$Label1"}
    c.remove_flags([1], [b"$Label1"])
    assert c.get_flags([1])[1] == (b"\\Seen",)
    assert c.search(["UNSEEN"]) == [2]
    c.copy([1], "Archive")
    c.move([2], "Trash")
    assert c.search(["ALL"]) == [1]
    result = c.append("Drafts", message(7), flags=[imapclient.DRAFT])
    assert b"APPENDUID" in result
    c.set_flags([1], [imapclient.DELETED])
    c.expunge()
    assert c.search(["ALL"]) == []
    c.select_folder("Trash", readonly=True)
    moved = c.fetch([1], ["BODY.PEEK[]"])
    assert moved[1][b"BODY[]"] == MIME
    # IDLE: a delivery shows up within a second.
    c.select_folder("INBOX")
    c.idle()
    start = time.monotonic()
    imap_env.deliver(message(8))
    responses = c.idle_check(timeout=2)
    assert (1, b"EXISTS") in responses and time.monotonic() - start < 1.0
    c.idle_done()
    assert c.folder_status("INBOX", ["MESSAGES", "UIDNEXT"])[b"MESSAGES"] == 1
    c.logout()


# ---------------------------------------------------------------------------- curl


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_imap_starttls_and_imaps(imap_env: ImapEnv) -> None:
    sent = [message(1), MIME]
    for content in sent:
        imap_env.deliver(content)
    auth = f"{ALICE}:{PASSWORD}"
    base = ["curl", "-sS", "--cacert", str(imap_env.ca_pem), "-u", auth, "--max-time", "20"]
    got = subprocess.run(
        [*base, "--ssl-reqd", f"imap://127.0.0.1:{imap_env.ports['imap']}/INBOX;UID=1"],
        capture_output=True, check=True, timeout=30).stdout
    assert got == sent[0]
    got = subprocess.run(
        [*base, f"imaps://127.0.0.1:{imap_env.ports['imaps']}/INBOX;UID=2"],
        capture_output=True, check=True, timeout=30).stdout
    assert got == sent[1]
    listing = subprocess.run([*base, f"imaps://127.0.0.1:{imap_env.ports['imaps']}/"],
                             capture_output=True, check=True, timeout=30).stdout
    assert b'"Sent"' in listing and b"\\Sent" in listing
    search = subprocess.run([*base, "-X", "SEARCH FROM carol",
                             f"imaps://127.0.0.1:{imap_env.ports['imaps']}/INBOX"],
                            capture_output=True, check=True, timeout=30).stdout
    assert search.strip() == b"* SEARCH 2"


# ---------------------------------------------------------------------------- mbsync


def _mbsyncrc(env: ImapEnv, local: Path) -> Path:
    rc = env.root / "mbsyncrc"
    rc.write_text(f"""IMAPAccount kw
Host 127.0.0.1
Port {env.ports['imaps']}
User {ALICE}
Pass "{PASSWORD}"
SSLType IMAPS
CertificateFile {env.ca_pem}

IMAPStore kw-remote
Account kw

MaildirStore kw-local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel kw
Far :kw-remote:
Near :kw-local:
Patterns *
Create Both
Expunge Both
SyncState *
Sync All
""")
    return rc


def _local_files(folder: Path) -> dict[str, bytes]:
    """Message files of a local Maildir, without the X-TUID header mbsync adds to every
    message it propagates (its own transaction marker)."""
    return {p.name: re.sub(rb"(?m)^X-TUID: [^\n]*\n", b"", p.read_bytes())
            for sub in ("new", "cur") if (folder / sub).is_dir() for p in (folder / sub).iterdir()}


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync not installed")
def test_mbsync_syncs_both_ways(imap_env: ImapEnv) -> None:
    sent = [message(1), MIME]
    for content in sent:
        imap_env.deliver(content)
    local = imap_env.root / "local"
    local.mkdir()
    rc = _mbsyncrc(imap_env, local)

    def sync() -> None:
        proc = subprocess.run(["mbsync", "-c", str(rc), "-a"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    sync()
    inbox = _local_files(local / "INBOX")
    assert sorted(inbox.values()) == sorted(lf(c) for c in sent)
    assert {"Sent", "Drafts", "Trash", "Archive", "Junk"} <= {p.name for p in local.iterdir()}
    # A new local message goes up; a flag set on the server comes down.
    written = lf(message(5, subject="written offline"))
    (local / "Drafts" / "cur" / "1700000000.local.host:2,DS").write_bytes(written)
    c = imap_env.tls()
    c.select("INBOX")
    c.store("1", "+FLAGS", r"(\Flagged)")
    c.logout()
    sync()
    flagged = [name for name, data in _local_files(local / "INBOX").items()
               if data == lf(sent[0])]
    assert len(flagged) == 1 and ":2," in flagged[0] and "F" in flagged[0].split(":2,")[1]
    c = imap_env.tls()
    c.select("Drafts")
    typ, data = c.fetch("1", "(FLAGS BODY.PEEK[])")
    assert typ == "OK"
    assert b"\\Draft" in data[0][0] and b"\\Seen" in data[0][0]
    body = data[0][1]
    # mbsync adds its X-TUID header while uploading; the rest is the local message.
    assert body.replace(b"\r\n", b"\n").endswith(written.split(b"\n\n", 1)[1])
    assert b"Subject: written offline" in body
    c.logout()


# ---------------------------------------------------------------------------- mutt


@pytest.mark.skipif(shutil.which("mutt") is None or shutil.which("script") is None,
                    reason="mutt (and util-linux script) not installed")
def test_mutt_reads_a_message_in_batch_mode(imap_env: ImapEnv) -> None:
    content = message(1, subject="for mutt")
    imap_env.deliver(content)
    home = imap_env.root / "mutthome"
    home.mkdir()
    out = imap_env.root / "piped.eml"
    rc = home / "muttrc"
    rc.write_text(f"""set folder="imaps://{ALICE.replace('@', '%40')}@127.0.0.1:{imap_env.ports['imaps']}/"
set spoolfile="+INBOX"
set imap_pass="{PASSWORD}"
set ssl_ca_certificates_file="{imap_env.ca_pem}"
set wait_key=no
set quit=yes
set pipe_decode=no
set header_cache=""
set message_cachedir=""
set mail_check=0
set timeout=1
set move=no
""")
    keys = f"push '<pipe-message>cat > {out}<enter><quit>'"
    # mutt is a terminal program: `script` gives it a pseudo-terminal.
    cmd = f'mutt -n -F {rc} -e "{keys}"'
    proc = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True,
                          timeout=60, env=dict(os.environ, HOME=str(home), TERM="xterm"))
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert out.read_bytes() == lf(content)
    # On leaving, mutt marked what it saw as old: its "Old" keyword reached the server.
    c = imap_env.tls()
    c.select("INBOX", readonly=True)
    assert b"Old" in c.fetch("1", "(FLAGS)")[1][0]
    c.logout()
