"""The durable outbound spool: lifecycles, grouping, retries, expiry, crash recovery, threads."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kittiwake.queue import spool as spool_module
from kittiwake.queue.models import (
    Delivered,
    Permanent,
    QueuedRecipientSpec,
    RecipientState,
    Transient,
    format_reply,
    parse_reply,
)
from kittiwake.queue.schedule import RetrySchedule
from kittiwake.queue.spool import LOST_MESSAGE, Spool
from kittiwake.smtp.replies import Reply

T0 = 1_700_000_000.0
MSG = b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
OK = Reply(250, "2.0.0", "Ok: queued as XYZ")
DEFER = Reply(451, "4.7.1", "Greylisted, try again later")
NO_USER = Reply(550, "5.1.1", "No such user")


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path, fsync=False) as s:
        yield s


def rcpts(*addresses: str, notify: str | None = None) -> list[QueuedRecipientSpec]:
    return [QueuedRecipientSpec(a, notify=notify) for a in addresses]


def enqueue(spool: Spool, queue_id: str, *addresses: str, sender: str = "a@example.com",
            notify: str | None = None, now: float = T0) -> None:
    spool.enqueue(queue_id, MSG, sender, rcpts(*addresses, notify=notify), envid=None,
                  ret=None, smtputf8=False, eight_bit=False, origin="submission",
                  auth_user="a@example.com", now=now)


def states(spool: Spool, queue_id: str) -> dict[str, str]:
    summary = spool.show(queue_id)
    assert summary is not None
    return {r.recipient: r.state.value for r in summary.recipients}


# --------------------------------------------------------------------------- enqueue


def test_enqueue_stores_the_message_once_and_a_row_per_recipient(spool: Spool,
                                                                 tmp_path: Path) -> None:
    spool.enqueue("Q1", MSG, "a@example.com",
                  [QueuedRecipientSpec("b@example.org", orcpt="rfc822;b@example.org",
                                       notify="FAILURE"),
                   QueuedRecipientSpec("c@example.net")],
                  envid="ENV+2B1", ret="hdrs", smtputf8=True, eight_bit=True,
                  origin="smtp", auth_user=None, now=T0)
    assert (tmp_path / "queue" / "Q1").read_bytes() == MSG
    assert spool.read_message("Q1") == MSG
    assert spool.message_path("Q1") == tmp_path / "queue" / "Q1"
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []
    summary = spool.show("Q1")
    assert summary is not None
    m = summary.message
    assert (m.queue_id, m.sender, m.envid, m.ret, m.smtputf8, m.eight_bit, m.size, m.arrival,
            m.origin, m.auth_user) == ("Q1", "a@example.com", "ENV+2B1", "HDRS", True, True,
                                       len(MSG), T0, "smtp", None)
    b, c = summary.recipients
    assert (b.recipient, b.domain, b.orcpt, b.notify) == (
        "b@example.org", "example.org", "rfc822;b@example.org", "FAILURE")
    assert (b.state, b.attempts, b.next_attempt, b.first_seen, b.warned, b.last_reply) == (
        RecipientState.QUEUED, 0, T0, T0, False, None)
    assert c.domain == "example.net"


def test_enqueue_with_fsync_on(tmp_path: Path) -> None:
    with Spool(tmp_path) as s:
        enqueue(s, "Q1", "b@example.org")
        assert s.read_message("Q1") == MSG


def test_duplicate_recipients_are_queued_once(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org", "b@example.org", "c@example.org")
    assert list(states(spool, "Q1")) == ["b@example.org", "c@example.org"]


@pytest.mark.parametrize("queue_id", ["", "tmp", "TMP", "../x", "a/b", ".hidden", "x" * 65])
def test_bad_queue_ids_are_refused(spool: Spool, queue_id: str) -> None:
    with pytest.raises(ValueError):
        enqueue(spool, queue_id, "b@example.org")


def test_bad_recipient_queues_nothing(spool: Spool, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        enqueue(spool, "Q1", "b@example.org", "not an address")
    assert not (tmp_path / "queue" / "Q1").exists()
    assert spool.show("Q1") is None


def test_no_recipients_is_refused(spool: Spool) -> None:
    with pytest.raises(ValueError):
        enqueue(spool, "Q1")


def test_taken_queue_id_never_clobbers_the_queued_message(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org")
    with pytest.raises(FileExistsError):
        spool.enqueue("Q1", b"other", "x@example.com", rcpts("y@example.org"), now=T0)
    assert spool.read_message("Q1") == MSG
    assert list(states(spool, "Q1")) == ["b@example.org"]


def test_failed_commit_removes_the_file(spool: Spool, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No row, no file: the caller answers 4xx and nothing half-queued remains."""
    enqueue(spool, "Q0", "b@example.org")
    # A second message row with the same id in the DB but no file: the INSERT fails.
    (tmp_path / "queue" / "Q0").rename(tmp_path / "elsewhere")
    with pytest.raises(sqlite3.IntegrityError):
        enqueue(spool, "Q0", "c@example.org")
    assert not (tmp_path / "queue" / "Q0").exists()


