"""Password hashes, SCRAM secrets (RFC 5802/7677/5803) and the authentication throttle."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kittiwake.credentials import (
    Argon2Settings,
    AuthThrottle,
    ScramCredentials,
    derive_scram_sha256,
    hash_password,
    needs_rehash,
    verify_password,
)

CHEAP = Argon2Settings(time_cost=1, memory_cost=8, parallelism=1)

# --------------------------------------------------------------------------- argon2id


def test_hash_verify_roundtrip() -> None:
    stored = hash_password("correct horse", settings=CHEAP)
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct horse ")


def test_hashes_are_salted() -> None:
    assert hash_password("pw", settings=CHEAP) != hash_password("pw", settings=CHEAP)


def test_password_is_normalised_like_sasl() -> None:
    # U+2168 ROMAN NUMERAL NINE is NFKC "IX": both spellings are one password, as SASLprep says.
    stored = hash_password("\u2168", settings=CHEAP)
    assert verify_password(stored, "IX")


def test_hash_password_rejects_prohibited_characters() -> None:
    with pytest.raises(ValueError):
        hash_password("bell\x07", settings=CHEAP)
    with pytest.raises(ValueError):
        hash_password("", settings=CHEAP)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=8,t=1,p=1$!!!$xx",
        "$argon2x$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$argon2id$v=19$m=99999999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$argon2id$v=19$m=8,t=100000,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "SCRAM-SHA-256$4096:AAAA$AAAA:AAAA",
        "$argon2id$" + "A" * 5000,
        "\x00",
    ],
)
def test_verify_malformed_hash_is_false(stored: str) -> None:
    assert verify_password(stored, "pw") is False


def test_verify_prohibited_password_is_false() -> None:
    stored = hash_password("pw", settings=CHEAP)
    assert verify_password(stored, "pw\x00") is False


@settings(max_examples=100, deadline=None)
@given(stored=st.text(max_size=120), password=st.text(max_size=20))
def test_verify_never_raises(stored: str, password: str) -> None:
    assert verify_password(stored, password) in (True, False)


def test_needs_rehash() -> None:
    stored = hash_password("pw", settings=CHEAP)
    assert not needs_rehash(stored, settings=CHEAP)
    assert needs_rehash(stored, settings=Argon2Settings(time_cost=2, memory_cost=8, parallelism=1))
    assert needs_rehash("garbage", settings=CHEAP)


# --------------------------------------------------------------------------- SCRAM secrets


def test_derive_scram_matches_rfc7677_example() -> None:
    """RFC 7677 §3: the keys derived from "pencil" reproduce the published signatures."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    creds = derive_scram_sha256("pencil", salt=salt, iterations=4096)
    assert creds.salt == salt and creds.iterations == 4096
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (
        f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        f"c=biws,r={nonce}"
    ).encode()
    server_signature = hmac.digest(creds.server_key, auth_message, "sha256")
    assert base64.b64encode(server_signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.digest(creds.stored_key, auth_message, "sha256")
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == creds.stored_key


def test_derive_scram_random_salt() -> None:
    a = derive_scram_sha256("pw", iterations=1)
    b = derive_scram_sha256("pw", iterations=1)
    assert len(a.salt) == 16 and a.salt != b.salt


def test_derive_scram_rejects_bad_iterations() -> None:
    with pytest.raises(ValueError):
        derive_scram_sha256("pw", iterations=0)


def test_scram_text_roundtrip() -> None:
    creds = derive_scram_sha256("pencil", salt=b"0123456789abcdef", iterations=4096)
    text = creds.to_text()
    assert text.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert ScramCredentials.from_text(text) == creds


def test_scram_repr_hides_keys() -> None:
    creds = derive_scram_sha256("pencil", salt=b"s", iterations=1)
    assert base64.b64encode(creds.stored_key).decode() not in repr(creds)
    assert "stored_key" not in repr(creds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SCRAM-SHA-1$4096:c2FsdA==$" + "A" * 44 + ":" + "A" * 44,
        "SCRAM-SHA-256$4096:c2FsdA==$" + "A" * 44,
        "SCRAM-SHA-256$+4096:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$0:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$4096:$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:c2Fsd!==$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$\u0664096:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
    ],
)
def test_scram_from_text_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        ScramCredentials.from_text(text)


# --------------------------------------------------------------------------- throttle


