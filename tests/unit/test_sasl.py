"""SASL mechanisms: PLAIN (RFC 4616), LOGIN, SCRAM-SHA-256[-PLUS] (RFC 5802/7677/9266)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kittiwake.credentials import derive_scram_sha256
from kittiwake.sasl import (
    LOGIN,
    MAX_RESPONSE_BYTES,
    PLAIN,
    SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
    Challenge,
    Failure,
    Mechanism,
    SaslSettings,
    ScramCredentials,
    Success,
    available,
    decode_response,
    encode_challenge,
    new_mechanism,
    saslprep,
)

ITERATIONS = 4096
BINDING = b"\x01" * 32  # stands in for the RFC 9266 tls-exporter value


@dataclass
class FakeLookup:
    """An account table: password and SCRAM secrets per user, with a call log."""

    passwords: dict[str, str] = field(default_factory=dict)
    scram: dict[str, ScramCredentials] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def add(self, user: str, password: str) -> None:
        self.passwords[user] = password
        self.scram[user] = derive_scram_sha256(password, salt=b"salt-" + user.encode())

    def verify_password(self, username: str, password: str) -> bool:
        self.calls.append(username)
        return self.passwords.get(username) == password

    def scram_credentials(self, username: str) -> ScramCredentials | None:
        self.calls.append(username)
        return self.scram.get(username)


@pytest.fixture(scope="module")
def lookup() -> FakeLookup:
    table = FakeLookup()
    table.add("alice", "correct horse")
    table.add("user", "pencil")
    return table


# --------------------------------------------------------------------------- SCRAM client


def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    """Client side of SCRAM-SHA-256 (RFC 5802 §3, §7), written independently of the server."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        nonce: str = "fyko+d2lbbFgONRv9qkxdawL",
        flag: str = "n",
        binding: bytes = b"",
        authzid: str | None = None,
    ) -> None:
        self.password = password
        self.nonce = nonce
        authz = f"a={_saslname(authzid)}" if authzid is not None else ""
        self.gs2_header = f"{flag},{authz},"
        self.binding = binding
        self.first_bare = f"n={_saslname(username)},r={nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return (self.gs2_header + self.first_bare).encode()

    def final(self, server_first: bytes, *, nonce: str | None = None, ext: str = "") -> bytes:
        text = server_first.decode()
        attrs = dict(a.split("=", 1) for a in text.split(","))
        assert attrs["r"].startswith(self.nonce)
        salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        cbind = base64.b64encode(self.gs2_header.encode() + self.binding).decode()
        without_proof = f"c={cbind},r={nonce or attrs['r']}{ext}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        return server_final == b"v=" + base64.b64encode(self.server_signature)


def _scram(
    lookup: FakeLookup,
    client: ScramClient,
    *,
    name: str = SCRAM_SHA_256,
    channel_binding: bytes | None = None,
) -> Challenge | Success | Failure:
    mech = new_mechanism(name, lookup, channel_binding=channel_binding)
    assert mech is not None
    first = mech.step(client.first())
    if not isinstance(first, Challenge):
        return first
    return mech.step(client.final(first.data))


# --------------------------------------------------------------------------- advertising


def test_available_without_tls_offers_only_scram() -> None:
    assert available(False, False) == (SCRAM_SHA_256,)
    assert available(False, True) == (SCRAM_SHA_256,)


def test_available_under_tls_orders_scram_first() -> None:
    assert available(True, False) == (SCRAM_SHA_256, PLAIN, LOGIN)
    assert available(True, True) == (SCRAM_SHA_256_PLUS, SCRAM_SHA_256, PLAIN, LOGIN)


def test_new_mechanism_names(lookup: FakeLookup) -> None:
    assert new_mechanism("plain", lookup) is not None
    assert new_mechanism("CRAM-MD5", lookup) is None
    assert new_mechanism(SCRAM_SHA_256_PLUS, lookup) is None  # no binding data
    mech = new_mechanism(SCRAM_SHA_256_PLUS, lookup, channel_binding=BINDING)
    assert mech is not None and mech.name == SCRAM_SHA_256_PLUS


# --------------------------------------------------------------------------- PLAIN


