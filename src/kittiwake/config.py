"""TOML configuration → frozen settings.

Only `app.py` and `cli.py` read this module's `Config`; every other part gets its own small
settings dataclass built from it. A bad key or value stops startup with a message naming the
key (DESIGN.md, "The command"), because a mail server that silently ignores a typo in
`max_message_size` is worse than one that refuses to start.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LISTENER_KINDS = {
    # kind: (protocol, tls mode)
    "smtp": ("smtp", "starttls"),
    "submission": ("submission", "starttls"),
    "submissions": ("submission", "implicit"),
    "imap": ("imap", "starttls"),
    "imaps": ("imap", "implicit"),
    "pop3": ("pop3", "starttls"),
    "pop3s": ("pop3", "implicit"),
}

# DESIGN.md: the development default, a contract for users' scripts and our own tools.
DEV_LISTENERS = (
    ("smtp", "127.0.0.1", 2525),
    ("submission", "127.0.0.1", 2587),
    ("submissions", "127.0.0.1", 2465),
    ("imap", "127.0.0.1", 2143),
    ("imaps", "127.0.0.1", 2993),
    ("pop3", "127.0.0.1", 2110),
    ("pop3s", "127.0.0.1", 2995),
)


class ConfigError(Exception):
    """A key or value is wrong; the message names the key."""


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    kind: str
    host: str
    port: int

    @property
    def protocol(self) -> str:
        return LISTENER_KINDS[self.kind][0]

    @property
    def tls(self) -> str:
        return LISTENER_KINDS[self.kind][1]


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100
    max_connections: int = 20000
    max_connections_per_ip: int = 50
    max_errors: int = 10
    max_command_line: int = 512
    max_text_line: int = 1000
    # RFC 5321 §4.5.3.2: server timeout 5 minutes for commands, 10 minutes after DATA end.
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    greeting_delay: float = 0.0
    tls_handshake_timeout: float = 30.0
    shutdown_grace: float = 30.0
    reject_bare_line_endings: bool = True


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    port: int = 25  # remote SMTP port; only test setups change it
    tls: str = "opportunistic"
    smarthost: str = ""
    smarthost_user: str = ""
    smarthost_password: str = ""
    concurrency: int = 20
    per_domain: int = 5
    connect_timeout: float = 30.0
    source_address: str = ""  # connect from this local address ("" = the kernel's choice)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    # Postfix's defaults: minimal_backoff_time, maximal_backoff_time, maximal_queue_lifetime,
    # delay_warning_time (0 = no delay warnings).
    minimal_backoff: float = 300.0
    maximal_backoff: float = 4000.0
    max_lifetime: float = 5 * 86400.0
    delay_warning_after: float = 4 * 3600.0
    poll_interval: float = 5.0


@dataclass(frozen=True, slots=True)
class DnsConfig:
    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    sender_policy: str = "own"
    hide_client_ip: bool = False
    auth_max_failures: int = 10
    auth_lockout: float = 900.0


@dataclass(frozen=True, slots=True)
class MailauthConfig:
    verify: bool = True  # SPF/DKIM/DMARC/ARC on every message received on port 25
    enforce_dmarc: bool = True  # act on p=reject/quarantine (False: record only)
    reject_spf_fail: bool = False  # RFC 7489 §10.1: leave SPF -all to DMARC
    always_accept_from: tuple[str, ...] = ()
    never_accept_from: tuple[str, ...] = ()
    trusted_arc_sealers: tuple[str, ...] = ()
    spf_timeout: float = 20.0
    sign: bool = True  # DKIM-sign submitted mail and bounces
    arc_seal: bool = True  # ARC-seal mail forwarded to external alias targets
    report_address: str = ""  # DMARC rua / TLS-RPT address; "" = postmaster@DOMAIN
    public_addresses: tuple[str, ...] = ()  # this server's public IPs, for `kittiwake dns`


@dataclass(frozen=True, slots=True)
class ImapConfig:
    max_connections: int = 5000
    max_connections_per_ip: int = 50
    autologout: float = 1800.0  # RFC 9051 §5.4: at least 30 minutes
    idle_timeout: float = 3600.0  # a session in IDLE may stay longer than autologout
    compress: bool = True  # offer COMPRESS=DEFLATE (RFC 4978)
    quota: int = 0  # bytes per account (0 = none): APPEND [OVERQUOTA], SMTP 452 4.2.2


@dataclass(frozen=True, slots=True)
class Pop3Config:
    allow_plaintext_auth: bool = False
    idle_timeout: float = 600.0  # RFC 1939 §3: at least 10 minutes
    max_connections: int = 1000
    max_connections_per_ip: int = 20


@dataclass(frozen=True, slots=True)
class Config:
    hostname: str
    data_dir: Path
    tls_cert: Path
    tls_key: Path
    listeners: tuple[ListenerConfig, ...]
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    pop3: Pop3Config = field(default_factory=Pop3Config)
    imap: ImapConfig = field(default_factory=ImapConfig)
    mailauth: MailauthConfig = field(default_factory=MailauthConfig)
    log_level: str = "info"
    fsync: bool = True
    sync: str = "syncfs"
    workers: int = 1
    source: Path | None = None  # the file it came from; None for the development default

    @property
    def db_path(self) -> Path:
        return self.data_dir / "kittiwake.db"


_TOP_KEYS = {"server", "tls", "limits", "listener", "log", "delivery", "queue", "dns",
             "submission", "pop3", "mailauth", "imap"}
_SERVER_KEYS = {"hostname", "data_dir", "fsync", "sync", "workers"}
_TLS_KEYS = {"cert", "key"}
_LOG_KEYS = {"level"}
_LISTENER_KEYS = {"kind", "address"}


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"unknown key '{where}{key}' (allowed: {', '.join(sorted(allowed))})")


def _typed(table: dict[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}{key} must be {kind.__name__}, got {value!r}")
    return value


def parse_address(text: str, where: str) -> tuple[str, int]:
    """'127.0.0.1:25', '[::1]:25' or ':25' (all addresses) → (host, port)."""
    host, sep, port_s = text.rpartition(":")
    if not sep or not port_s.isdigit():
        raise ConfigError(f"{where} must look like 'HOST:PORT', got {text!r}")
    port = int(port_s)
    if not 0 < port < 65536:
        raise ConfigError(f"{where} port out of range: {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _section(raw: dict[str, Any], name: str, cls: type[Any]) -> dict[str, Any]:
    """Read `[name]` into the fields of dataclass `cls`, typed like the defaults."""
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    defaults = cls()
    allowed = set(cls.__dataclass_fields__)
    _check_keys(table, allowed, f"{name}.")
    values: dict[str, Any] = {}
    for key in allowed:
        default = getattr(defaults, key)
        if isinstance(default, tuple):
            value = table.get(key, default)
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name}.{key} must be a list of strings")
            value = tuple(value)
        else:
            value = _typed(table, key, type(default), f"{name}.", default)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{name}.{key} must not be negative")
        values[key] = value
    return values


def _choice(value: str, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


def _limits(raw: dict[str, Any]) -> LimitsConfig:
    values = _section(raw, "limits", LimitsConfig)
    if values["max_command_line"] < 512:
        raise ConfigError("limits.max_command_line must be at least 512 (RFC 5321 §4.5.3.1.4)")
    if values["max_text_line"] < 1000:
        raise ConfigError("limits.max_text_line must be at least 1000 (RFC 5321 §4.5.3.1.6)")
    return LimitsConfig(**values)


def _sync(server: dict[str, Any]) -> str:
    value = str(_typed(server, "sync", str, "server.", "syncfs"))
    _choice(value, ("syncfs", "fsync"), "server.sync")
    return value


def _delivery(raw: dict[str, Any]) -> DeliveryConfig:
    values = _section(raw, "delivery", DeliveryConfig)
    _choice(values["tls"], ("opportunistic", "required", "none"), "delivery.tls")
    if not 0 < values["port"] < 65536:
        raise ConfigError("delivery.port out of range")
    if values["smarthost_user"] and not values["smarthost"]:
        raise ConfigError("delivery.smarthost_user needs delivery.smarthost")
    return DeliveryConfig(**values)


def _imap(raw: dict[str, Any]) -> ImapConfig:
    values = _section(raw, "imap", ImapConfig)
    if values["autologout"] < 1800:
        raise ConfigError("imap.autologout must be at least 1800 (RFC 9051 §5.4)")
    return ImapConfig(**values)


def _pop3(raw: dict[str, Any]) -> Pop3Config:
    values = _section(raw, "pop3", Pop3Config)
    if values["idle_timeout"] < 600:
        raise ConfigError("pop3.idle_timeout must be at least 600 (RFC 1939 §3)")
    return Pop3Config(**values)


def _dns(raw: dict[str, Any]) -> DnsConfig:
    values = _section(raw, "dns", DnsConfig)
    if not 0 < values["port"] < 65536:
        raise ConfigError("dns.port out of range")
    return DnsConfig(**values)


def _submission(raw: dict[str, Any]) -> SubmissionConfig:
    values = _section(raw, "submission", SubmissionConfig)
    _choice(values["sender_policy"], ("own", "any"), "submission.sender_policy")
    return SubmissionConfig(**values)


def from_dict(raw: dict[str, Any], *, base_dir: Path, source: Path | None = None) -> Config:
    _check_keys(raw, _TOP_KEYS, "")
    server = raw.get("server", {})
    tls = raw.get("tls", {})
    log = raw.get("log", {})
    for name, table in (("server", server), ("tls", tls), ("log", log)):
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
    _check_keys(server, _SERVER_KEYS, "server.")
    _check_keys(tls, _TLS_KEYS, "tls.")
    _check_keys(log, _LOG_KEYS, "log.")
    hostname = _typed(server, "hostname", str, "server.", None)
    if not hostname:
        raise ConfigError("server.hostname is required")
    data_dir = base_dir / _typed(server, "data_dir", str, "server.", "kittiwake-data")
    cert = data_dir / "tls" / "cert.pem"
    key = data_dir / "tls" / "key.pem"
    if "cert" in tls:
        cert = base_dir / _typed(tls, "cert", str, "tls.", "")
    if "key" in tls:
        key = base_dir / _typed(tls, "key", str, "tls.", "")
    level = _typed(log, "level", str, "log.", "info").lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"log.level must be debug|info|warning|error, got {level!r}")
    workers = _typed(server, "workers", int, "server.", 1)
    if not 1 <= workers <= 64:
        raise ConfigError("server.workers must be between 1 and 64")
    listeners = []
    raw_listeners = raw.get("listener", [])
    if not isinstance(raw_listeners, list):
        raise ConfigError("listener must be an array of tables ([[listener]])")
    for i, item in enumerate(raw_listeners):
        where = f"listener[{i}]."
        if not isinstance(item, dict):
            raise ConfigError(f"listener[{i}] must be a table")
        _check_keys(item, _LISTENER_KEYS, where)
        kind = _typed(item, "kind", str, where, None)
        if kind not in LISTENER_KINDS:
            raise ConfigError(f"{where}kind must be one of {', '.join(LISTENER_KINDS)}, got {kind!r}")
        address = _typed(item, "address", str, where, None)
        if address is None:
            raise ConfigError(f"{where}address is required")
        host, port = parse_address(address, f"{where}address")
        listeners.append(ListenerConfig(kind, host, port))
    return Config(
        hostname=hostname.lower(),
        data_dir=data_dir,
        tls_cert=cert,
        tls_key=key,
        listeners=tuple(listeners),
        limits=_limits(raw),
        delivery=_delivery(raw),
        queue=QueueConfig(**_section(raw, "queue", QueueConfig)),
        dns=_dns(raw),
        submission=_submission(raw),
        pop3=_pop3(raw),
        imap=_imap(raw),
        mailauth=MailauthConfig(**_section(raw, "mailauth", MailauthConfig)),
        log_level=level,
        fsync=_typed(server, "fsync", bool, "server.", True),
        sync=_sync(server),
        workers=workers,
        source=source,
    )


def load(path: Path) -> Config:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    return from_dict(raw, base_dir=path.parent.resolve(), source=path)


def development_default(cwd: Path | None = None) -> Config:
    base = (cwd or Path.cwd()).resolve()
    raw: dict[str, Any] = {
        "server": {"hostname": "localhost", "data_dir": "kittiwake-data"},
        # Mail between loopback clients and localhost: SPF/DMARC would only ask public DNS
        # about names that mean nothing here.
        "mailauth": {"verify": False},
        "listener": [{"kind": k, "address": f"{h}:{p}"} for k, h, p in DEV_LISTENERS],
    }
    return from_dict(raw, base_dir=base)


def resolve(path: str | None) -> Config:
    """--config wins, then KITTIWAKE_CONFIG, then the development default."""
    chosen = path or os.environ.get("KITTIWAKE_CONFIG")
    if chosen:
        return load(Path(chosen))
    return development_default()
