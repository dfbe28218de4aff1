"""Hostile and random input to a real session: whatever the client sends, every command
gets exactly one tagged completion, the session keeps going, and no internal error (our
bug) is ever answered."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_imapserver_wire import Env, message, run

VERBS = [
    "NOOP", "CAPABILITY", "SELECT INBOX", "EXAMINE Sent", "FETCH 1:* (FLAGS)",
    "FETCH 1 (BODY.PEEK[1.MIME] BINARY.SIZE[1] BODYSTRUCTURE)", "UID FETCH 1:* (ENVELOPE)",
    "STORE 1 +FLAGS (\\Seen)", "UID STORE 1:* -FLAGS.SILENT (\\Seen $x)", "SEARCH ALL",
    "UID SEARCH OR FROM bob TEXT hello", "SEARCH RETURN (COUNT MIN) UNSEEN", "EXPUNGE",
    "COPY 1 Archive", "UID MOVE 1 Trash", "CREATE Fuzz/A", "DELETE Fuzz/A", "RENAME Fuzz Zz",
    'LIST "" "*"', 'LIST (SUBSCRIBED) "" "%" RETURN (STATUS (MESSAGES))', "LSUB \"\" *",
    "STATUS INBOX (MESSAGES UNSEEN SIZE)", "CLOSE", "UNSELECT", "CHECK", "NAMESPACE",
    "ENABLE QRESYNC", "GETQUOTAROOT INBOX", "ID NIL", "FETCH 99 FLAGS", "SEARCH UID $",
]
JUNK = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
LINES = st.lists(st.one_of(st.sampled_from(VERBS).map(str.encode), JUNK), min_size=1,
                 max_size=12)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=LINES)
def test_random_command_sequences_always_complete(tmp_path_factory: object,
                                                  lines: list[bytes]) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")  # type: ignore[attr-defined]

    async def go(env: Env) -> None:
        for n in (1, 2, 3):
            await env.deliver(message(n))
        c = await env.connect()
        await c.login()
        for i, line in enumerate(lines):
            tag = b"f%d" % i
            c.feed(tag + b" " + line + b"\r\n")
            out = await c.read_until(rb"^(?:" + tag + rb" |\* BAD )[^\r\n]*\r\n", timeout=10)
            assert b"Internal error" not in out and b"SERVERBUG" not in out
            if c.transport.closed:
                break
        assert not re.search(rb"UNAVAILABLE", b"".join(c.log))

    run(tmp, go)


def test_literal_flood_and_long_lines_are_refused_without_losing_step(tmp_path: Path) -> None:
    async def go(env: Env) -> None:
        c = await env.connect()
        await c.login()
        c.feed(b"x1 APPEND INBOX {999999999}\r\n")
        assert b"x1 " in await c.read_until(rb"^x1 [^\r\n]*\r\n")
        c.feed(b"x2 NOOP " + b"A" * 100_000 + b"\r\n")
        await c.read_until(rb"^x2 BAD[^\r\n]*\r\n")
        assert b" OK " in await c.cmd(b"NOOP")  # still in step

    run(tmp_path, go)