def _plain(lookup: FakeLookup, message: bytes | None) -> Challenge | Success | Failure:
    mech = new_mechanism(PLAIN, lookup)
    assert mech is not None
    return mech.step(message)


def test_plain_without_authzid_succeeds(lookup: FakeLookup) -> None:
    assert _plain(lookup, b"\0alice\0correct horse") == Success("alice", None, None)


def test_plain_with_authzid_equal_to_authcid_succeeds(lookup: FakeLookup) -> None:
    assert _plain(lookup, b"alice\0alice\0correct horse") == Success("alice", "alice", None)


def test_plain_with_other_authzid_fails_before_lookup() -> None:
    table = FakeLookup()
    table.add("alice", "correct horse")
    assert isinstance(_plain(table, b"bob\0alice\0correct horse"), Failure)
    assert table.calls == []


def test_plain_wrong_password_fails(lookup: FakeLookup) -> None:
    assert isinstance(_plain(lookup, b"\0alice\0wrong"), Failure)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"alice",
        b"\0alice",
        b"\0alice\0",
        b"\0\0correct horse",
        b"\0alice\0correct horse\0",
        b"\0al\xffice\0correct horse",
        b"\0alice\0pass\x01word",
        b"\x00" * 10,
    ],
)
def test_plain_malformed_message_fails(lookup: FakeLookup, message: bytes) -> None:
    assert isinstance(_plain(lookup, message), Failure)


def test_plain_without_initial_response_sends_empty_challenge(lookup: FakeLookup) -> None:
    mech = new_mechanism(PLAIN, lookup)
    assert mech is not None
    assert mech.step(None) == Challenge(b"")
    assert mech.step(b"\0alice\0correct horse") == Success("alice", None, None)


def test_plain_second_none_fails(lookup: FakeLookup) -> None:
    mech = new_mechanism(PLAIN, lookup)
    assert mech is not None
    mech.step(None)
    assert isinstance(mech.step(None), Failure)


def test_plain_after_success_further_steps_fail(lookup: FakeLookup) -> None:
    mech = new_mechanism(PLAIN, lookup)
    assert mech is not None
    assert isinstance(mech.step(b"\0alice\0correct horse"), Success)
    assert isinstance(mech.step(b"\0alice\0correct horse"), Failure)


def test_plain_normalises_identity_with_nfkc(lookup: FakeLookup) -> None:
    # U+FF41 FULLWIDTH 'a' is NFKC-equivalent to 'a'.
    assert _plain(lookup, "\0\uff41lice\0correct horse".encode()) == Success("alice", None, None)


def test_oversized_response_fails(lookup: FakeLookup) -> None:
    padding = b"x" * MAX_RESPONSE_BYTES
    assert isinstance(_plain(lookup, b"\0alice\0" + padding), Failure)


# --------------------------------------------------------------------------- framing helpers


def test_decode_response_rejects_bad_base64() -> None:
    assert decode_response(b"AGFsaWNlAGNvcnJlY3QgaG9yc2U=") == b"\0alice\0correct horse"
    assert decode_response(b"not base64!") is None
    assert decode_response(b"AGFsaWNl=") is None  # stray padding
    assert decode_response(b"AGFsaWM") is None  # missing padding
    assert decode_response(b"\xff\xfe") is None
    assert decode_response(b"A" * (MAX_RESPONSE_BYTES * 2)) is None


def test_decode_response_equals_sign_is_empty_initial_response() -> None:
    assert decode_response(b"=", initial=True) == b""
    assert decode_response(b"=") is None
    assert decode_response(b"") == b""


def test_encode_challenge() -> None:
    assert encode_challenge(b"Username:") == b"VXNlcm5hbWU6"
    assert encode_challenge(b"") == b""


# --------------------------------------------------------------------------- LOGIN


def test_login_full_exchange(lookup: FakeLookup) -> None:
    mech = new_mechanism(LOGIN, lookup)
    assert mech is not None
    assert mech.step(None) == Challenge(b"Username:")
    assert mech.step(b"alice") == Challenge(b"Password:")
    assert mech.step(b"correct horse") == Success("alice", None, None)


