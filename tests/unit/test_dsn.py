"""RFC 3464 / RFC 6522 delivery status notifications, parsed back with the stdlib `email`."""

from __future__ import annotations

import email
import email.policy
import re
import secrets
from datetime import UTC, datetime, timedelta
from email.message import Message

import pytest

from kittiwake.dsn import (
    Action,
    DsnRecipient,
    bounce_allowed,
    build_dsn,
    decode_orcpt,
    should_notify,
    xtext_decode,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ARRIVAL = NOW - timedelta(hours=5)
ORIGINAL = (b"From: Alice <alice@example.com>\r\n"
            b"To: bob@example.org\r\n"
            b"Subject: lunch\r\n"
            b"Message-ID: <m1@example.com>\r\n"
            b"\r\n"
            b"See you at noon.\r\n"
            b"SECRET-BODY-LINE\r\n")

FAILED = DsnRecipient(
    final_recipient="bob@example.org",
    original_recipient="rfc822;Bob@example.org",
    action="failed",
    status="5.1.1",
    remote_mta="mx.example.org",
    diagnostic="smtp; 550 5.1.1 No such user",
    last_attempt=NOW,
)


def make(**overrides: object) -> bytes:
    args: dict[str, object] = dict(
        reporting_mta="mail.example.com",
        original_envelope_id="QQ314159",
        arrival_date=ARRIVAL,
        original_sender="alice@example.com",
        recipients=[FAILED],
        original_message=ORIGINAL,
        ret=None,
        kind="failure",
        now=NOW,
        postmaster="MAILER-DAEMON@mail.example.com",
        message_id_domain="mail.example.com",
    )
    args.update(overrides)
    return build_dsn(**args)  # type: ignore[arg-type]


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def parts_of(raw: bytes) -> list[Message]:
    return messages(parse(raw).get_payload())


def messages(payload: object) -> list[Message]:
    assert isinstance(payload, list)
    out = [p for p in payload if isinstance(p, Message)]
    assert len(out) == len(payload)
    return out


def text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8")


def status_groups(part: Message) -> list[Message]:
    return messages(part.get_payload())


def boundary_of(raw: bytes) -> bytes:
    m = re.search(rb'boundary="([^"]+)"', raw)
    assert m
    return m.group(1)


# --------------------------------------------------------------------------- structure


def test_failure_report_has_three_parts_in_rfc6522_order() -> None:
    raw = make()
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = parts_of(raw)
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    assert not msg.defects


def test_top_level_header_fields() -> None:
    msg = parse(make())
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@mail.example.com>"
    assert msg["To"] == "alice@example.com"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"] == "Wed, 01 May 2024 12:00:00 +0000"
    assert re.fullmatch(r"<[0-9a-f]{32}@mail\.example\.com>", msg["Message-ID"])
    assert msg["In-Reply-To"] == "<m1@example.com>"
    assert msg["References"] == "<m1@example.com>"


def test_message_ids_are_unique() -> None:
    assert parse(make())["Message-ID"] != parse(make())["Message-ID"]


def test_per_message_and_per_recipient_fields() -> None:
    parts = parts_of(make())
    groups = status_groups(parts[1])
    assert len(groups) == 2
    per_message, rcpt = groups
    assert per_message["Reporting-MTA"] == "dns; mail.example.com"
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert per_message["Arrival-Date"] == "Wed, 01 May 2024 07:00:00 +0000"
    assert rcpt["Original-Recipient"] == "rfc822; Bob@example.org"
    assert rcpt["Final-Recipient"] == "rfc822; bob@example.org"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; mx.example.org"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user"
    assert rcpt["Last-Attempt-Date"] == "Wed, 01 May 2024 12:00:00 +0000"
    assert rcpt["Will-Retry-Until"] is None  # RFC 3464 §2.3.9: only for "delayed"


def test_optional_fields_are_omitted_when_unknown() -> None:
    bare = DsnRecipient(final_recipient="c@example.net", action="failed", status="5.0.0")
    parts = parts_of(make(original_envelope_id=None, recipients=[bare]))
    per_message, rcpt = status_groups(parts[1])
    assert per_message["Original-Envelope-Id"] is None
    assert set(rcpt.keys()) == {"Final-Recipient", "Action", "Status"}


def test_several_recipients_give_several_blocks() -> None:
    other = DsnRecipient(final_recipient="carol@example.net", action="failed", status="5.2.2",
                         diagnostic="smtp; 552 5.2.2 Mailbox full")
    parts = parts_of(make(recipients=[FAILED, other]))
    groups = status_groups(parts[1])
    assert [g["Final-Recipient"] for g in groups[1:]] == [
        "rfc822; bob@example.org", "rfc822; carol@example.net"]


def test_human_part_explains_in_plain_words() -> None:
    parts = parts_of(make())
    text = " ".join(text_of(parts[0]).split())
    assert "This is the mail system at host mail.example.com." in text
    assert "could not be delivered to one or more recipients" in text
    assert "<bob@example.org>: host mx.example.org said: 550 5.1.1 No such user" in text


def test_full_original_is_returned_by_default_for_failures() -> None:
    parts = parts_of(make())
    (inner,) = status_groups(parts[2])  # message/rfc822 parses to a one-item list too
    assert inner["Subject"] == "lunch"
    assert "SECRET-BODY-LINE" in text_of(inner)


# --------------------------------------------------------------------------- RET and size


@pytest.mark.parametrize("ret", ["HDRS", "hdrs"])
def test_ret_hdrs_returns_headers_only(ret: str) -> None:
    raw = make(ret=ret)
    parts = parts_of(raw)
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert "Subject: lunch" in text_of(parts[2])
    assert b"SECRET-BODY-LINE" not in raw


def test_ret_full_returns_everything() -> None:
    assert b"SECRET-BODY-LINE" in make(ret="FULL")


@pytest.mark.parametrize("kind", ["delay", "success"])
@pytest.mark.parametrize("ret", [None, "FULL", "HDRS"])
def test_delay_and_success_reports_return_headers_only(kind: str, ret: str | None) -> None:
    # RFC 3461 §4.3: RET applies to failure reports only.
    action: Action = "delayed" if kind == "delay" else "relayed"
    status = "4.4.1" if kind == "delay" else "2.0.0"
    rcpt = DsnRecipient(final_recipient="bob@example.org", action=action, status=status)
    raw = make(kind=kind, ret=ret, recipients=[rcpt])
    parts = parts_of(raw)
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert b"SECRET-BODY-LINE" not in raw


def test_large_original_is_cut_to_its_headers() -> None:
    big = ORIGINAL + b"x" * 2000 + b"\r\n"
    raw = make(original_message=big, max_original_size=1000)
    parts = parts_of(raw)
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert b"x" * 100 not in raw
    assert "too large to return in full" in " ".join(text_of(parts[0]).split())


def test_original_exactly_at_the_limit_is_returned_whole() -> None:
    raw = make(max_original_size=len(ORIGINAL))
    assert b"SECRET-BODY-LINE" in raw


def test_header_larger_than_the_limit_returns_nothing() -> None:
    parts = parts_of(make(max_original_size=10))
    assert len(parts) == 2
    assert "too large to return" in text_of(parts[0])


def test_empty_original_returns_nothing() -> None:
    parts = parts_of(make(original_message=b""))
    assert len(parts) == 2


def test_lf_only_original_is_returned_with_crlf() -> None:
    raw = make(original_message=ORIGINAL.replace(b"\r\n", b"\n"))
    assert re.search(rb"(?<!\r)\n", raw) is None
    assert b"SECRET-BODY-LINE\r\n" in raw


# --------------------------------------------------------------------------- delay / success


def test_delay_report_says_warning_and_retry_deadline() -> None:
    until = ARRIVAL + timedelta(days=5)
    rcpt = DsnRecipient(final_recipient="bob@example.org", action="delayed", status="4.4.1",
                        diagnostic="smtp; 451 4.4.1 Try later", remote_mta="mx.example.org",
                        last_attempt=NOW, will_retry_until=until)
    raw = make(kind="delay", recipients=[rcpt])
    msg = parse(raw)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    parts = parts_of(raw)
    text = text_of(parts[0])
    assert "THIS IS A WARNING ONLY" in text
    assert "5.0 hours" in text
    block = status_groups(parts[1])[1]
    assert block["Action"] == "delayed"
    assert block["Will-Retry-Until"] == "Mon, 06 May 2024 07:00:00 +0000"


def test_success_report() -> None:
    rcpt = DsnRecipient(final_recipient="bob@example.org", action="relayed", status="2.0.0",
                        remote_mta="mx.example.org", diagnostic="smtp; 250 2.0.0 Ok")
    raw = make(kind="success", recipients=[rcpt])
    assert parse(raw)["Subject"] == "Successful Mail Delivery Report"
    parts = parts_of(raw)
    assert "successfully delivered" in text_of(parts[0])
    assert status_groups(parts[1])[1]["Action"] == "relayed"


# --------------------------------------------------------------------------- UTF-8 (RFC 6533)


def test_non_ascii_recipient_uses_global_delivery_status() -> None:
    rcpt = DsnRecipient(final_recipient="用户@例子.广告", original_recipient="utf-8;用户@例子.广告",
                        action="failed", status="5.1.1")
    raw = make(recipients=[rcpt])
    msg = email.message_from_bytes(raw, policy=email.policy.SMTPUTF8)
    parts = list(msg.iter_parts())
    assert parts[1].get_content_type() == "message/global-delivery-status"
    assert parts[1]["Content-Transfer-Encoding"] == "8bit"
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert "Final-Recipient: utf-8; 用户@例子.广告".encode() in raw
    assert "Original-Recipient: utf-8; 用户@例子.广告".encode() in raw
    assert "<用户@例子.广告>".encode() in parts[0].get_content().encode()


def test_ascii_report_stays_7bit_and_plain_delivery_status() -> None:
    raw = make()
    assert raw.isascii()
    assert b"Content-Transfer-Encoding" not in raw
    assert b"message/delivery-status" in raw


def test_utf8_original_header_is_returned_as_message_global() -> None:
    original = "From: Zoë <zoe@example.com>\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
    raw = make(original_message=original)
    assert b"Content-Type: message/global\r\nContent-Transfer-Encoding: 8bit" in raw
    raw = make(original_message=original, ret="HDRS")
    assert b"Content-Type: message/global-headers" in raw


def test_non_ascii_rfc822_original_recipient_is_relabelled_utf8() -> None:
    rcpt = DsnRecipient(final_recipient="x@example.org", original_recipient="rfc822;jörg@example.org",
                        action="failed", status="5.1.1")
    assert "Original-Recipient: utf-8; jörg@example.org".encode() in make(recipients=[rcpt])


# --------------------------------------------------------------------------- MIME hygiene


def test_crlf_everywhere_and_no_overlong_lines() -> None:
    long_diag = "smtp; 550 5.7.1 " + " ".join(["policy"] * 60)
    rcpt = DsnRecipient(final_recipient="bob@example.org", action="failed", status="5.7.1",
                        diagnostic=long_diag)
    raw = make(recipients=[rcpt])
    assert re.search(rb"(?<!\r)\n", raw) is None
    assert re.search(rb"\r(?!\n)", raw) is None
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    parts = parts_of(raw)
    block = status_groups(parts[1])[1]
    # Folding keeps the value: unfolding gives it back.
    assert re.sub(r"\r?\n", "", block["Diagnostic-Code"]) == long_diag


def test_peer_text_cannot_inject_header_fields() -> None:
    rcpt = DsnRecipient(final_recipient="bob@example.org", action="failed", status="5.0.0",
                        diagnostic="smtp; 550 nope\r\nX-Injected: yes",
                        remote_mta="evil\r\nX-Also: yes")
    raw = make(recipients=[rcpt], original_envelope_id="id\r\nX-Env: yes")
    assert not re.search(rb"\r\nX-(Injected|Also|Env):", raw)


def test_boundary_never_occurs_in_content(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter(["a" * 24, "b" * 24])
    real = secrets.token_hex

    def fake(n: int | None = None) -> str:
        return next(tokens) if n == 12 else real(n)

    monkeypatch.setattr(secrets, "token_hex", fake)
    original = ORIGINAL + b"--=_kittiwake_" + b"a" * 24 + b"\r\n"
    raw = make(original_message=original)
    assert boundary_of(raw) == b"=_kittiwake_" + b"b" * 24
    assert len(parts_of(raw)) == 3


def test_boundary_delimits_exactly_the_parts() -> None:
    raw = make()
    b = boundary_of(raw)
    assert raw.count(b"\r\n--" + b + b"\r\n") == 3
    assert raw.endswith(b"\r\n--" + b + b"--\r\n")


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("sender", ["", "<>", " ", None])
def test_no_dsn_to_the_null_sender(sender: str | None) -> None:
    assert not bounce_allowed(sender)
    with pytest.raises(ValueError):
        make(original_sender=sender)


@pytest.mark.parametrize("sender", ["a@example.com", "<a@example.com>", "postmaster"])
def test_bounce_allowed_for_real_senders(sender: str) -> None:
    assert bounce_allowed(sender)


def test_no_recipients_is_an_error() -> None:
    with pytest.raises(ValueError):
        make(recipients=[])


@pytest.mark.parametrize("field,value", [
    ("kind", "bounce"), ("ret", "BODY"), ("reporting_mta", "bad host"),
    ("message_id_domain", "x>y"), ("postmaster", "MAILER-DAEMON"),
])
def test_bad_arguments_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError):
        make(**{field: value})


@pytest.mark.parametrize("kwargs", [
    {"action": "bounced", "status": "5.0.0"},
    {"action": "failed", "status": "550"},
    {"action": "failed", "status": "3.1.1"},
    {"action": "failed", "status": "5.1"},
])
def test_recipient_validation(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        DsnRecipient(final_recipient="a@b", **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- NOTIFY


@pytest.mark.parametrize("notify,failure,delay,success", [
    (None, True, True, False),  # our default (RFC 3461 §4.1 leaves it to us)
    ("NEVER", False, False, False),
    ("never", False, False, False),
    ("SUCCESS", False, False, True),
    ("FAILURE", True, False, False),
    ("DELAY", False, True, False),
    ("SUCCESS,FAILURE", True, False, True),
    ("FAILURE,DELAY", True, True, False),
    ("success,failure,delay", True, True, True),
    ("SUCCESS, DELAY", False, True, True),
])
def test_notify_semantics(notify: str | None, failure: bool, delay: bool, success: bool) -> None:
    assert should_notify("failure", notify) is failure
    assert should_notify("delay", notify) is delay
    assert should_notify("success", notify) is success


def test_notify_unknown_kind() -> None:
    with pytest.raises(ValueError):
        should_notify("bounce", None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- xtext


@pytest.mark.parametrize("encoded,decoded", [
    ("plain", "plain"),
    ("a+2Bb", "a+b"),
    ("x+3Dy", "x=y"),
    ("+2B+2B", "++"),
    ("caf+C3+A9", "café"),
    ("trailing+", "trailing+"),
])
def test_xtext_decode(encoded: str, decoded: str) -> None:
    assert xtext_decode(encoded) == decoded


@pytest.mark.parametrize("orcpt,expected", [
    ("rfc822;bob+2Bx@example.org", ("rfc822", "bob+x@example.org")),
    ("RFC822;bob@example.org", ("RFC822", "bob@example.org")),
    ("utf-8;j\\x{F6}rg@example.org", ("utf-8", "jörg@example.org")),
    ("utf-8;用户@例子.广告", ("utf-8", "用户@例子.广告")),
    ("bob@example.org", ("rfc822", "bob@example.org")),
])
def test_decode_orcpt(orcpt: str, expected: tuple[str, str]) -> None:
    assert decode_orcpt(orcpt) == expected


@pytest.mark.parametrize("host", ["[192.0.2.1]", "[IPv6:2001:db8::1]", "mx.example.com."])
def test_reporting_mta_may_be_an_address_literal(host: str) -> None:
    parts = parts_of(make(reporting_mta=host))
    assert status_groups(parts[1])[0]["Reporting-MTA"] == f"dns; {host.rstrip('.')}"
