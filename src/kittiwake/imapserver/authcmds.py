"""Commands valid in any state and before login: CAPABILITY, NOOP, LOGOUT, ID, STARTTLS,
LOGIN, AUTHENTICATE; and the account-level ones with no mailbox argument: ENABLE,
NAMESPACE, COMPRESS, GETQUOTA, GETQUOTAROOT, SETQUOTA (RFC 9051 §6.1-§6.3; RFC 2971;
RFC 5161; RFC 4978; RFC 9208).

Authentication goes through `kittiwake.sasl` (the mechanisms SMTP and POP3 use too) and the
server's AuthThrottle: a failure is answered only after the throttle's delay, and a locked
address or account is refused without checking the password.  Password work (argon2id)
runs in a thread.  LOGIN and AUTHENTICATE PLAIN are refused before TLS (RFC 9051 §6.2.3
LOGINDISABLED; RFC 8314 §5).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from kittiwake import sasl
from kittiwake.imap import builders
from kittiwake.imap import commands as c
from kittiwake.imap.events import AuthenticateResponse, ParseError
from kittiwake.imap.response import (
    AUTHENTICATIONFAILED,
    CANNOT,
    COMPRESSIONACTIVE,
    NONEXISTENT,
    NOPERM,
    PRIVACYREQUIRED,
    UNAVAILABLE,
    Continuation,
    Status,
    Tagged,
    Untagged,
    capability,
)
from kittiwake.imapserver.capabilities import mechanisms
from kittiwake.store.addresses import fold
from kittiwake.store.errors import InvalidAddress

if TYPE_CHECKING:
    from kittiwake.imapserver.session import Session

log = logging.getLogger(__name__)

SERVER_ID = {"name": "Kittiwake", "vendor": "Kittiwake", "version": "0.1"}
#: RFC 9208 §3: one quota root per account, named "" (Dovecot does the same).
QUOTA_ROOT = ""


def ok(cmd: c.Command, text: str = "completed") -> Tagged:
    return Tagged(cmd.tag, Status.OK, text)


async def capability_cmd(s: Session, cmd: c.Capability) -> Tagged:
    s.send(builders.capability_data(s.capabilities()))
    return ok(cmd, "CAPABILITY completed")


async def noop(s: Session, cmd: c.Noop | c.Check) -> Tagged:
    if s.selected is not None:
        await s.sync(expunges=True, force=True)
    return ok(cmd, "NOOP completed" if isinstance(cmd, c.Noop) else "CHECK completed")


async def logout(s: Session, cmd: c.Logout) -> Tagged:
    s.send(Untagged(Status.BYE, "Logging out"))
    return ok(cmd, "LOGOUT completed")


async def id_cmd(s: Session, cmd: c.Id) -> Tagged:
    if cmd.params:  # RFC 2971 §3.3: log what the client says it is, not more
        fields = {k.lower(): v for k, v in cmd.params[:8]}
        log.info("event=client_id cid=%s name=\"%s\" version=\"%s\"", s.cid,
                 (fields.get("name") or "-")[:60], (fields.get("version") or "-")[:30])
    s.send(builders.id_data(SERVER_ID))
    return ok(cmd, "ID completed")


async def starttls(s: Session, cmd: c.StartTls) -> None:
    s.send(ok(cmd, "Begin TLS negotiation now"))
    await s.start_tls()
    return None


# --------------------------------------------------------------------------- authentication


def _account(username: str) -> str | None:
    try:
        return fold(username)
    except InvalidAddress:
        return None


def _throttled(s: Session, account: str | None) -> bool:
    return not s.server.throttle.check(s.peer_ip, account, time.monotonic())


async def _failed(s: Session, cmd: c.Command, username: str | None, why: str) -> Tagged:
    delay = s.server.throttle.record_failure(s.peer_ip, username, time.monotonic())
    log.info("event=auth_failed cid=%s peer=%s user=%s reason=\"%s\" delay=%.1f", s.cid,
             s.peer_ip, username or "-", why, delay)
    await asyncio.sleep(delay)
    return Tagged(cmd.tag, Status.NO, "Authentication failed", AUTHENTICATIONFAILED)


def _success(s: Session, cmd: c.Command, account: str) -> Tagged:
    s.server.throttle.record_success(s.peer_ip, account, time.monotonic())
    s.authenticated(account)
    return Tagged(cmd.tag, Status.OK, "Logged in", capability(s.capabilities()))


async def login(s: Session, cmd: c.Login) -> Tagged:
    assert s.conn is not None
    if not s.conn.tls_active:
        return Tagged(cmd.tag, Status.NO, "LOGIN is disabled until TLS is active",
                      PRIVACYREQUIRED)
    account = _account(cmd.username)
    if _throttled(s, account):
        return Tagged(cmd.tag, Status.NO, "Too many failures, try later", UNAVAILABLE)
    ok_ = False
    if account is not None:
        async with s.server.auth_slots:
            ok_ = await asyncio.to_thread(s.server.credentials.verify_password, account,
                                          cmd.password)
    if not ok_ or account is None:
        return await _failed(s, cmd, account, "bad password or user")
    return _success(s, cmd, account)


async def authenticate(s: Session, cmd: c.Authenticate) -> Tagged | None:
    assert s.conn is not None
    name = cmd.mechanism.upper()
    if name not in mechanisms(s.conn.tls_active):
        if name == sasl.PLAIN:
            return Tagged(cmd.tag, Status.NO, "PLAIN needs TLS", PRIVACYREQUIRED)
        return Tagged(cmd.tag, Status.NO, "Unsupported mechanism", CANNOT)
    if _throttled(s, None):
        return Tagged(cmd.tag, Status.NO, "Too many failures, try later", UNAVAILABLE)
    mech = sasl.new_mechanism(name, s.server.credentials, settings=s.server.sasl_settings)
    if mech is None:
        return Tagged(cmd.tag, Status.NO, "Unsupported mechanism", CANNOT)
    data = cmd.initial_response
    while True:
        async with s.server.auth_slots:
            step = await asyncio.to_thread(mech.step, data)
        if isinstance(step, sasl.Failure):
            return await _failed(s, cmd, _account(step.username or "") if step.username
                                 else None, step.reason)
        if isinstance(step, sasl.Success):
            if step.final_data is not None:
                # RFC 9051 §6.2.2: server data with success goes in a last challenge,
                # answered by an empty response.
                reply = await _challenge(s, step.final_data)
                if not isinstance(reply, AuthenticateResponse):
                    return None
                if reply.data:
                    return await _failed(s, cmd, step.authcid, "data after server-final")
            account = _account(step.authcid)
            if account is None:
                return await _failed(s, cmd, None, "authcid is not an address")
            return _success(s, cmd, account)
        reply = await _challenge(s, step.data)
        if not isinstance(reply, AuthenticateResponse):
            return None  # "*" or bad base64: the core's BAD was sent
        data = reply.data


async def _challenge(s: Session, data: bytes) -> AuthenticateResponse | None:
    s.send(Continuation(data=data))
    s.pump_soon()
    await s.flush()
    event = await s.next_input()
    if isinstance(event, ParseError):
        s.send(event.response)
        return None
    return event if isinstance(event, AuthenticateResponse) else None


# --------------------------------------------------------------------------- authenticated


async def enable(s: Session, cmd: c.Enable) -> Tagged:
    assert s.conn is not None
    newly = s.conn.enable(cmd.capabilities)
    if "CONDSTORE" in s.conn.enabled:
        s.condstore = True
    s.send(builders.enabled_data(newly))
    return ok(cmd, "ENABLE completed")


async def namespace(s: Session, cmd: c.Namespace) -> Tagged:
    s.send(builders.namespace_data([("", "/")], None, None, utf8=s.utf8))
    return ok(cmd, "NAMESPACE completed")


async def compress(s: Session, cmd: c.Compress) -> Tagged | None:
    assert s.conn is not None
    if s.conn.compress_active:
        return Tagged(cmd.tag, Status.NO, "Already compressing", COMPRESSIONACTIVE)
    if cmd.mechanism != "DEFLATE" or not s.settings.compress:
        return Tagged(cmd.tag, Status.BAD, "Unknown compression mechanism")
    s.send(ok(cmd, "DEFLATE active"))
    s.start_compress()
    return None


async def _quota_resources(s: Session) -> list[tuple[str, int, int]]:
    assert s.account is not None
    quota = await s.store.quota(s.account)
    if quota.limit_bytes <= 0:
        return []
    # RFC 9208 §5.1: STORAGE is in units of 1024 octets.
    return [("STORAGE", (quota.used_bytes + 1023) // 1024, quota.limit_bytes // 1024)]


async def getquota(s: Session, cmd: c.GetQuota) -> Tagged:
    if cmd.root != QUOTA_ROOT:
        return Tagged(cmd.tag, Status.NO, "No such quota root", NONEXISTENT)
    s.send(builders.quota_data(QUOTA_ROOT, await _quota_resources(s)))
    return ok(cmd, "GETQUOTA completed")


async def getquotaroot(s: Session, cmd: c.GetQuotaRoot) -> Tagged:
    assert s.account is not None
    handle = await s.store.mailbox(s.account, cmd.mailbox)  # NotFound: NO [NONEXISTENT]
    s.send(builders.quotaroot_data(handle.name, [QUOTA_ROOT], utf8=s.utf8))
    s.send(builders.quota_data(QUOTA_ROOT, await _quota_resources(s)))
    return ok(cmd, "GETQUOTAROOT completed")


async def setquota(s: Session, cmd: c.SetQuota) -> Tagged:
    return Tagged(cmd.tag, Status.NO, "Quotas are set by the administrator", NOPERM)
