"""parse_structure against arbitrary bytes (hypothesis) and a realistic corpus, checked
against Python's email package (RFC 2045/2046 part trees)."""

from __future__ import annotations

import binascii
import email
import email.message
import email.policy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kittiwake.message import structure
from kittiwake.message.structure import (
    binary_size,
    format_bodystructure,
    format_envelope,
    parse_structure,
)

CORPUS_TOOL = Path("/work/shared/tools/make-corpus.py")


def tree(node: dict[str, Any]) -> tuple[str, list[Any]]:
    """(type/subtype, children) - the shape the email package also reports."""
    ctype = f"{node['type']}/{node['subtype']}".lower()
    if "parts" in node:
        return ctype, [tree(p) for p in node["parts"]]
    if "msg" in node:
        return ctype, [tree(node["msg"])]
    return ctype, []


def check_offsets(node: dict[str, Any], lo: int, hi: int) -> None:
    """Every node lies inside its parent's body; siblings are in order, disjoint."""
    assert lo <= node["h"] <= node["b"] <= node["e"] <= hi
    if "parts" in node:
        assert node["parts"], "a multipart always has a part"
        previous = node["b"]
        for part in node["parts"]:
            assert part["h"] >= previous
            check_offsets(part, node["b"], node["e"])
            previous = part["e"]
    if "msg" in node:
        assert (node["msg"]["h"], node["msg"]["e"]) == (node["b"], node["e"])
        check_offsets(node["msg"], node["b"], node["e"])


# --------------------------------------------------------------------------- properties

_CHUNKS = st.sampled_from([
    b"--b\r\n", b"--b--\r\n", b"--c\n", b"--c--", b"\r\n", b"\n", b"\r", b"x", b" ", b"--",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: multipart/digest; boundary=\"c\"\n",
    b"Content-Type: message/rfc822\r\n", b"Content-Type: text/plain; charset=utf-8\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\n",
    b"Content-Disposition: attachment; filename*0*=utf-8''a%; filename*1=b\r\n",
    b"To: g: a@b, <c@d>;\r\n", b"From: \"x\\\" (y <z@w>\r\n", b"Subject: =?utf-8?b?w6k=?=\r\n",
    b"\tfolded\r\n", b"QUJD==\r\n", b"=3D=\r\n", b"\xff\xfe\x00",
])


def _assert_sane(raw: bytes) -> None:
    struct = structure._parse(raw)
    check_offsets(struct, 0, len(raw))
    json.loads(json.dumps(struct))
    for extensible in (True, False):
        format_bodystructure(struct, extensible)
    format_envelope(struct)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    _assert_sane(raw)
    assert parse_structure(raw)["v"] == structure.SCHEMA_VERSION


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_CHUNKS, max_size=80).map(b"".join))
def test_never_raises_on_mime_shaped_bytes(raw: bytes) -> None:
    _assert_sane(raw)


# --------------------------------------------------------------------------- corpus


def _python_tree(message: email.message.Message) -> tuple[str, list[Any]]:
    ctype = message.get_content_type()
    if message.is_multipart():
        payload = message.get_payload()
        assert isinstance(payload, list)
        return ctype, [_python_tree(p) for p in payload if isinstance(p, email.message.Message)]
    return ctype, []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    if not CORPUS_TOOL.exists():
        pytest.skip("corpus generator not available")
    out = tmp_path_factory.mktemp("corpus")
    subprocess.run(
        [sys.executable, str(CORPUS_TOOL), "--count", "200", "--seed", "1", "--out", str(out),
         "--format", "eml"],
        check=True, capture_output=True,
    )
    files = sorted(out.glob("*.eml"))
    assert len(files) == 200
    return files


def test_corpus_parses_and_agrees_with_python_email(corpus: list[Path]) -> None:
    for path in corpus:
        raw = path.read_bytes()
        struct = structure._parse(raw)
        check_offsets(struct, 0, len(raw))
        expected = _python_tree(email.message_from_bytes(raw, policy=email.policy.compat32))
        assert tree(struct) == expected, path.name
        format_bodystructure(struct)
        format_envelope(struct)


def test_corpus_part_bodies_decode_like_python_email(corpus: list[Path]) -> None:
    """Offsets are exact: our part bodies decode to what the email package decodes."""
    checked = 0
    for path in corpus[:60]:
        raw = path.read_bytes()
        struct = parse_structure(raw)
        ours: list[dict[str, Any]] = []

        def leaves(node: dict[str, Any], out: list[dict[str, Any]] = ours) -> None:
            if "parts" in node:
                for p in node["parts"]:
                    leaves(p)
            elif "msg" in node:
                leaves(node["msg"])
            else:
                out.append(node)

        leaves(struct)
        theirs = [p for p in email.message_from_bytes(raw).walk() if not p.is_multipart()]
        assert len(ours) == len(theirs)
        for node, part in zip(ours, theirs, strict=True):
            if node.get("enc", "").lower() == "base64":
                decoded = binascii.a2b_base64(raw[node["b"] : node["e"]])
                assert decoded == part.get_payload(decode=True)
                assert binary_size(node, raw) == len(decoded)
                checked += 1
    assert checked > 10


def test_corpus_truncated_and_mutated_never_breaks(corpus: list[Path]) -> None:
    """Real messages cut short or damaged (lost boundaries, stray nesting) still parse."""
    import random

    rng = random.Random(5)
    damage = [b"", b"\r\n", b"--", b"\n\n", b"\xff", b"Content-Type: message/rfc822\r\n\r\n"]
    for path in corpus[:100]:
        raw = path.read_bytes()
        for _ in range(3):
            data = bytearray(raw[: rng.randint(0, min(len(raw), 20_000))])
            for _ in range(rng.randint(1, 8)):
                if data:
                    i = rng.randrange(len(data))
                    data[i : i + rng.randint(0, 30)] = rng.choice(damage)
            _assert_sane(bytes(data))
