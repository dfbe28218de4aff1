"""DKIM signing keys: generation, storage under named selectors, rotation (RFC 6376 §3.6).

Layout: `<data>/dkim/<domain>/<selector>.key`, one PKCS#8 PEM private key per selector,
mode 0600 in 0700 directories (a leaked key lets anyone sign as the domain). The public
half is derived from the private key whenever needed, so the two can never disagree.

Two algorithms, so every message can carry two signatures (RFC 8463 §4: a signer SHOULD
add an RSA signature next to an Ed25519 one while verifiers catch up):
- RSA 2048 bits (rsa-sha256; RFC 8301 §3.2: at least 1024, 2048 recommended);
- Ed25519 (ed25519-sha256, RFC 8463).

Rotation without downtime: a new key is generated under a new selector but, when the
domain already has an active key of that algorithm, it is *not* used until `activate()`:
publish its TXT record, wait for DNS caches, then switch. `active.json` names the active
selector per algorithm; it is re-read when it changes, so a running server picks up the
switch at its next message. Old selectors stay valid for mail in transit until their TXT
records are removed.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from kittiwake.dns import ascii_name

RSA_BITS = 2048
ACTIVE_FILE = "active.json"

# RFC 6376 §3.1: selector = sub-domain; labels of letters, digits and hyphens.
_SELECTOR_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_DOMAIN_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class KeyAlgorithm(enum.Enum):
    RSA = "rsa"
    ED25519 = "ed25519"

    @property
    def signature_algorithm(self) -> str:
        """The a= tag value (RFC 6376 §3.3, RFC 8463 §3)."""
        return "rsa-sha256" if self is KeyAlgorithm.RSA else "ed25519-sha256"


class DkimKeyError(Exception):
    """A selector or domain is invalid, or a key file is missing or unreadable."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One selector's key pair, with the forms signing and publishing need precomputed
    (loading an RSA key costs tens of milliseconds; a signer must not pay it per message).
    Build it with `DkimKey.from_pem`."""

    domain: str  # A-label, lower case
    selector: str
    algorithm: KeyAlgorithm
    private_pem: bytes = field(repr=False)
    public_key_b64: str = field(repr=False)  # p= of the key record
    dkimpy_private_key: bytes = field(repr=False)  # what dkimpy's signers take

    @classmethod
    def from_pem(cls, domain: str, selector: str, pem: bytes) -> DkimKey:
        """p= is the SubjectPublicKeyInfo for RSA (RFC 6376 §3.6.1) and the raw 32-octet
        key for Ed25519 (RFC 8463 §4); dkimpy signs with a PKCS#1 PEM for RSA and the
        base64 of the 32-octet seed for Ed25519."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise DkimKeyError(f"{selector}._domainkey.{domain}: unreadable key ({exc})") from None
        if isinstance(key, rsa.RSAPrivateKey):
            public = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            private = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
            algorithm = KeyAlgorithm.RSA
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
            private = base64.b64encode(key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                serialization.NoEncryption()))
            algorithm = KeyAlgorithm.ED25519
        else:
            raise DkimKeyError(f"{selector}._domainkey.{domain}: neither an RSA nor an "
                               "Ed25519 key")
        return cls(domain, selector, algorithm, pem, base64.b64encode(public).decode("ascii"),
                   private)

    @property
    def record_name(self) -> str:
        """Where the public key is published (RFC 6376 §3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def txt_record(self) -> str:
        """The TXT record text to publish at `record_name`."""
        return f"v=DKIM1; k={self.algorithm.value}; p={self.public_key_b64}"


def check_selector(selector: str) -> str:
    if not _SELECTOR_RE.fullmatch(selector) or len(selector) > 253:
        raise DkimKeyError(f"invalid DKIM selector {selector!r} (letters, digits, '-', '.')")
    return selector.lower()


def check_domain(domain: str) -> str:
    """The A-label form, refusing anything that could escape the key directory."""
    try:
        name = ascii_name(domain)
    except UnicodeError:
        raise DkimKeyError(f"invalid domain {domain!r}") from None
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_DOMAIN_LABEL_RE.fullmatch(x) for x in labels):
        raise DkimKeyError(f"invalid domain {domain!r}")
    return name


def default_selector(algorithm: KeyAlgorithm, today: dt.date | None = None) -> str:
    """A dated selector ("rsa20250301", "ed20250301"): unique per rotation, and it tells
    an administrator at a glance how old a published key is."""
    day = today or dt.date.today()
    prefix = "rsa" if algorithm is KeyAlgorithm.RSA else "ed"
    return f"{prefix}{day:%Y%m%d}"


class DkimKeyStore:
    """The keys of every domain under one directory (`<data>/dkim`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # domain → (stamp of the directory and active file, loaded active keys)
        self._active_cache: dict[str, tuple[tuple[int, ...], tuple[DkimKey, ...]]] = {}

    # --- writing --------------------------------------------------------------------------
    def generate(self, domain: str, algorithm: KeyAlgorithm = KeyAlgorithm.RSA,
                 selector: str | None = None, *, activate: bool | None = None,
                 today: dt.date | None = None) -> DkimKey:
        """Create a key; it becomes active when asked, or when it is the domain's first key
        of its algorithm (so a fresh install signs at once, and a rotation waits)."""
        name = check_domain(domain)
        sel = check_selector(selector or default_selector(algorithm, today))
        directory = self._domain_dir(name)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        path = directory / f"{sel}.key"
        if path.exists():
            raise DkimKeyError(f"{path} exists: choose another selector")
        private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        if algorithm is KeyAlgorithm.RSA:
            private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        key = DkimKey.from_pem(name, sel, pem)
        active = self._read_active(name)
        if activate or (activate is None and algorithm.value not in active):
            self.activate(name, sel)
        return key

    def activate(self, domain: str, selector: str) -> DkimKey:
        """Sign with `selector` from now on (for its algorithm); publish its record first."""
        key = self.key(domain, selector)
        active = self._read_active(key.domain)
        active[key.algorithm.value] = key.selector
        directory = self._domain_dir(key.domain)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".active.")
        with os.fdopen(fd, "w") as f:
            json.dump(active, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / ACTIVE_FILE)  # atomic: signers see old or new, never half
        return key

    # --- reading --------------------------------------------------------------------------
    def domains(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def keys(self, domain: str) -> list[DkimKey]:
        """Every key of the domain (published or to be published), by selector."""
        directory = self._domain_dir(check_domain(domain))
        if not directory.is_dir():
            return []
        return [self.key(domain, p.stem) for p in sorted(directory.glob("*.key"))]

    def key(self, domain: str, selector: str) -> DkimKey:
        name = check_domain(domain)
        sel = check_selector(selector)
        path = self._domain_dir(name) / f"{sel}.key"
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise DkimKeyError(f"no DKIM key {sel} for {name} ({path})") from None
        return DkimKey.from_pem(name, sel, pem)

    def active_keys(self, domain: str) -> tuple[DkimKey, ...]:
        """The keys to sign with now: at most one per algorithm, RSA first. Cached until
        the key directory or `active.json` changes."""
        try:
            name = check_domain(domain)
        except DkimKeyError:
            return ()
        directory = self._domain_dir(name)
        stamp = (*_stamp(directory), *_stamp(directory / ACTIVE_FILE))
        cached = self._active_cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        active = self._read_active(name)
        keys = tuple(self.key(name, active[alg.value]) for alg in KeyAlgorithm
                     if alg.value in active)
        self._active_cache[name] = (stamp, keys)
        return keys

    def active_key(self, domain: str, algorithm: KeyAlgorithm) -> DkimKey | None:
        return next((k for k in self.active_keys(domain) if k.algorithm is algorithm), None)

    def dns_records(self, domain: str) -> list[tuple[str, str]]:
        """(name, TXT text) for every selector of the domain: all of them stay published
        while mail signed with them may still be in transit."""
        return [(k.record_name, k.txt_record) for k in self.keys(domain)]

    def _domain_dir(self, domain: str) -> Path:
        return self.root / domain

    def _read_active(self, domain: str) -> dict[str, str]:
        path = self._domain_dir(domain) / ACTIVE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DkimKeyError(f"{path}: {exc}") from None
        if not isinstance(data, dict):
            raise DkimKeyError(f"{path}: not a JSON object")
        return {str(k): str(v) for k, v in data.items() if k in {a.value for a in KeyAlgorithm}}


def _stamp(path: Path) -> tuple[int, int]:
    """Changes when the file is rewritten or replaced (the inode covers coarse clocks)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_ino)
