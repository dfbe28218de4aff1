"""From spool rows to a DSN: status mapping, xtext decoding, envelope flags."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from kittiwake.queue.models import (
    Delivered,
    DsnDue,
    Permanent,
    QueuedMessage,
    QueuedRecipient,
    QueuedRecipientSpec,
    RecipientState,
    Transient,
)
from kittiwake.queue.notify import Notification, build_notification, diagnostic_code, dsn_status
from kittiwake.queue.schedule import RetrySchedule
from kittiwake.queue.spool import Spool
from kittiwake.smtp.replies import Reply

T0 = 1_714_564_800.0  # 2024-05-01 12:00:00 UTC
MSG = b"From: a@example.com\r\nSubject: hi\r\nMessage-ID: <m@example.com>\r\n\r\nBODY-TEXT\r\n"


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path, fsync=False) as s:
        yield s


def notify(due: DsnDue, original: bytes | None, now: float) -> Notification | None:
    return build_notification(due, original, reporting_mta="mx.example.com",
                              postmaster="MAILER-DAEMON@mx.example.com",
                              message_id_domain="mx.example.com", schedule=RetrySchedule(),
                              now=now)


def messages(payload: object) -> list[Message]:
    assert isinstance(payload, list)
    out = [p for p in payload if isinstance(p, Message)]
    assert len(out) == len(payload)
    return out


def parts_of(raw: bytes) -> list[Message]:
    return messages(email.message_from_bytes(raw, policy=email.policy.compat32).get_payload())


@pytest.mark.parametrize("reply,kind,status", [
    (Reply(550, "5.1.1", "No such user"), "failure", "5.1.1"),
    (Reply(550, "", "No"), "failure", "5.0.0"),
    (Reply(451, "4.7.1", "Greylisted"), "failure", "4.7.1"),  # expired: persistent transient
    (Reply(421, "", "busy"), "delay", "4.0.0"),
    (None, "failure", "5.0.0"),
    (None, "delay", "4.0.0"),
    (Reply(250, "2.0.0", "Ok"), "success", "2.0.0"),
])
def test_dsn_status(reply: Reply | None, kind: str, status: str) -> None:
    assert dsn_status(reply, kind) == status


def test_diagnostic_code_keeps_the_remote_words() -> None:
    reply = Reply(550, "5.7.1", ("Message rejected", "see  https://example.org"))
    assert diagnostic_code(reply) == (
        "smtp; 550 5.7.1 Message rejected see https://example.org")
    assert diagnostic_code(Reply(554, "", "No")) == "smtp; 554 No"


def test_bounce_from_the_spool(spool: Spool) -> None:
    spool.enqueue("Q1", MSG, "a@example.com",
                  [QueuedRecipientSpec("b@example.org", orcpt="rfc822;B+2Bx@example.org")],
                  envid="ENV+2B1", now=T0)
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Permanent(
        Reply(550, "5.1.1", "No such user"), "mx.example.org[192.0.2.7]"))], T0 + 60)
    (due,) = spool.pending_dsns()
    note = notify(due, spool.read_message("Q1"), T0 + 61)
    assert note is not None
    assert (note.sender, note.recipient, note.eight_bit, note.smtputf8) == (
        "", "a@example.com", False, False)
    _, status, returned = parts_of(note.content)
    groups = messages(status.get_payload())
    assert groups[0]["Original-Envelope-Id"] == "ENV+1"
    assert groups[0]["Arrival-Date"] == "Wed, 01 May 2024 12:00:00 +0000"
    block = groups[1]
    assert block["Original-Recipient"] == "rfc822; B+x@example.org"
    assert block["Final-Recipient"] == "rfc822; b@example.org"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.1.1"
    assert block["Remote-MTA"] == "dns; mx.example.org"
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user"
    assert block["Last-Attempt-Date"] == "Wed, 01 May 2024 12:01:00 +0000"
    assert returned.get_content_type() == "message/rfc822"
    assert b"BODY-TEXT" in note.content


def test_delay_warning_carries_the_retry_deadline(spool: Spool) -> None:
    spool.enqueue("Q1", MSG, "a@example.com", [QueuedRecipientSpec("b@example.org")], now=T0)
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Transient(
        Reply(451, "4.4.1", "Try later"), "mx.example.org", T0 + 99999, warn=True))], T0 + 4 * 3600)
    (due,) = spool.pending_dsns()
    note = notify(due, spool.read_message("Q1"), T0 + 4 * 3600)
    assert note is not None
    _, status, returned = parts_of(note.content)
    groups = messages(status.get_payload())
    assert groups[1]["Action"] == "delayed"
    assert groups[1]["Will-Retry-Until"] == "Mon, 06 May 2024 12:00:00 +0000"
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"BODY-TEXT" not in note.content


def test_success_report_says_relayed(spool: Spool) -> None:
    spool.enqueue("Q1", MSG, "a@example.com",
                  [QueuedRecipientSpec("b@example.org", notify="SUCCESS")], now=T0)
    spool.due(T0)
    spool.record_results("Q1", [("b@example.org", Delivered(Reply(250, "2.0.0", "Ok"), "mx"))],
                         T0 + 1)
    (due,) = spool.pending_dsns()
    note = notify(due, spool.read_message("Q1"), T0 + 1)
    assert note is not None
    groups = messages(parts_of(note.content)[1].get_payload())
    assert (groups[1]["Action"], groups[1]["Status"]) == ("relayed", "2.0.0")


def test_lost_file_still_gets_a_bounce_without_content() -> None:
    message = QueuedMessage("Q1", "a@example.com", None, None, False, False, 10, T0,
                            "smtp", None)
    rcpt = QueuedRecipient(1, "Q1", "b@example.org", "example.org", None, None,
                           RecipientState.BOUNCED, 0, T0, Reply(554, "5.3.0", "lost"), None,
                           T0, False, T0, "failure")
    note = notify(DsnDue(message, "failure", (rcpt,)), None, T0)
    assert note is not None
    assert len(parts_of(note.content)) == 2


def test_utf8_recipient_needs_smtputf8(spool: Spool) -> None:
    spool.enqueue("Q1", MSG, "a@example.com", [QueuedRecipientSpec("jörg@bücher.de")],
                  smtputf8=True, now=T0)
    spool.due(T0)
    spool.record_results("Q1", [("jörg@bücher.de", Permanent(Reply(550, "5.1.1", "no"), None))],
                         T0)
    (due,) = spool.pending_dsns()
    note = notify(due, spool.read_message("Q1"), T0)
    assert note is not None
    assert note.smtputf8 and note.eight_bit
    assert b"message/global-delivery-status" in note.content


def test_no_notification_for_the_null_sender() -> None:
    message = QueuedMessage("Q1", "", None, None, False, False, 10, T0, "bounce", None)
    rcpt = QueuedRecipient(1, "Q1", "b@example.org", "example.org", None, None,
                           RecipientState.BOUNCED, 1, T0, None, None, T0, False, T0, "failure")
    assert notify(DsnDue(message, "failure", (rcpt,)), MSG, T0) is None