def test_login_username_as_initial_response(lookup: FakeLookup) -> None:
    mech = new_mechanism(LOGIN, lookup)
    assert mech is not None
    assert mech.step(b"alice") == Challenge(b"Password:")
    assert mech.step(b"correct horse") == Success("alice", None, None)


def test_login_wrong_password_fails(lookup: FakeLookup) -> None:
    mech = new_mechanism(LOGIN, lookup)
    assert mech is not None
    mech.step(None)
    mech.step(b"alice")
    assert isinstance(mech.step(b"nope"), Failure)


@pytest.mark.parametrize("username", [b"", b"al\0ice", b"\xc3"])
def test_login_malformed_username_fails(lookup: FakeLookup, username: bytes) -> None:
    mech = new_mechanism(LOGIN, lookup)
    assert mech is not None
    mech.step(None)
    assert isinstance(mech.step(username), Failure)


# --------------------------------------------------------------------------- SCRAM


def test_scram_rfc7677_test_vector() -> None:
    """RFC 7677 §3: the exact messages of the published SCRAM-SHA-256 example.

    The client proof is the RFC's ``dHzbZapWIk4jUhN+...``, which independent
    implementations reproduce too; beware of copies of the example with a mangled proof.
    """
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    table = FakeLookup(scram={"user": derive_scram_sha256("pencil", salt=salt, iterations=4096)})
    server_nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    mech = new_mechanism(SCRAM_SHA_256, table, nonce_factory=lambda: server_nonce)
    assert mech is not None

    first = mech.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first == Challenge(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    client = ScramClient("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    final = client.final(first.data)
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert mech.step(final) == Success(
        "user", None, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    )


def test_scram_full_exchange_verifies_server_signature(lookup: FakeLookup) -> None:
    client = ScramClient("alice", "correct horse")
    result = _scram(lookup, client)
    assert isinstance(result, Success)
    assert result.authcid == "alice"
    assert result.final_data is not None and client.verify(result.final_data)


def test_scram_without_initial_response_sends_empty_challenge(lookup: FakeLookup) -> None:
    mech = new_mechanism(SCRAM_SHA_256, lookup)
    assert mech is not None
    assert mech.step(None) == Challenge(b"")
    client = ScramClient("alice", "correct horse")
    first = mech.step(client.first())
    assert isinstance(first, Challenge)
    assert isinstance(mech.step(client.final(first.data)), Success)


def test_scram_server_nonce_is_fresh(lookup: FakeLookup) -> None:
    nonces = set()
    for _ in range(3):
        mech = new_mechanism(SCRAM_SHA_256, lookup)
        assert mech is not None
        first = mech.step(ScramClient("alice", "x").first())
        assert isinstance(first, Challenge)
        nonces.add(first.data.split(b",")[0])
    assert len(nonces) == 3


def test_scram_username_escapes_are_decoded() -> None:
    table = FakeLookup()
    table.add("a,b=c", "pw")
    result = _scram(table, ScramClient("a,b=c", "pw"))
    assert isinstance(result, Success) and result.authcid == "a,b=c"


def test_scram_authzid_equal_to_username_succeeds(lookup: FakeLookup) -> None:
    result = _scram(lookup, ScramClient("alice", "correct horse", authzid="alice"))
    assert isinstance(result, Success) and result.authzid == "alice"


def test_scram_other_authzid_fails(lookup: FakeLookup) -> None:
    result = _scram(lookup, ScramClient("alice", "correct horse", authzid="bob"))
    assert isinstance(result, Failure)


def test_scram_wrong_password_fails(lookup: FakeLookup) -> None:
    assert isinstance(_scram(lookup, ScramClient("alice", "wrong")), Failure)


def test_scram_unknown_user_fails_only_after_full_exchange(lookup: FakeLookup) -> None:
    mech = new_mechanism(SCRAM_SHA_256, lookup)
    assert mech is not None
    client = ScramClient("mallory", "guess")
    first = mech.step(client.first())
    assert isinstance(first, Challenge)  # looks exactly like a real account
    assert first.data.endswith(b",i=4096")
    result = mech.step(client.final(first.data))
    assert isinstance(result, Failure)


def test_scram_unknown_user_salt_is_stable_and_secret_dependent(lookup: FakeLookup) -> None:
    def salt(secret: bytes, user: str) -> bytes:
        mech = new_mechanism(SCRAM_SHA_256, lookup, settings=SaslSettings(fake_salt_secret=secret))
        assert mech is not None
        first = mech.step(ScramClient(user, "x").first())
        assert isinstance(first, Challenge)
        return first.data.split(b",")[1]

    assert salt(b"k1", "mallory") == salt(b"k1", "mallory")
    assert salt(b"k1", "mallory") != salt(b"k1", "trudy")
    assert salt(b"k1", "mallory") != salt(b"k2", "mallory")


def test_scram_plus_with_matching_binding_succeeds(lookup: FakeLookup) -> None:
    client = ScramClient("alice", "correct horse", flag="p=tls-exporter", binding=BINDING)
    result = _scram(lookup, client, name=SCRAM_SHA_256_PLUS, channel_binding=BINDING)
    assert isinstance(result, Success)
    assert result.final_data is not None and client.verify(result.final_data)


def test_scram_plus_with_mismatching_binding_fails(lookup: FakeLookup) -> None:
    client = ScramClient("alice", "correct horse", flag="p=tls-exporter", binding=b"\x02" * 32)
    result = _scram(lookup, client, name=SCRAM_SHA_256_PLUS, channel_binding=BINDING)
    assert isinstance(result, Failure)


def test_scram_plus_with_unsupported_binding_type_fails(lookup: FakeLookup) -> None:
    client = ScramClient("alice", "correct horse", flag="p=tls-unique", binding=BINDING)
    result = _scram(lookup, client, name=SCRAM_SHA_256_PLUS, channel_binding=BINDING)
    assert isinstance(result, Failure)


@pytest.mark.parametrize("flag", ["n", "y"])
def test_scram_plus_without_binding_flag_fails(lookup: FakeLookup, flag: str) -> None:
    client = ScramClient("alice", "correct horse", flag=flag)
    result = _scram(lookup, client, name=SCRAM_SHA_256_PLUS, channel_binding=BINDING)
    assert isinstance(result, Failure)


def test_scram_binding_flag_with_plain_scram_fails(lookup: FakeLookup) -> None:
    client = ScramClient("alice", "correct horse", flag="p=tls-exporter", binding=BINDING)
    assert isinstance(_scram(lookup, client, channel_binding=BINDING), Failure)


def test_scram_y_flag_when_plus_advertised_is_downgrade(lookup: FakeLookup) -> None:
    client = ScramClient("alice", "correct horse", flag="y")
    assert isinstance(_scram(lookup, client, channel_binding=BINDING), Failure)


def test_scram_y_flag_when_plus_not_advertised_succeeds(lookup: FakeLookup) -> None:
    client = ScramClient("alice", "correct horse", flag="y")
    assert isinstance(_scram(lookup, client), Success)


def test_scram_n_flag_with_plus_advertised_succeeds(lookup: FakeLookup) -> None:
    client = ScramClient("alice", "correct horse")
    assert isinstance(_scram(lookup, client, channel_binding=BINDING), Success)


def test_scram_altered_nonce_fails(lookup: FakeLookup) -> None:
    mech = new_mechanism(SCRAM_SHA_256, lookup)
    assert mech is not None
    client = ScramClient("alice", "correct horse")
    first = mech.step(client.first())
    assert isinstance(first, Challenge)
    final = client.final(first.data, nonce=client.nonce + "forged")
    assert isinstance(mech.step(final), Failure)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"n",
        b"n,,",
        b"x,,n=alice,r=abc",
        b"n,b=alice,n=alice,r=abc",
        b"n,,m=ext,n=alice,r=abc",
        b"n,,n=,r=abc",
        b"n,,n=al=2Xice,r=abc",
        b"n,,n=alice,r=",
        b"n,,n=alice,r=a\x7fb",
        b"n,,r=abc,n=alice",
        b"n,,n=alice,r=abc,bad",
        b"n,,n=al\x00ice,r=abc",
        b"n,,n=\xff,r=abc",
    ],
)
def test_scram_malformed_client_first_fails(lookup: FakeLookup, message: bytes) -> None:
    mech = new_mechanism(SCRAM_SHA_256, lookup)
    assert mech is not None
    assert isinstance(mech.step(message), Failure)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda f: b"",
        lambda f: f.replace(b"c=biws", b"c=!!!!"),
        lambda f: f.replace(b"c=biws", b"c=eSws"),  # "y,," instead of "n,,"
        lambda f: f[: f.rindex(b",p=")],
        lambda f: f[: f.rindex(b",p=") + 3] + b"AAAA",
        lambda f: f.replace(b",r=", b",m=x,r="),
        lambda f: f.replace(b",p=", b",1=x,p="),
        lambda f: f + b",x=y",
    ],
)
def test_scram_malformed_client_final_fails(
    lookup: FakeLookup, mangle: Callable[[bytes], bytes]
) -> None:
    mech = new_mechanism(SCRAM_SHA_256, lookup)
    assert mech is not None
    client = ScramClient("alice", "correct horse")
    first = mech.step(client.first())
    assert isinstance(first, Challenge)
    assert isinstance(mech.step(mangle(client.final(first.data))), Failure)