def test_queue_survives_reopening(tmp_path: Path) -> None:
    with Spool(tmp_path, fsync=False) as s:
        enqueue(s, "Q1", "b@example.org")
    with Spool(tmp_path, fsync=False) as s:
        assert states(s, "Q1") == {"b@example.org": "queued"}
        assert s.read_message("Q1") == MSG


def test_queue_tables_do_not_touch_the_store_schema(tmp_path: Path) -> None:
    from kittiwake.store import db as store_db

    conn = store_db.connect(tmp_path / "kittiwake.db", durable=False)
    before = store_db.schema_version(conn)
    with Spool(tmp_path, fsync=False) as s:
        enqueue(s, "Q1", "b@example.org")
    assert store_db.schema_version(conn) == before
    assert conn.execute("SELECT version FROM queue_schema_version").fetchall() == [(1,)]
    conn.close()


# --------------------------------------------------------------------------- due / grouping


def test_due_groups_recipients_per_message_and_domain(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org", "c@EXAMPLE.org", "d@example.net")
    enqueue(spool, "Q2", "e@example.org", now=T0 + 1)
    items = spool.due(T0 + 10)
    groups = {(i.queue_id, i.domain): [r.recipient for r in i.recipients] for i in items}
    assert groups == {
        ("Q1", "example.org"): ["b@example.org", "c@EXAMPLE.org"],
        ("Q1", "example.net"): ["d@example.net"],
        ("Q2", "example.org"): ["e@example.org"],
    }
    assert all(i.message.sender == "a@example.com" for i in items)


def test_idn_domains_are_grouped_by_their_a_label(spool: Spool) -> None:
    spool.enqueue("Q1", MSG, "a@example.com", rcpts("x@bücher.de", "y@BÜCHER.de"),
                  smtputf8=True, now=T0)
    (item,) = spool.due(T0)
    assert item.domain == "xn--bcher-kva.de"
    assert len(item.recipients) == 2


def test_due_respects_time_and_limit(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org", now=T0)
    enqueue(spool, "Q2", "b@example.net", now=T0 + 100)
    assert spool.due(T0 - 1) == []
    assert [i.queue_id for i in spool.due(T0 + 50)] == ["Q1"]
    assert [i.queue_id for i in spool.due(T0 + 200, limit=5)] == ["Q2"]


def test_due_limit_counts_groups_oldest_first(spool: Spool) -> None:
    for n in range(5):
        enqueue(spool, f"Q{n}", f"r@d{n}.example", now=T0 + n)
    assert [i.queue_id for i in spool.due(T0 + 10, limit=2)] == ["Q0", "Q1"]


def test_large_groups_are_split(spool: Spool) -> None:
    enqueue(spool, "Q1", *[f"r{n}@example.org" for n in range(250)])
    items = spool.due(T0, max_recipients=100)
    assert [len(i.recipients) for i in items] == [100, 100, 50]


def test_due_leases_what_it_hands_out(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org")
    assert len(spool.due(T0, lease=600)) == 1
    assert spool.due(T0 + 1, lease=600) == []  # in flight: not handed out twice
    assert len(spool.due(T0 + 600, lease=600)) == 1  # lease ran out (runner died?)


def test_lease_holds_across_two_spools_on_one_database(tmp_path: Path) -> None:
    with Spool(tmp_path, fsync=False) as a, Spool(tmp_path, fsync=False) as b:
        enqueue(a, "Q1", "b@example.org")
        assert len(a.due(T0)) == 1
        assert b.due(T0) == []


# --------------------------------------------------------------------------- record_results


def test_delivered_everywhere_removes_the_message(spool: Spool, tmp_path: Path) -> None:
    enqueue(spool, "Q1", "b@example.org", "c@example.org")
    (item,) = spool.due(T0)
    spool.record_results("Q1", [(r.recipient, Delivered(OK, "mx.example.org"))
                                for r in item.recipients], T0 + 1)
    assert spool.show("Q1") is None
    assert not (tmp_path / "queue" / "Q1").exists()
    assert spool.pending_dsns() == []


def test_partial_delivery_keeps_the_rest_queued(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org", "c@example.net")
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Delivered(OK, "mx.example.org"))], T0 + 1)
    assert states(spool, "Q1") == {"b@example.org": "delivered", "c@example.net": "queued"}
    assert spool.read_message("Q1") == MSG


def test_transient_failure_schedules_a_retry(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org")
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org",
                                 Transient(DEFER, "mx.example.org[192.0.2.1]", T0 + 300))],
                         T0 + 1)
    summary = spool.show("Q1")
    assert summary is not None
    (r,) = summary.recipients
    assert (r.state, r.attempts, r.next_attempt, r.last_reply, r.last_host, r.last_attempt) == (
        RecipientState.QUEUED, 1, T0 + 300, DEFER, "mx.example.org[192.0.2.1]", T0 + 1)
    assert spool.due(T0 + 299) == []  # lease was released, but it is not due yet
    assert len(spool.due(T0 + 300)) == 1