def test_throttle_delay_grows_and_is_capped() -> None:
    throttle = AuthThrottle(max_failures_per_ip=100, max_failures_per_account=100)
    delays = [throttle.record_failure("192.0.2.1", "alice", now=float(i)) for i in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_throttle_locks_account_after_limit_then_releases() -> None:
    throttle = AuthThrottle(max_failures_per_account=3, window=600, lockout=900)
    for i in range(3):
        assert throttle.check(f"192.0.2.{i}", "alice", now=0.0)
        throttle.record_failure(f"192.0.2.{i}", "alice", now=0.0)
    # Locked for every address, and regardless of the username's case.
    assert not throttle.check("198.51.100.7", "ALICE", now=10.0)
    assert throttle.check("198.51.100.7", "bob", now=10.0)
    assert throttle.check("198.51.100.7", "alice", now=900.0)


def test_throttle_locks_address_after_limit() -> None:
    throttle = AuthThrottle(max_failures_per_ip=3, lockout=60)
    for user in ("a", "b", "c"):
        throttle.record_failure("192.0.2.1", user, now=0.0)
    assert not throttle.check("192.0.2.1", "d", now=1.0)
    assert not throttle.check("192.0.2.1", None, now=1.0)
    assert throttle.check("192.0.2.2", "d", now=1.0)
    assert throttle.check("192.0.2.1", "d", now=61.0)


def test_throttle_ipv6_counts_per_slash_64() -> None:
    throttle = AuthThrottle(max_failures_per_ip=2)
    throttle.record_failure("2001:db8::1", None, now=0.0)
    throttle.record_failure("2001:db8::ffff:2", None, now=0.0)
    assert not throttle.check("2001:db8::3", None, now=1.0)
    assert throttle.check("2001:db8:0:1::1", None, now=1.0)


def test_throttle_ipv4_mapped_counts_as_ipv4() -> None:
    throttle = AuthThrottle(max_failures_per_ip=1)
    throttle.record_failure("::ffff:192.0.2.1", None, now=0.0)
    assert not throttle.check("192.0.2.1", None, now=1.0)


def test_throttle_window_resets_count() -> None:
    throttle = AuthThrottle(max_failures_per_ip=3, max_failures_per_account=3, window=100)
    throttle.record_failure("192.0.2.1", "alice", now=0.0)
    throttle.record_failure("192.0.2.1", "alice", now=1.0)
    assert throttle.record_failure("192.0.2.1", "alice", now=101.0) == 1.0
    assert throttle.check("192.0.2.1", "alice", now=102.0)


def test_throttle_success_clears_account_but_not_address() -> None:
    throttle = AuthThrottle(max_failures_per_ip=3, max_failures_per_account=3)
    throttle.record_failure("192.0.2.1", "alice", now=0.0)
    throttle.record_failure("192.0.2.1", "alice", now=0.0)
    throttle.record_success("192.0.2.1", "alice", now=1.0)
    # The account starts afresh elsewhere …
    assert throttle.record_failure("198.51.100.1", "alice", now=2.0) == 1.0
    # … but the address keeps its two failures: one more locks it.
    throttle.record_failure("192.0.2.1", "mallory", now=3.0)
    assert not throttle.check("192.0.2.1", "bob", now=4.0)


def test_throttle_failures_during_lockout_extend_it() -> None:
    throttle = AuthThrottle(max_failures_per_ip=1, lockout=100)
    throttle.record_failure("192.0.2.1", None, now=0.0)
    throttle.record_failure("192.0.2.1", None, now=50.0)
    assert not throttle.check("192.0.2.1", None, now=120.0)
    assert throttle.check("192.0.2.1", None, now=150.0)


def test_throttle_memory_is_bounded() -> None:
    throttle = AuthThrottle(max_tracked=50)
    for i in range(1000):
        throttle.record_failure(f"10.0.{i // 256}.{i % 256}", f"user{i}", now=float(i) / 1000)
    assert len(throttle) <= 100


def test_throttle_expires_stale_entries() -> None:
    throttle = AuthThrottle(window=10, lockout=20)
    for i in range(100):
        throttle.record_failure(f"10.0.0.{i}", f"user{i}", now=0.0)
    assert len(throttle) == 200
    throttle.check("10.1.0.1", None, now=21.0)
    assert len(throttle) == 0


def test_throttle_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        AuthThrottle(max_failures_per_ip=0)
    with pytest.raises(ValueError):
        AuthThrottle(window=0)
    with pytest.raises(ValueError):
        AuthThrottle(base_delay=10, max_delay=1)
