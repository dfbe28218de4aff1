"""The IMAP session: authentication, mailbox commands, LIST, STATUS, quota, COMPRESS."""

from __future__ import annotations

import base64
import re
import zlib
from pathlib import Path

from test_imapserver_wire import ALICE, PASSWORD, Env, message, run
from test_sasl import ScramClient

from kittiwake.store import Directory


def test_authenticate_plain_with_and_without_initial_response(tmp_path: Path) -> None:
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()

    async def go(env: Env) -> None:
        c = await env.connect()
        assert b"OK [CAPABILITY" in await c.cmd(f"AUTHENTICATE PLAIN {token}")
        c2 = await env.connect()
        c2.feed(b"t1 AUTHENTICATE PLAIN\r\n")
        assert (await c2.read_until(rb"^\+ ?\r\n")).startswith(b"+")
        c2.feed(token.encode() + b"\r\n")
        assert b"t1 OK" in await c2.read_until(rb"^t1 \w+[^\r\n]*\r\n")
        c3 = await env.connect()
        c3.feed(b"t1 AUTHENTICATE PLAIN\r\n")
        await c3.read_until(rb"^\+ ?\r\n")
        c3.feed(b"*\r\n")  # RFC 9051 §6.2.2: cancel is answered BAD
        assert b"t1 BAD" in await c3.read_until(rb"^t1 \w+[^\r\n]*\r\n")
        bad = base64.b64encode(f"\0{ALICE}\0nope".encode()).decode()
        assert b"NO [AUTHENTICATIONFAILED]" in await c3.cmd(f"AUTHENTICATE PLAIN {bad}")

    run(tmp_path, go)