def test_permanent_failure_bounces_and_owes_a_dsn(spool: Spool, tmp_path: Path) -> None:
    enqueue(spool, "Q1", "b@example.org", "c@example.org")
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Permanent(NO_USER, "mx.example.org")),
                                ("c@example.org", Delivered(OK, "mx.example.org"))], T0 + 1)
    assert states(spool, "Q1") == {"b@example.org": "bounced", "c@example.org": "delivered"}
    (due,) = spool.pending_dsns()
    assert due.kind == "failure"
    assert [r.recipient for r in due.recipients] == ["b@example.org"]
    assert due.recipients[0].last_reply == NO_USER
    assert (tmp_path / "queue" / "Q1").exists()  # the DSN returns the content
    spool.dsn_done("Q1", "failure", [r.id for r in due.recipients])
    assert spool.pending_dsns() == []
    assert spool.show("Q1") is None
    assert not (tmp_path / "queue" / "Q1").exists()


@pytest.mark.parametrize("sender,notify", [("", None), ("a@example.com", "NEVER"),
                                           ("a@example.com", "SUCCESS,DELAY")])
def test_no_failure_dsn_when_not_wanted_or_to_null_sender(spool: Spool, sender: str,
                                                         notify: str | None) -> None:
    enqueue(spool, "Q1", "b@example.org", sender=sender, notify=notify)
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Permanent(NO_USER, None))], T0 + 1)
    assert spool.pending_dsns() == []
    assert spool.show("Q1") is None


@pytest.mark.parametrize("remote_dsn,owed", [(False, True), (True, False)])
def test_success_dsn_only_when_asked_and_the_next_hop_did_not_take_over(
        spool: Spool, remote_dsn: bool, owed: bool) -> None:
    enqueue(spool, "Q1", "b@example.org", notify="SUCCESS")
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Delivered(OK, "mx", remote_dsn))], T0 + 1)
    assert [d.kind for d in spool.pending_dsns()] == (["success"] if owed else [])


def test_delay_warning_is_owed_once(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org")
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Transient(DEFER, None, T0 + 300, warn=True))],
                         T0 + 1)
    (due,) = spool.pending_dsns()
    assert due.kind == "delay" and due.recipients[0].warned
    spool.dsn_done("Q1", "delay", [due.recipients[0].id])
    spool.due(T0 + 300)
    spool.record_results("Q1", [("b@example.org", Transient(DEFER, None, T0 + 900, warn=True))],
                         T0 + 301)
    assert spool.pending_dsns() == []
    assert states(spool, "Q1") == {"b@example.org": "queued"}


def test_delivery_cancels_an_unsent_delay_warning(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org")
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Transient(DEFER, None, T0, warn=True))], T0)
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Delivered(OK, None))], T0 + 1)
    assert spool.pending_dsns() == []
    assert spool.show("Q1") is None


def test_results_for_unknown_recipient_or_vanished_message(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org")
    with pytest.raises(KeyError):
        spool.record_results("Q1", [("x@example.org", Delivered(OK, None))], T0)
    spool.record_results("NOPE", [("b@example.org", Delivered(OK, None))], T0)  # dropped
    assert states(spool, "Q1") == {"b@example.org": "queued"}  # nothing half-applied


def test_results_after_delete_are_ignored(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org", "c@example.org")
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Delivered(OK, None))], T0)
    assert spool.delete("Q1")
    # The runner reports an attempt that was in flight while the admin deleted the message.
    spool.record_results("Q1", [("c@example.org", Delivered(OK, None))], T0)
    assert spool.show("Q1") is None
    assert spool.pending_dsns() == []