def test_scram_client_final_extension_is_ignored(lookup: FakeLookup) -> None:
    # RFC 5802 §5.1: unknown optional extensions are ignored (but covered by the proof).
    mech = new_mechanism(SCRAM_SHA_256, lookup)
    assert mech is not None
    client = ScramClient("alice", "correct horse")
    first = mech.step(client.first())
    assert isinstance(first, Challenge)
    final = client.final(first.data, ext=",x=future extension")
    assert b",x=future extension,p=" in final
    assert isinstance(mech.step(final), Success)


# --------------------------------------------------------------------------- saslprep


@pytest.mark.parametrize(
    ("raw", "prepared"),
    [
        ("user", "user"),
        ("I\u00adX", "IX"),  # RFC 4013 §3 example: soft hyphen mapped to nothing
        ("\u00aa", "a"),  # RFC 4013 §3: NFKC
        ("\u2168", "IX"),  # RFC 4013 §3: NFKC
        ("a\u00a0b", "a b"),  # non-ASCII space mapped to SPACE
        ("\u0007", None),  # RFC 4013 §3: prohibited character
        ("a\ue000", None),  # private use
    ],
)
def test_saslprep_rfc4013_examples(raw: str, prepared: str | None) -> None:
    assert saslprep(raw) == prepared


