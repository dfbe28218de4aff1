"""Maildir naming, flags ↔ info, folder mapping, walking and tmp/ cleaning."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from kittiwake.store import maildir
from kittiwake.store.addresses import account_dir, fold, fold_domain, path_component
from kittiwake.store.errors import InvalidAddress, InvalidMailboxName


def test_unique_names_follow_the_maildir_recipe_and_never_repeat() -> None:
    names = maildir.UniqueNames("mx.example")
    a, b = names.next(1234, now=1700000000.123456), names.next(1234, now=1700000000.123456)
    assert re.fullmatch(rf"1700000000\.M12345\dP{os.getpid()}Q1\.mx\.example,S=1234", a)
    assert a != b and "Q2." in b


def test_unsafe_hostname_characters_are_octal_escaped() -> None:
    name = maildir.UniqueNames("a/b:c,d").next(1)
    assert "a\\057b\\072c\\054d,S=1" in name
    assert "/" not in name and ":" not in name


@pytest.mark.parametrize(
    ("flags", "info"),
    [
        (set(), "2,"),
        ({"\\Seen"}, "2,S"),
        ({"\\Seen", "\\Flagged"}, "2,FS"),
        ({"\\Draft", "\\Answered", "\\Deleted", "$Forwarded", "\\Seen", "\\Flagged"}, "2,DFPRST"),
        ({"\\seen", "$Junk"}, "2,S"),  # case-insensitive; keywords stay in the index
    ],
)
def test_flags_to_info(flags: set[str], info: str) -> None:
    assert maildir.info_for(flags) == info


def test_info_to_flags_ignores_dovecot_keyword_letters() -> None:
    assert maildir.flags_from_info("2,FSab") == {"\\Flagged", "\\Seen"}
    assert maildir.flags_from_info("1,whatever") == frozenset()
    assert maildir.flags_from_info(None) == frozenset()


def test_canonical_flags_fold_system_flags_and_drop_recent() -> None:
    assert maildir.canonical_flags(["\\SEEN", "\\Recent", "$Label1"]) == {"\\Seen", "$Label1"}
    with pytest.raises(ValueError):
        maildir.canonical_flags(["two words"])


def test_flag_text_puts_system_flags_first() -> None:
    assert maildir.format_flags({"$b", "\\Seen", "$a", "\\Answered"}) == "\\Answered \\Seen $a $b"
    assert maildir.parse_flags("\\Seen $a") == {"\\Seen", "$a"}


def test_split_name() -> None:
    assert maildir.split_name("123.M1P2Q3.h,S=5:2,FS") == ("123.M1P2Q3.h,S=5", "2,FS")
    assert maildir.split_name("123.M1P2Q3.h") == ("123.M1P2Q3.h", None)


@pytest.mark.parametrize(
    ("name", "relative"),
    [("INBOX", "."), ("inbox", "."), ("Sent", ".Sent"), ("a/b", ".a.b"), ("v1.0", ".v1%2E0")],
)
def test_folder_dir(name: str, relative: str) -> None:
    root = Path("/m")
    assert maildir.folder_dir(root, name) == (root / relative if relative != "." else root)


@pytest.mark.parametrize("name", ["", "a//b", "/a", "bad\x00"])
def test_bad_folder_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidMailboxName):
        maildir.folder_dir(Path("/m"), name)


def test_address_folding_and_safe_paths(tmp_path: Path) -> None:
    assert fold("Bob.Smith@Example.COM.") == "bob.smith@example.com"
    assert fold_domain("xn--bcher-kva.example") == "bücher.example"
    assert path_component("..") == "%2E."
    assert path_component("a/b%") == "a%2Fb%25"
    d = account_dir(tmp_path, "../../etc@example.com")
    assert d.parent == tmp_path / "example.com"
    assert tmp_path in d.parents
    with pytest.raises(InvalidAddress):
        fold("no-at-sign")


def _touch(path: Path, data: bytes, mtime: float) -> None:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def test_walk_lists_new_and_cur_with_info_flags_but_not_tmp(tmp_path: Path) -> None:
    maildir.create_maildir(tmp_path, folder=False)
    _touch(tmp_path / "new" / "1.a.h", b"x", 100)
    _touch(tmp_path / "cur" / "2.b.h:2,FS", b"yy", 200)
    _touch(tmp_path / "tmp" / "3.c.h", b"zzz", 300)
    _touch(tmp_path / "cur" / ".hidden", b"", 300)
    found = {e.base: e for e in maildir.walk(tmp_path)}
    assert set(found) == {"1.a.h", "2.b.h"}
    assert found["1.a.h"].flags == frozenset() and not found["1.a.h"].in_cur
    assert found["2.b.h"].flags == {"\\Flagged", "\\Seen"} and found["2.b.h"].size == 2
    assert found["2.b.h"].mtime == 200


def test_locate_follows_a_file_a_reader_moved(tmp_path: Path) -> None:
    maildir.create_maildir(tmp_path, folder=False)
    _touch(tmp_path / "cur" / "1.a.h:2,RS", b"x", 1)
    assert maildir.locate(tmp_path, "1.a.h", {"\\Seen"}) == tmp_path / "cur" / "1.a.h:2,RS"
    assert maildir.locate(tmp_path, "nope", set()) is None


def test_clean_tmp_removes_only_files_older_than_36_hours(tmp_path: Path) -> None:
    maildir.create_maildir(tmp_path, folder=True)
    assert (tmp_path / "maildirfolder").exists()
    now = 1_000_000.0
    _touch(tmp_path / "tmp" / "old", b"", now - 37 * 3600)
    _touch(tmp_path / "tmp" / "young", b"", now - 3600)
    assert maildir.clean_tmp(tmp_path, now) == 1
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == ["young"]