def test_authenticate_scram_sha_256_before_tls(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect(tls=False)
        scram = ScramClient(ALICE, PASSWORD)
        first = base64.b64encode(scram.first()).decode()
        c.feed(f"s1 AUTHENTICATE SCRAM-SHA-256 {first}\r\n".encode())
        line = await c.read_until(rb"^\+ [^\r\n]*\r\n")
        server_first = base64.b64decode(line[2:].strip())
        c.feed(base64.b64encode(scram.final(server_first)) + b"\r\n")
        line = await c.read_until(rb"^\+ [^\r\n]*\r\n")
        assert scram.verify(base64.b64decode(line[2:].strip()))
        c.feed(b"\r\n")
        assert b"s1 OK" in await c.read_until(rb"^s1 \w+[^\r\n]*\r\n")
        # PLAIN stays refused on the plaintext connection.
        c2 = await env.connect(tls=False)
        assert b"NO [PRIVACYREQUIRED]" in await c2.cmd("AUTHENTICATE PLAIN AGFsaWNlAHB3")

    run(tmp_path, go)


def test_commands_before_login_are_refused(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        assert b"a1 BAD" in await c.cmd("SELECT INBOX")
        assert b"* ID (" in await c.cmd('ID ("name" "test")')
        caps = await c.cmd("CAPABILITY")
        assert b"IMAP4rev2" in caps
        out = await c.cmd("LOGOUT")
        assert b"* BYE" in out and b"OK LOGOUT" in out
        assert c.transport.closed

    run(tmp_path, go)


def test_list_patterns_special_use_and_children(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        assert b"OK" in await c.cmd("CREATE Work/Projects/Kittiwake")
        out = await c.cmd('LIST "" "*"')
        assert b'* LIST (\\HasNoChildren) "/" INBOX' in out
        assert b'(\\HasNoChildren \\Sent) "/" "Sent"' in out
        assert b'(\\HasChildren) "/" "Work"' in out
        assert b'"Work/Projects/Kittiwake"' in out
        top = await c.cmd('LIST "" "%"')
        assert b'"Work"' in top and b"Work/Projects" not in top
        level = await c.cmd('LIST "Work/" "%"')
        assert b'"Work/Projects"' in level and b"Kittiwake" not in level
        root = await c.cmd('LIST "" ""')
        assert b'* LIST (\\Noselect) "/" ""' in root
        inbox = await c.cmd('LIST "" "inbox"')
        assert b"INBOX" in inbox
        special = await c.cmd('LIST (SPECIAL-USE) "" "*"')
        assert b"\\Trash" in special and b'"Work"' not in special and b"INBOX" not in special
        await c.cmd("UNSUBSCRIBE Junk")
        subs = await c.cmd('LIST (SUBSCRIBED) "" "*"')
        assert b"\\Subscribed" in subs and b'"Junk"' not in subs
        lsub = await c.cmd('LSUB "" "*"')
        assert b'* LSUB (\\HasNoChildren) "/" INBOX' in lsub and b'"Junk"' not in lsub
        status = await c.cmd('LIST "" "INBOX" RETURN (STATUS (MESSAGES UIDNEXT SIZE))')
        assert b"* STATUS INBOX (MESSAGES 0 UIDNEXT 1 SIZE 0)" in status

    run(tmp_path, go)


def test_list_recursivematch_childinfo(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        await c.cmd("CREATE a/b")
        await c.cmd("UNSUBSCRIBE a")
        out = await c.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
        assert re.search(rb'\* LIST \([^)]*\) "/" "a" \("CHILDINFO" \("SUBSCRIBED"\)\)', out)

    run(tmp_path, go)


def test_create_delete_rename_subscribe(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        assert b"OK" in await c.cmd("CREATE Reports/2024")
        assert b"NO [ALREADYEXISTS]" in await c.cmd("CREATE Reports/2024")
        assert b"NO [HASCHILDREN]" in await c.cmd("DELETE Reports")
        assert b"NO" in await c.cmd("DELETE INBOX")
        assert b"NO [NONEXISTENT]" in await c.cmd("DELETE Nope")
        assert b"OK" in await c.cmd("RENAME Reports Old")
        out = await c.cmd('LIST "" "*"')
        assert b'"Old/2024"' in out and b"Reports" not in out
        assert b"OK" in await c.cmd("CREATE Mine (USE (\\Flagged))")
        assert b"\\Flagged" in await c.cmd('LIST "" "Mine"')
        assert b"NO [USEATTR]" in await c.cmd("CREATE Other (USE (\\Bogus))")
        assert b"OK" in await c.cmd("SUBSCRIBE Old")
        assert b"OK" in await c.cmd("DELETE Old/2024")
        assert b"OK" in await c.cmd("DELETE Old")
        assert b"NO [NONEXISTENT]" in await c.cmd("SUBSCRIBE Old")
        assert b"NO [NONEXISTENT]" in await c.cmd("SELECT Old")

    run(tmp_path, go)


def test_utf8_names_after_enable_and_mutf7_before(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        assert b"OK" in await c.cmd("CREATE &AMk-t&AOk-")  # "Été" in modified UTF-7
        assert b'"&AMk-t&AOk-"' in await c.cmd('LIST "" "*"')
        c2 = await env.connect()
        await c2.login()
        assert b"* ENABLED UTF8=ACCEPT" in await c2.cmd("ENABLE UTF8=ACCEPT")
        assert '"Été"'.encode() in await c2.cmd('LIST "" "*"')

    run(tmp_path, go)


def test_status_namespace_and_quota(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        with Directory(tmp_path / "kittiwake.db") as d:
            d.set_quota(ALICE, 10 * 1024)
        await env.deliver(message(1), flags=frozenset({"\\Seen"}))
        await env.deliver(message(2), flags=frozenset({"\\Deleted"}))
        c = await env.connect()
        await c.login()
        out = await c.cmd("STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE "
                          "HIGHESTMODSEQ RECENT)")
        m = re.search(rb"\* STATUS INBOX \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY \d+ UNSEEN 1 "
                      rb"DELETED 1 SIZE (\d+) HIGHESTMODSEQ \d+ RECENT 0\)", out)
        assert m and int(m.group(1)) == len(message(1)) + len(message(2))
        assert b'* NAMESPACE (("" "/")) NIL NIL' in await c.cmd("NAMESPACE")
        q = await c.cmd("GETQUOTAROOT INBOX")
        assert b'* QUOTAROOT INBOX ""' in q and b'* QUOTA "" (STORAGE 1 10)' in q
        assert b"NO [NOPERM]" in await c.cmd('SETQUOTA "" (STORAGE 1)')
        big = b"x" * (11 * 1024)
        c.feed(b"a99 APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
        assert b"a99 NO [OVERQUOTA]" in await c.read_until(rb"^a99 [^\r\n]*\r\n")

    run(tmp_path, go)


def test_compress_deflate_wraps_both_directions(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        assert b"OK" in await c.cmd("COMPRESS DEFLATE")
        start = len(c.transport.data)
        out = zlib.compressobj(6, zlib.DEFLATED, -15)
        c.feed(out.compress(b"z1 NOOP\r\nz2 CAPABILITY\r\n") + out.flush(zlib.Z_SYNC_FLUSH))
        inflate = zlib.decompressobj(-15)
        text = b""
        for _ in range(200):
            text = inflate.decompress(bytes(c.transport.data[start:]))
            if b"z2 OK" in text:
                break
            inflate = zlib.decompressobj(-15)
            import asyncio

            await asyncio.sleep(0.01)
        assert b"z1 OK" in text and b"z2 OK" in text
        assert b"COMPRESS=DEFLATE" not in text  # RFC 4978 §4: not offered twice

    run(tmp_path, go)


def test_unknown_and_malformed_commands_are_bad_and_session_goes_on(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        assert b"a2 BAD" in await c.cmd("FROB")
        assert b"a3 BAD" in await c.cmd("SELECT")
        assert b"a4 OK" in await c.cmd("NOOP")
        await c.cmd("SELECT INBOX")
        assert b"a6 BAD" in await c.cmd("FETCH 1 FLAGS")  # no message 1

    run(tmp_path, go)