# --------------------------------------------------------------------------- fuzzing

_responses = st.one_of(
    st.none(),
    st.binary(max_size=300),
    st.text(alphabet="nypacrsvim=,-_+/AZ09\x00é", max_size=80).map(str.encode),
    st.sampled_from([b"n,,n=alice,r=abc", b"p=tls-exporter,,n=alice,r=abc", b"y,,n=mallory,r=x"]),
)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from([PLAIN, LOGIN, SCRAM_SHA_256, SCRAM_SHA_256_PLUS]),
    responses=st.lists(_responses, max_size=5),
)
def test_step_never_raises(name: str, responses: list[bytes | None]) -> None:
    table = FakeLookup()
    table.add("alice", "pw")
    mech: Mechanism | None = new_mechanism(name, table, channel_binding=BINDING)
    assert mech is not None
    finished = False
    for response in responses:
        result = mech.step(response)
        assert isinstance(result, Challenge | Success | Failure)
        if finished:
            assert isinstance(result, Failure)
        finished = finished or not isinstance(result, Challenge)


@settings(max_examples=200, deadline=None)
@given(final=st.binary(max_size=200) | st.text(max_size=120).map(str.encode))
def test_scram_random_client_final_never_raises(final: bytes) -> None:
    table = FakeLookup()
    table.add("alice", "pw")
    mech = new_mechanism(SCRAM_SHA_256, table)
    assert mech is not None
    assert isinstance(mech.step(b"n,,n=alice,r=abc"), Challenge)
    assert isinstance(mech.step(b"c=biws,r=abc" + final), Failure)
