"""The config contract: every key documented, the example file valid, bad keys named."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from kittiwake import config
from kittiwake.config import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs"
SECTIONS = {
    "limits": config.LimitsConfig, "delivery": config.DeliveryConfig,
    "queue": config.QueueConfig, "dns": config.DnsConfig, "submission": config.SubmissionConfig,
    "pop3": config.Pop3Config, "mailauth": config.MailauthConfig,
    "imap": config.ImapConfig,
}


def test_example_file_loads_and_sets_every_key():
    cfg = config.load(DOCS / "kittiwake.example.toml")
    assert cfg.hostname == "mail.example.org"
    raw = tomllib.loads((DOCS / "kittiwake.example.toml").read_text())
    for section, cls in SECTIONS.items():
        assert set(raw[section]) == {f.name for f in dataclasses.fields(cls)}, section


def test_every_key_is_documented():
    text = (DOCS / "configuration.md").read_text()
    for section, cls in SECTIONS.items():
        assert f"## `[{section}]`" in text
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in text, f"{section}.{f.name} undocumented"
    for key in ("hostname", "data_dir", "fsync", "sync", "workers", "cert", "key", "level", "kind", "address"):
        assert f"`{key}`" in text


def test_development_default_matches_design():
    cfg = config.development_default(Path("/tmp"))
    assert cfg.hostname == "localhost"
    assert cfg.data_dir == Path("/tmp/kittiwake-data")
    assert {(lc.kind, lc.host, lc.port) for lc in cfg.listeners} >= {
        ("smtp", "127.0.0.1", 2525), ("submission", "127.0.0.1", 2587),
        ("submissions", "127.0.0.1", 2465), ("imap", "127.0.0.1", 2143),
        ("imaps", "127.0.0.1", 2993), ("pop3", "127.0.0.1", 2110),
        ("pop3s", "127.0.0.1", 2995)}


@pytest.mark.parametrize("raw, key", [
    ({"server": {"hostname": "h"}, "limits": {"max_recipent": 1}}, "limits.max_recipent"),
    ({"server": {"hostname": "h"}, "limits": {"max_recipients": "x"}}, "max_recipients"),
    ({"server": {"hostname": "h"}, "delivery": {"tls": "maybe"}}, "delivery.tls"),
    ({"server": {"hostname": "h"}, "listener": [{"kind": "smtp", "address": "nope"}]}, "address"),
    ({"server": {"hostname": "h"}, "listener": [{"kind": "fax", "address": ":25"}]}, "kind"),
    ({"server": {}}, "server.hostname"),
    ({"server": {"hostname": "h"}, "limits": {"max_command_line": 100}}, "max_command_line"),
    ({"server": {"hostname": "h"}, "dns": {"nameservers": "1.1.1.1"}}, "dns.nameservers"),
    ({"server": {"hostname": "h"}, "bogus": {}}, "bogus"),
])
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.from_dict(raw, base_dir=Path("/tmp"))
