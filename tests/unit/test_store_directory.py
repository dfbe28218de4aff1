"""Directory: domains, accounts, aliases, and recipient resolution."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kittiwake.store import (
    AlreadyExists,
    Directory,
    DomainNotEmpty,
    NotFound,
    Resolution,
)
from kittiwake.store.passwords import Credentials
from support.storefakes import FakePasswords


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Directory]:
    d = Directory(tmp_path / "kittiwake.db", passwords=FakePasswords())
    d.add_domain("example.com")
    d.add_domain("Example.ORG")
    yield d
    d.close()


def test_domains_are_case_insensitive(directory: Directory) -> None:
    assert directory.list_domains() == ["example.com", "example.org"]
    assert directory.is_local_domain("EXAMPLE.com")
    assert not directory.is_local_domain("example.net")
    with pytest.raises(AlreadyExists):
        directory.add_domain("example.COM")


def test_account_creation_builds_the_maildir_tree(directory: Directory, tmp_path: Path) -> None:
    directory.add_account("Alice@Example.com", "pw")
    root = tmp_path / "mail" / "example.com" / "alice"
    for folder in ("", ".Sent", ".Drafts", ".Junk", ".Trash", ".Archive"):
        for sub in ("cur", "new", "tmp"):
            assert (root / folder / sub).is_dir()
    assert (root / ".Sent" / "maildirfolder").exists()
    assert [a.address for a in directory.list_accounts()] == ["alice@example.com"]
    assert directory.account_exists("ALICE@example.COM")


def test_account_needs_an_existing_domain_and_a_fresh_address(directory: Directory) -> None:
    with pytest.raises(NotFound):
        directory.add_account("bob@example.net", "pw")
    directory.add_account("bob@example.com", "pw")
    with pytest.raises(AlreadyExists):
        directory.add_account("BOB@example.com", "pw")


def test_passwords_and_scram(directory: Directory) -> None:
    directory.add_account("bob@example.com", "old")
    assert directory.verify_password("Bob@example.com", "old")
    assert not directory.verify_password("bob@example.com", "wrong")
    assert not directory.verify_password("nobody@example.com", "old")
    directory.set_password("bob@example.com", "new")
    assert directory.verify_password("bob@example.com", "new")
    assert directory.scram_credentials("bob@example.com") == "SCRAM-SHA-256$fake$new"
    assert directory.scram_credentials("nobody@example.com") is None


def test_real_credentials_hash_with_argon2id_and_store_scram(tmp_path: Path) -> None:
    pytest.importorskip("kittiwake.credentials")
    with Directory(tmp_path / "k.db", passwords=Credentials()) as d:
        d.add_domain("example.com")
        d.add_account("carol@example.com", "correct horse")
        row = d._one("SELECT password_hash, scram FROM accounts", ())
        assert row is not None and row[0].startswith("$argon2id$")
        assert row[1].startswith("SCRAM-SHA-256$")
        assert d.verify_password("carol@example.com", "correct horse")
        assert not d.verify_password("carol@example.com", "battery staple")


def test_del_account_keeps_files_unless_purged(directory: Directory, tmp_path: Path) -> None:
    root = tmp_path / "mail" / "example.com"
    directory.add_account("a@example.com", "pw")
    directory.add_account("b@example.com", "pw")
    directory.del_account("a@example.com")
    assert (root / "a").is_dir() and not directory.account_exists("a@example.com")
    directory.del_account("b@example.com", purge=True)
    assert not (root / "b").exists()
    with pytest.raises(NotFound):
        directory.del_account("b@example.com")


def test_del_domain_refuses_while_accounts_exist_unless_forced(directory: Directory) -> None:
    directory.add_account("a@example.com", "pw")
    directory.add_alias("x@example.com", ["a@example.com"])
    with pytest.raises(DomainNotEmpty):
        directory.del_domain("example.com")
    directory.del_domain("example.com", force=True)
    assert directory.list_domains() == ["example.org"]
    assert directory.list_accounts() == [] and directory.list_aliases() == []


def test_alias_crud(directory: Directory) -> None:
    directory.add_account("a@example.com", "pw")
    directory.add_alias("Sales@example.com", ["a@example.com", "Boss@Remote.NET"])
    directory.add_alias("@example.org", ["a@example.com"])
    aliases = {a.source: a.targets for a in directory.list_aliases()}
    assert aliases == {
        "sales@example.com": ("Boss@remote.net", "a@example.com"),
        "@example.org": ("a@example.com",),
    }
    assert [a.source for a in directory.list_aliases("example.org")] == ["@example.org"]
    directory.del_alias("sales@example.com", "boss@remote.net")
    assert directory.list_aliases("example.com")[0].targets == ("a@example.com",)
    directory.del_alias("sales@example.com")
    with pytest.raises(NotFound):
        directory.del_alias("sales@example.com")
    with pytest.raises(NotFound):
        directory.add_alias("x@elsewhere.net", ["a@example.com"])
    with pytest.raises(AlreadyExists):
        directory.add_alias("a@example.com", ["b@example.com"])


# ------------------------------------------------------------------ resolve


@pytest.fixture
def populated(directory: Directory) -> Directory:
    for user in ("alice", "bob", "carol"):
        directory.add_account(f"{user}@example.com", "pw")
    return directory


def test_resolve_account_case_insensitively(populated: Directory) -> None:
    assert populated.resolve("ALICE@Example.Com") == Resolution(local=("alice@example.com",))
    assert populated.resolve("nobody@example.com") == Resolution()
    assert not populated.resolve("alice@example.net")  # not a local domain
    assert not populated.resolve("garbage")


def test_resolve_alias_chain_with_remote_targets_and_dedupe(populated: Directory) -> None:
    populated.add_alias("team@example.com", ["alice@example.com", "staff@example.com"])
    populated.add_alias(
        "staff@example.com", ["bob@example.com", "Alice@example.com", "Ext@Partner.NET"]
    )
    assert populated.resolve("team@example.com") == Resolution(
        local=("alice@example.com", "bob@example.com"), remote=("Ext@partner.net",)
    )


def test_resolve_survives_alias_loops(populated: Directory) -> None:
    populated.add_alias("a@example.com", ["b@example.com"])
    populated.add_alias("b@example.com", ["a@example.com", "carol@example.com"])
    assert populated.resolve("a@example.com") == Resolution(local=("carol@example.com",))
    populated.add_alias("self@example.com", ["self@example.com"])
    assert populated.resolve("self@example.com") == Resolution()


def test_resolve_stops_at_depth_limit(populated: Directory) -> None:
    for i in range(15):
        populated.add_alias(f"l{i}@example.com", [f"l{i + 1}@example.com"])
    populated.add_alias("l15@example.com", ["alice@example.com"])
    assert populated.resolve("l0@example.com") == Resolution()
    assert populated.resolve("l8@example.com") == Resolution(local=("alice@example.com",))


def test_resolve_subaddress_falls_back_to_account_and_alias(populated: Directory) -> None:
    populated.add_alias("list@example.com", ["bob@example.com"])
    assert populated.resolve("Alice+Shopping@example.com").local == ("alice@example.com",)
    assert populated.resolve("list+x@example.com").local == ("bob@example.com",)
    assert not populated.resolve("nobody+x@example.com")
    # An exact account/alias with a '+' wins over the subaddress rule.
    populated.add_alias("alice+vip@example.com", ["carol@example.com"])
    assert populated.resolve("alice+vip@example.com").local == ("carol@example.com",)


def test_resolve_catch_all_is_last(populated: Directory) -> None:
    populated.add_alias("@example.com", ["carol@example.com"])
    assert populated.resolve("whoever@example.com").local == ("carol@example.com",)
    assert populated.resolve("alice@example.com").local == ("alice@example.com",)
    assert populated.resolve("alice+tag@example.com").local == ("alice@example.com",)
    # A catch-all pointing into its own domain at a missing user must not loop.
    populated.add_alias("@example.org", ["ghost@example.org"])
    assert populated.resolve("x@example.org") == Resolution()


def test_dangling_local_target_is_dropped_not_sent_remote(populated: Directory) -> None:
    populated.add_alias("old@example.com", ["gone@example.com", "bob@example.com"])
    assert populated.resolve("old@example.com") == Resolution(local=("bob@example.com",))
