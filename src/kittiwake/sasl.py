"""Server-side SASL mechanisms (RFC 4422) shared by SMTP AUTH, IMAP AUTHENTICATE and POP3 AUTH.

One sans-IO step machine per exchange, independent of the protocol that carries it:
SMTP AUTH (RFC 4954), IMAP AUTHENTICATE (RFC 9051 §6.2.2) and POP3 AUTH (RFC 5034) all do
the same thing with different framing, so the framing (``334``/``+``, base64, ``*`` to
cancel, ``=`` for an empty initial response) stays in the callers and only decoded client
data reaches :meth:`Mechanism.step`.

Mechanisms:

* ``PLAIN`` (RFC 4616), with the authorization identity allowed only when empty or equal to
  the authentication identity — we do not offer proxy authorization.
* ``LOGIN`` (draft-murchison-sasl-login): the de-facto ``Username:``/``Password:`` exchange
  that older clients still insist on.
* ``SCRAM-SHA-256`` (RFC 5802, RFC 7677) and ``SCRAM-SHA-256-PLUS`` with channel binding type
  ``tls-exporter`` (RFC 9266). The binding data comes from the caller's TLS layer, so this
  module never touches ``ssl``.

Verification is pluggable through :class:`CredentialLookup`; exceptions raised by a lookup
are *our* failure (database down), not the peer's, so they propagate for the caller to answer
with a temporary error. Nothing the peer sends makes :meth:`Mechanism.step` raise: every
malformed input becomes a :class:`Failure` whose reason is for logs only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

PLAIN: Final = "PLAIN"
LOGIN: Final = "LOGIN"
SCRAM_SHA_256: Final = "SCRAM-SHA-256"
SCRAM_SHA_256_PLUS: Final = "SCRAM-SHA-256-PLUS"
#: RFC 9266: the only channel binding type we accept; tls-unique is unsound for TLS 1.3.
CHANNEL_BINDING_TYPE: Final = "tls-exporter"

#: Upper bound on one decoded client response. Legitimate PLAIN/SCRAM messages are a few
#: hundred bytes; bounding every input keeps a hostile peer from making us parse megabytes.
MAX_RESPONSE_BYTES: Final = 4096

#: RFC 7677 §4: at least 4096 iterations; also the iteration count shown for unknown users.
DEFAULT_SCRAM_ITERATIONS: Final = 4096

_SCRAM_TEXT_PREFIX: Final = "SCRAM-SHA-256"
_SHA256_LEN: Final = 32
_FAKE_SALT_LEN: Final = 16
#: Fallback secret for fake salts when the caller configures none. Random per process, so a
#: restart changes the fake salts; callers should pass a persistent secret in SaslSettings.
_PROCESS_SECRET: Final = secrets.token_bytes(32)


# --------------------------------------------------------------------------- step results


@dataclass(frozen=True, slots=True)
class Challenge:
    """Server data to send to the client; the caller base64-encodes and frames it."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    """The client authenticated as ``authcid``.

    ``final_data`` (SCRAM's server-final ``v=...``) must reach the client: RFC 4422 §5 lets
    the protocol carry it as additional data with the success indication (IMAP with
    SASL-IR, RFC 4959) or as a last challenge answered by an empty response (RFC 4954 §4:
    ``334`` then ``235``). The caller knows its protocol and decides.
    """

    authcid: str
    authzid: str | None
    final_data: bytes | None


@dataclass(frozen=True, slots=True)
class Failure:
    """Authentication failed. ``reason`` is for logs only: never echo it to the peer, as it
    would tell an attacker which part (user, password, binding) was wrong. ``username`` is
    the claimed identity when one was parsed, so callers can throttle per account."""

    reason: str
    username: str | None = None


Step = Challenge | Success | Failure


# --------------------------------------------------------------------------- credentials


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _strict_b64decode(data: bytes) -> bytes | None:
    """Base64 as RFC 4648 §4 writes it, nothing else: RFC 4648 §3.3 lets us reject
    non-alphabet characters, and we also reject lengths that are not a multiple of four,
    which the stdlib decoder tolerates ("QQ===" decodes)."""
    if len(data) % 4:
        return None
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        return None


def _b64decode(text: str) -> bytes | None:
    if not text.isascii():
        return None
    return _strict_b64decode(text.encode("ascii"))


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """What the server stores for SCRAM-SHA-256 (RFC 5802 §3): never the password itself.

    ``stored_key`` verifies the client's proof; ``server_key`` signs our final message so the
    client knows we held the secret too. Both are kept out of ``repr`` because either one,
    combined with a sniffed exchange, helps impersonate a side.
    """

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.salt:
            raise ValueError("SCRAM salt must not be empty")
        if not 1 <= self.iterations <= 0xFFFFFFFF:
            raise ValueError("SCRAM iteration count out of range")
        if len(self.stored_key) != _SHA256_LEN or len(self.server_key) != _SHA256_LEN:
            raise ValueError("SCRAM-SHA-256 keys must be 32 bytes")

    def to_text(self) -> str:
        """Serialise as RFC 5803 §3 does for LDAP (also Dovecot's format):
        ``SCRAM-SHA-256$<iterations>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>``."""
        return (
            f"{_SCRAM_TEXT_PREFIX}${self.iterations}:{_b64(self.salt)}"
            f"${_b64(self.stored_key)}:{_b64(self.server_key)}"
        )

    @classmethod
    def from_text(cls, text: str) -> ScramCredentials:
        """Parse :meth:`to_text` output; raises ``ValueError`` for anything malformed."""
        parts = text.strip().split("$")
        if len(parts) != 3 or parts[0] != _SCRAM_TEXT_PREFIX:
            raise ValueError("not a SCRAM-SHA-256 credential")
        iter_salt = parts[1].split(":")
        keys = parts[2].split(":")
        if len(iter_salt) != 2 or len(keys) != 2:
            raise ValueError("malformed SCRAM-SHA-256 credential")
        iterations_text, salt_text = iter_salt
        # str.isdigit() admits non-ASCII digits and int() admits "+", "_" and spaces.
        if not (iterations_text.isascii() and iterations_text.isdigit()):
            raise ValueError("malformed SCRAM iteration count")
        salt, stored_key, server_key = (_b64decode(t) for t in (salt_text, *keys))
        if salt is None or stored_key is None or server_key is None:
            raise ValueError("malformed base64 in SCRAM-SHA-256 credential")
        return cls(salt, int(iterations_text), stored_key, server_key)


class CredentialLookup(Protocol):
    """The caller's view of the account database. Synchronous: callers run it in a thread.

    ``verify_password`` should cost the same for unknown users (e.g. verify against a dummy
    hash) so that PLAIN/LOGIN timing does not reveal which accounts exist.
    """

    def verify_password(self, username: str, password: str) -> bool: ...

    def scram_credentials(self, username: str) -> ScramCredentials | None: ...


@dataclass(frozen=True, slots=True)
class SaslSettings:
    """Settings for the SCRAM unknown-user path.

    ``fake_salt_secret`` keys the HMAC that derives a stable fake salt per unknown username
    (RFC 5802 §9 warns that a server answering unknown users differently leaks account
    existence); keep it persistent so fake salts survive restarts. ``fake_iterations``
    should match the iteration count used for real accounts.
    """

    fake_salt_secret: bytes | None = None
    fake_iterations: int = DEFAULT_SCRAM_ITERATIONS


# --------------------------------------------------------------------------- SASLprep-lite


def saslprep(text: str) -> str | None:
    """Approximate SASLprep (RFC 4013); ``None`` when the string holds prohibited characters.

    RFC 4013 §2: map non-ASCII spaces to SPACE and "commonly mapped to nothing" characters to
    nothing, normalise with NFKC, then prohibit control and private-use characters. The
    bidirectional checks and unassigned code point table are left out: stringprep tables are
    frozen at Unicode 3.2 and clients disagree on them anyway, so NFKC catches the cases that
    matter in practice (compatibility forms, composed vs decomposed accents).
    """
    mapped = "".join(
        " " if unicodedata.category(ch) == "Zs" else ch
        for ch in text
        if ch not in _MAPPED_TO_NOTHING
    )
    prepared = unicodedata.normalize("NFKC", mapped)
    # RFC 4013 §2.3 prohibits controls (C.2), private use (C.3), surrogates (C.5) and
    # format/tagging characters (C.8, C.9); Unicode categories approximate those tables.
    if any(unicodedata.category(ch) in _PROHIBITED_CATEGORIES for ch in prepared):
        return None
    return prepared


# RFC 3454 table B.1: "commonly mapped to nothing".
_MAPPED_TO_NOTHING: Final = frozenset(
    "\u00ad\u034f\u1806\u180b\u180c\u180d\u200b\u200c\u200d\u2060\ufeff"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)
_PROHIBITED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Co", "Cs"})


def _decode_text(data: bytes) -> str | None:
    """UTF-8 text without NUL: what every SASL string field here is made of (RFC 4616 §2,
    RFC 5802 §7 value-char)."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --------------------------------------------------------------------------- mechanisms


class Mechanism(Protocol):
    """One SASL exchange, server side.

    ``step(None)`` means the client sent no initial response (RFC 4422 §5); later responses
    are the client's decoded data (``b""`` for an empty line). After a :class:`Success` or
    :class:`Failure`, every further step fails.
    """

    name: str

    def step(self, response: bytes | None) -> Step: ...


class _Exchange:
    """Shared bookkeeping: input bounds, the single permitted ``None``, and finality."""

    name: str

    def __init__(self) -> None:
        self._finished = False
        self._steps = 0

    def step(self, response: bytes | None) -> Step:
        if self._finished:
            return Failure("exchange already finished")
        first = self._steps == 0
        self._steps += 1
        if response is None and not first:
            return self._finish(Failure("missing client response"))
        if response is not None and len(response) > MAX_RESPONSE_BYTES:
            return self._finish(Failure("client response too long"))
        result = self._step(response)
        if not isinstance(result, Challenge):
            self._finished = True
        return result

    def _finish(self, result: Failure) -> Failure:
        self._finished = True
        return result

    def _step(self, response: bytes | None) -> Step:
        raise NotImplementedError


def _check_authzid(authcid: str, authzid: str | None) -> Failure | None:
    # RFC 4422 §3.4.1: an authzid equal to the authcid is no request for proxying, so
    # accept it; any other identity would need an authorization policy we do not have.
    if authzid is not None and authzid != authcid:
        return Failure("authorization identity differs from authentication identity")
    return None


class PlainMechanism(_Exchange):
    """RFC 4616: one message ``[authzid] NUL authcid NUL passwd``."""

    def __init__(self, lookup: CredentialLookup) -> None:
        super().__init__()
        self.name = PLAIN
        self._lookup = lookup

    def _step(self, response: bytes | None) -> Step:
        if response is None:
            # RFC 4422 §5: an empty challenge asks for the initial response.
            return Challenge(b"")
        parts = response.split(b"\0")
        if len(parts) != 3:
            return Failure("malformed PLAIN message")
        fields = [_decode_text(p) for p in parts]
        authzid_raw, authcid_raw, password_raw = fields
        if authzid_raw is None or authcid_raw is None or password_raw is None:
            return Failure("PLAIN message is not UTF-8")
        # RFC 4616 §2: identities and password are compared after SASLprep.
        authcid = saslprep(authcid_raw)
        password = saslprep(password_raw)
        authzid = saslprep(authzid_raw) if authzid_raw else None
        if not authcid or not password or (authzid_raw and not authzid):
            return Failure("empty or prohibited characters in PLAIN message")
        refused = _check_authzid(authcid, authzid)
        if refused is not None:
            return refused
        if not self._lookup.verify_password(authcid, password):
            return Failure("invalid credentials", authcid)
        return Success(authcid, authzid, None)


class LoginMechanism(_Exchange):
    """LOGIN (draft-murchison-sasl-login-00): not an RFC, but Outlook and older clients
    offer nothing else. The username may come as the initial response (RFC 4954 §4 permits
    one for any mechanism)."""

    def __init__(self, lookup: CredentialLookup) -> None:
        super().__init__()
        self.name = LOGIN
        self._lookup = lookup
        self._username: str | None = None

    def _step(self, response: bytes | None) -> Step:
        if response is None:
            return Challenge(b"Username:")
        if self._username is None:
            raw = _decode_text(response)
            username = saslprep(raw) if raw is not None else None
            if not username:
                return Failure("malformed LOGIN username")
            self._username = username
            return Challenge(b"Password:")
        raw = _decode_text(response)
        password = saslprep(raw) if raw is not None else None
        if not password:
            return Failure("malformed LOGIN password")
        if not self._lookup.verify_password(self._username, password):
            return Failure("invalid credentials", self._username)
        return Success(self._username, None, None)


def _default_nonce() -> str:
    # RFC 5802 §5.1: the nonce must be unpredictable; 24 bytes from the CSPRNG, in an
    # alphabet (A-Z a-z 0-9 - _) that never contains ','.
    return secrets.token_urlsafe(24)


def _is_printable(text: str) -> bool:
    # RFC 5802 §7: printable = %x21-2B / %x2D-7E, i.e. visible ASCII except ','.
    return bool(text) and all("\x21" <= ch <= "\x7e" and ch != "," for ch in text)


def _parse_saslname(text: str) -> str | None:
    """RFC 5802 §5.1: ',' and '=' travel as "=2C" and "=3D"; any other '=' is malformed."""
    if not text:
        return None
    pieces = text.split("=")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if piece[:2] == "2C":
            out.append("," + piece[2:])
        elif piece[:2] == "3D":
            out.append("=" + piece[2:])
        else:
            return None
    return "".join(out)


def _is_extension(attr: str) -> bool:
    # RFC 5802 §7: attr-val = ALPHA "=" value, value = 1*value-char.
    return len(attr) >= 3 and attr[0].isascii() and attr[0].isalpha() and attr[1] == "="


def _has_mandatory_extension(attrs: list[str]) -> bool:
    # RFC 5802 §5.1: "m" is reserved for mandatory extensions, none of which we know, and
    # its presence MUST make authentication fail.
    return any(a.startswith("m=") for a in attrs)


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


class ScramSha256Mechanism(_Exchange):
    """SCRAM-SHA-256 (RFC 5802, RFC 7677) and its channel-bound -PLUS variant (RFC 9266).

    The client proves knowledge of the password without sending it; our final message
    proves we hold the stored secret. With -PLUS the proof also covers the TLS session's
    exporter value, so a man in the middle terminating TLS separately cannot relay it.
    """

    def __init__(
        self,
        lookup: CredentialLookup,
        *,
        plus: bool,
        channel_binding: bytes | None,
        settings: SaslSettings | None = None,
        nonce_factory: Callable[[], str] | None = None,
    ) -> None:
        super().__init__()
        if plus and not channel_binding:
            raise ValueError("SCRAM-SHA-256-PLUS needs channel binding data")
        settings = settings or SaslSettings()
        self.name = SCRAM_SHA_256_PLUS if plus else SCRAM_SHA_256
        self._lookup = lookup
        self._plus = plus
        self._channel_binding = channel_binding or None
        self._fake_secret = settings.fake_salt_secret or _PROCESS_SECRET
        self._fake_iterations = settings.fake_iterations
        self._nonce_factory = nonce_factory or _default_nonce
        # Filled in by the client-first step.
        self._gs2_header = b""
        self._uses_binding = False
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._authcid = ""
        self._authzid: str | None = None
        self._credentials: ScramCredentials | None = None
        self._known_user = False

    def _step(self, response: bytes | None) -> Step:
        if response is None:
            return Challenge(b"")  # RFC 4422 §5: ask for the client-first message.
        text = _decode_text(response)
        if text is None:
            return Failure("SCRAM message is not UTF-8 or contains NUL")
        if self._credentials is None:
            return self._client_first(text)
        return self._client_final(text)

    # RFC 5802 §7:
    #   client-first-message = gs2-header [reserved-mext ","] username "," nonce ["," ext]
    #   gs2-header = gs2-cbind-flag "," [authzid] ","
    def _client_first(self, text: str) -> Step:
        pieces = text.split(",", 2)
        if len(pieces) != 3:
            return Failure("malformed SCRAM gs2 header")
        flag, authz_attr, bare = pieces
        refused = self._check_binding_flag(flag)
        if refused is not None:
            return refused
        authzid_raw: str | None = None
        if authz_attr:
            if not authz_attr.startswith("a="):
                return Failure("malformed SCRAM authzid")
            authzid_raw = _parse_saslname(authz_attr[2:])
            if authzid_raw is None:
                return Failure("malformed SCRAM authzid")

        attrs = bare.split(",")
        if _has_mandatory_extension(attrs):
            return Failure("unsupported mandatory SCRAM extension")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            return Failure("malformed SCRAM client-first message")
        if not all(_is_extension(a) for a in attrs[2:]):
            return Failure("malformed SCRAM extension")
        username_raw = _parse_saslname(attrs[0][2:])
        client_nonce = attrs[1][2:]
        if username_raw is None or not _is_printable(client_nonce):
            return Failure("malformed SCRAM username or nonce")
        # RFC 5802 §5.1: the username is SASLprep'd; the client should have done it, and
        # preparing again is harmless (idempotent) and normalises sloppy clients.
        authcid = saslprep(username_raw)
        authzid = saslprep(authzid_raw) if authzid_raw is not None else None
        if not authcid or (authzid_raw is not None and not authzid):
            return Failure("empty or prohibited characters in SCRAM identity")
        refused = _check_authzid(authcid, authzid)
        if refused is not None:
            return refused

        server_nonce = self._nonce_factory()
        if not _is_printable(server_nonce):
            raise ValueError("nonce_factory must return printable ASCII without ','")
        credentials = self._lookup.scram_credentials(authcid)
        self._known_user = credentials is not None
        if credentials is None:
            # RFC 5802 §9 / user enumeration: answer exactly like a real account, with a salt
            # stable per username, and fail only after the client's proof.
            credentials = self._fake_credentials(authcid)

        self._gs2_header = f"{flag},{authz_attr},".encode()
        self._client_first_bare = bare
        self._nonce = client_nonce + server_nonce
        self._authcid = authcid
        self._authzid = authzid
        self._credentials = credentials
        self._server_first = (
            f"r={self._nonce},s={_b64(credentials.salt)},i={credentials.iterations}"
        )
        return Challenge(self._server_first.encode("ascii"))

    def _check_binding_flag(self, flag: str) -> Failure | None:
        if flag.startswith("p="):
            cb_name = flag[2:]
            if not self._plus:
                # RFC 5802 §6: a non-PLUS mechanism with "p" is a protocol error.
                return Failure("channel binding requested with non-PLUS mechanism")
            if cb_name != CHANNEL_BINDING_TYPE:
                return Failure("unsupported channel binding type")
            self._uses_binding = True
            return None
        if flag not in ("n", "y"):
            return Failure("malformed SCRAM gs2 channel binding flag")
        if self._plus:
            return Failure("PLUS mechanism selected without channel binding")
        if flag == "y" and self._channel_binding is not None:
            # RFC 5802 §6: "y" says the client could bind but believes we cannot; we did
            # advertise -PLUS, so someone stripped it from the list — a downgrade attack.
            return Failure("channel binding downgrade detected")
        return None

    def _fake_credentials(self, authcid: str) -> ScramCredentials:
        # Deterministic per (secret, username): a repeat query for the same unknown user
        # sees the same salt, as it would for a real account.
        seed = _hmac(self._fake_secret, b"kittiwake-scram-fake\0" + authcid.encode())
        return ScramCredentials(
            salt=seed[:_FAKE_SALT_LEN],
            iterations=self._fake_iterations,
            stored_key=_hmac(seed, b"stored"),
            server_key=_hmac(seed, b"server"),
        )

    # RFC 5802 §7:
    #   client-final-message = channel-binding "," nonce ["," extensions] "," proof
    def _client_final(self, text: str) -> Step:
        credentials = self._credentials
        assert credentials is not None
        attrs = text.split(",")
        if _has_mandatory_extension(attrs):
            return Failure("unsupported mandatory SCRAM extension")
        if (
            len(attrs) < 3
            or not attrs[0].startswith("c=")
            or not attrs[1].startswith("r=")
            or not attrs[-1].startswith("p=")
            or not all(_is_extension(a) for a in attrs[2:-1])
        ):
            return Failure("malformed SCRAM client-final message")
        binding = _b64decode(attrs[0][2:])
        proof = _b64decode(attrs[-1][2:])
        if binding is None or proof is None or len(proof) != _SHA256_LEN:
            return Failure("malformed base64 in SCRAM client-final message")
        # RFC 5802 §6 / RFC 9266: c= is base64(gs2-header [cbind-data]); comparing it
        # also re-checks that the header was not altered between the two messages.
        expected = self._gs2_header
        if self._uses_binding:
            assert self._channel_binding is not None
            expected += self._channel_binding
        if not hmac.compare_digest(binding, expected):
            return Failure("channel binding mismatch")
        if not hmac.compare_digest(attrs[1][2:].encode(), self._nonce.encode()):
            return Failure("SCRAM nonce mismatch")

        # RFC 5802 §3: AuthMessage, ClientSignature, ClientKey = proof XOR signature,
        # and the check H(ClientKey) == StoredKey.
        without_proof = ",".join(attrs[:-1])
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = _hmac(credentials.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        proof_ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), credentials.stored_key)
        server_signature = _hmac(credentials.server_key, auth_message)
        if not self._known_user:
            return Failure("unknown user", self._authcid)
        if not proof_ok:
            return Failure("invalid client proof", self._authcid)
        return Success(self._authcid, self._authzid, f"v={_b64(server_signature)}".encode())


# --------------------------------------------------------------------------- entry points


def available(tls_active: bool, channel_binding_available: bool) -> tuple[str, ...]:
    """Mechanisms to advertise, strongest first (clients tend to pick the first they know).

    PLAIN and LOGIN reveal the password to anyone on the wire, so they are offered only
    under TLS (RFC 4954 §4, RFC 8314 §5). SCRAM never sends the password and is always
    offered; -PLUS needs the TLS exporter value (RFC 9266).
    """
    mechanisms: list[str] = []
    if tls_active and channel_binding_available:
        mechanisms.append(SCRAM_SHA_256_PLUS)
    mechanisms.append(SCRAM_SHA_256)
    if tls_active:
        mechanisms += [PLAIN, LOGIN]
    return tuple(mechanisms)


def new_mechanism(
    name: str,
    lookup: CredentialLookup,
    *,
    channel_binding: bytes | None = None,
    settings: SaslSettings | None = None,
    nonce_factory: Callable[[], str] | None = None,
) -> Mechanism | None:
    """Start an exchange for the mechanism the client named, or ``None`` if we lack it.

    ``channel_binding`` is the RFC 9266 tls-exporter value of this connection; pass it
    whenever :func:`available` was told channel binding is available, even when the client
    picks plain SCRAM-SHA-256, because that is how a ``y`` flag is recognised as a
    downgrade. Callers still check ``name in available(...)`` to enforce the TLS policy.
    Mechanism names are matched case-insensitively, as IMAP and SMTP treat them as atoms.
    """
    upper = name.upper()
    binding = channel_binding or None
    if upper == PLAIN:
        return PlainMechanism(lookup)
    if upper == LOGIN:
        return LoginMechanism(lookup)
    if upper == SCRAM_SHA_256:
        return ScramSha256Mechanism(
            lookup,
            plus=False,
            channel_binding=binding,
            settings=settings,
            nonce_factory=nonce_factory,
        )
    if upper == SCRAM_SHA_256_PLUS and binding is not None:
        return ScramSha256Mechanism(
            lookup,
            plus=True,
            channel_binding=binding,
            settings=settings,
            nonce_factory=nonce_factory,
        )
    return None


def decode_response(line: bytes, *, initial: bool = False) -> bytes | None:
    """Decode one base64 client response as all three protocols frame it; ``None`` if
    malformed or over :data:`MAX_RESPONSE_BYTES`.

    With ``initial=True`` a lone ``=`` is an empty initial response (RFC 4954 §4, RFC 4959
    §3, RFC 5034 §4). Cancellation (``*``) is left to the caller, which must answer it with
    its protocol's own reply.
    """
    text = line.strip()
    if initial and text == b"=":
        return b""
    if len(text) > (MAX_RESPONSE_BYTES + 2) // 3 * 4:
        return None
    return _strict_b64decode(text)


def encode_challenge(data: bytes) -> bytes:
    """Base64 for a challenge line (``334 ...``, ``+ ...``); empty data gives ``b""``."""
    return base64.b64encode(data)