def test_lifecycle_with_the_schedule_until_expiry(spool: Spool) -> None:
    schedule = RetrySchedule()
    enqueue(spool, "Q1", "b@example.org")
    now, warnings = T0, 0
    while True:
        (item,) = spool.due(now)
        (r,) = item.recipients
        nxt = schedule.next_attempt(r.first_seen, r.attempts + 1, now)
        if nxt is None:
            spool.record_results("Q1", [(r.recipient, Permanent(DEFER, "mx"))], now)
            break
        warn = schedule.should_warn(r.first_seen, r.warned, now)
        spool.record_results("Q1", [(r.recipient, Transient(DEFER, "mx", nxt, warn))], now)
        for due in spool.pending_dsns():
            warnings += 1
            spool.dsn_done(due.message.queue_id, due.kind, [x.id for x in due.recipients])
        assert spool.due(nxt - 1) == []
        now = nxt
    assert now == T0 + schedule.max_lifetime
    assert warnings == 1
    (bounce,) = spool.pending_dsns()
    assert bounce.kind == "failure"
    assert bounce.recipients[0].last_reply == DEFER  # expiry reports the last 4xx


# --------------------------------------------------------------------------- administration


def test_list_queue_shows_everything_oldest_first(spool: Spool) -> None:
    enqueue(spool, "Q2", "b@example.org", now=T0 + 5)
    enqueue(spool, "Q1", "c@example.org", "d@example.net", now=T0)
    spool.due(T0 + 5)
    spool.record_results("Q1", [("c@example.org", Transient(DEFER, "mx", T0 + 600))], T0 + 5)
    listing = spool.list_queue()
    assert [s.message.queue_id for s in listing] == ["Q1", "Q2"]
    c = listing[0].recipients[0]
    assert (c.attempts, c.last_reply, c.state) == (1, DEFER, RecipientState.QUEUED)
    assert listing[0].message.size == len(MSG)


def test_retry_makes_queued_recipients_due(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org")
    enqueue(spool, "Q2", "c@example.org")
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Transient(DEFER, None, T0 + 4000))], T0)
    spool.record_results("Q2", [("c@example.org", Transient(DEFER, None, T0 + 4000))], T0)
    assert spool.retry("Q1", T0 + 10) == 1
    assert [i.queue_id for i in spool.due(T0 + 10)] == ["Q1"]
    assert spool.retry(None, T0 + 20) == 2
    assert [i.queue_id for i in spool.due(T0 + 20)] == ["Q2"]  # Q1 is leased
    assert spool.retry("NOPE", T0) == 0


def test_delete_removes_message_without_notification(spool: Spool, tmp_path: Path) -> None:
    enqueue(spool, "Q1", "b@example.org", "c@example.org")
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Permanent(NO_USER, None))], T0)
    assert spool.delete("Q1")
    assert spool.show("Q1") is None
    assert not (tmp_path / "queue" / "Q1").exists()
    assert spool.pending_dsns() == []
    assert not spool.delete("Q1")


def test_cleanup_removes_only_finished_messages(spool: Spool, tmp_path: Path) -> None:
    enqueue(spool, "Q1", "b@example.org")
    enqueue(spool, "Q2", "c@example.org")
    with sqlite3.connect(tmp_path / "kittiwake.db") as db:  # e.g. another process finished it
        db.execute("UPDATE queue_recipients SET state = 'delivered' WHERE queue_id = 'Q1'")
    assert spool.cleanup() == 1
    assert spool.show("Q1") is None and not (tmp_path / "queue" / "Q1").exists()
    assert spool.show("Q2") is not None


def test_reply_text_round_trip() -> None:
    for reply in [NO_USER, Reply(421, "", "Service not available"),
                  Reply(550, "5.7.1", ("Rejected", "see https://example.org/why"))]:
        assert parse_reply(format_reply(reply)) == reply
    assert parse_reply("garbage") == Reply(451, "4.3.0", ("garbage",))


# --------------------------------------------------------------------------- crash recovery


def test_recover_deletes_partial_writes_in_tmp(spool: Spool, tmp_path: Path) -> None:
    (tmp_path / "queue" / "tmp" / "Q9").write_bytes(b"half a mess")
    report = spool.recover(T0 * 2, grace=0)
    assert report.tmp_removed == 1
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []


def test_recover_deletes_a_file_whose_row_was_never_committed(spool: Spool,
                                                              tmp_path: Path) -> None:
    """Crash between link and COMMIT: no 250 went out, so the file is not queued mail."""
    enqueue(spool, "Q1", "b@example.org")
    spool._write_durably("Q2", MSG)  # the crash: file durable, row never committed
    report = spool.recover(T0 * 2, grace=0)
    assert report.orphans_removed == 1
    assert not (tmp_path / "queue" / "Q2").exists()
    assert spool.read_message("Q1") == MSG  # committed mail is untouched


def test_recover_leaves_young_files_alone(spool: Spool, tmp_path: Path) -> None:
    """Another process may be between link and commit right now."""
    spool._write_durably("Q2", MSG)
    (tmp_path / "queue" / "tmp" / "Q3").write_bytes(b"x")
    mtime = os.stat(tmp_path / "queue" / "Q2").st_mtime
    report = spool.recover(mtime + 10, grace=60)
    assert (report.tmp_removed, report.orphans_removed) == (0, 0)
    assert spool.cleanup(mtime + 61, grace=60) == 0
    assert not (tmp_path / "queue" / "Q2").exists()
    assert not (tmp_path / "queue" / "tmp" / "Q3").exists()


def test_recover_bounces_rows_whose_file_vanished(spool: Spool, tmp_path: Path) -> None:
    enqueue(spool, "Q1", "b@example.org", "c@example.org")
    enqueue(spool, "Q2", "d@example.org", sender="")
    (tmp_path / "queue" / "Q1").unlink()
    (tmp_path / "queue" / "Q2").unlink()
    report = spool.recover(T0 + 5, grace=0)
    assert sorted(report.lost) == ["Q1", "Q2"]
    (due,) = spool.pending_dsns()  # none for Q2: its sender is the null path
    assert due.message.queue_id == "Q1" and due.kind == "failure"
    assert {r.last_reply for r in due.recipients} == {LOST_MESSAGE}
    assert spool.show("Q2") is None


def test_recover_releases_leases_of_the_previous_run(tmp_path: Path) -> None:
    with Spool(tmp_path, fsync=False) as s:
        enqueue(s, "Q1", "b@example.org")
        assert len(s.due(T0, lease=3600)) == 1  # then the process dies mid-delivery
    with Spool(tmp_path, fsync=False) as s:
        assert s.due(T0 + 1) == []
        report = s.recover(T0 + 1)
        assert report.leases_cleared == 1
        assert len(s.due(T0 + 1)) == 1  # at least once, never zero times


def test_recover_on_a_clean_spool_changes_nothing(spool: Spool) -> None:
    enqueue(spool, "Q1", "b@example.org")
    report = spool.recover(T0 * 2, grace=0)
    assert report == type(report)()
    assert states(spool, "Q1") == {"b@example.org": "queued"}


# --------------------------------------------------------------------------- threads


def test_concurrent_enqueues_from_threads(spool: Spool) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for k in range(20):
                enqueue(spool, f"T{n}x{k}", f"r{k}@d{n}.example", "x@shared.example")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listing = spool.list_queue()
    assert len(listing) == 160
    assert all(spool.read_message(s.message.queue_id) == MSG for s in listing)
    assert len(spool.due(T0, limit=1000)) == 320


def test_concurrent_due_calls_never_hand_out_a_recipient_twice(spool: Spool) -> None:
    for n in range(50):
        enqueue(spool, f"Q{n}", f"r@d{n}.example")
    seen: list[str] = []
    lock = threading.Lock()

    def runner() -> None:
        for _ in range(10):
            items = spool.due(T0, limit=3)
            with lock:
                seen.extend(i.queue_id for i in items)

    threads = [threading.Thread(target=runner) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == sorted(f"Q{n}" for n in range(50))


def test_module_has_no_mutable_globals() -> None:
    for name, value in vars(spool_module).items():
        if not name.startswith("__"):
            assert not isinstance(value, list | dict | set), name


def test_newer_queue_schema_is_refused(tmp_path: Path) -> None:
    Spool(tmp_path, fsync=False).close()
    with sqlite3.connect(tmp_path / "kittiwake.db") as db:
        db.execute("INSERT INTO queue_schema_version (version) VALUES (99)")
    with pytest.raises(RuntimeError, match="newer"):
        Spool(tmp_path, fsync=False)
