"""The entry points inbound mail handling uses: authenticate a received message (SPF, DKIM,
ARC, DMARC → headers and an action) and sign or seal one we send.

Inbound (port 25, end of DATA): SPF, DKIM and ARC run concurrently, DMARC combines them
(RFC 7489 §4.2), and the verdict carries everything the Backend needs: the reply when the
sender's policy says reject (550 5.7.1; RFC 7489 §6.3: rejection "SHOULD occur during the
SMTP transaction"), whether to file the message as junk ("quarantine"), and the header
fields to prepend: one Authentication-Results (RFC 8601) and a Received-SPF (RFC 7208 §9.1).
The forged Authentication-Results fields claiming our hostname are already removed from
`verdict.message` (RFC 8601 §5); verification itself ran on the message as received.

Outbound: `sign_outbound` prepends a DKIM signature per active key of the signing domain;
`seal_forwarded` prepends an ARC set to a message we forward to an outside address.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from kittiwake.dns import DnsSettings, Resolver
from kittiwake.mailauth.arc import ArcOutcome, ArcResult, ArcVerifier, arc_seal
from kittiwake.mailauth.authresults import authentication_results, remove_forged
from kittiwake.mailauth.dkim import DkimResult, DkimVerifier, sign
from kittiwake.mailauth.dkimkeys import DkimKeyError, DkimKeyStore, KeyAlgorithm
from kittiwake.mailauth.dmarc import (
    DmarcEvaluator,
    DmarcOutcome,
    DmarcPolicyOptions,
    Policy,
    from_domains,
    organizational_domain,
)
from kittiwake.mailauth.spf import Lookup, SpfChecker, SpfOutcome, SpfResult, received_spf_header
from kittiwake.smtp.replies import Reply

# Reply catalogue (DESIGN.md "Replies are values"); 5.7.1: delivery not authorized, and
# 5.7.23 "SPF validation failed" (RFC 7372 §3.2).
DMARC_REJECTED = Reply(550, "5.7.1", "Message rejected: it fails the DMARC policy of the "
                                     "sender's domain")
SENDER_DOMAIN_REFUSED = Reply(550, "5.7.1", "Message rejected: mail from this sender's domain "
                                            "is refused here")
SPF_FAILED = Reply(550, "5.7.23", "Message rejected: SPF validation failed")


class Action(enum.Enum):
    ACCEPT = "accept"
    QUARANTINE = "quarantine"  # deliver to the recipient's Junk folder
    REJECT = "reject"  # answer `verdict.reply` at end of DATA


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Inbound authentication settings (the [mailauth] config section)."""

    hostname: str  # our authserv-id and SPF receiver name
    dns: DnsSettings = field(default_factory=DnsSettings)  # for pyspf's own lookups
    spf_timeout: float = 20.0  # RFC 7208 §4.6.4: whole evaluation
    always_accept_from: tuple[str, ...] = ()
    never_accept_from: tuple[str, ...] = ()
    trusted_arc_sealers: tuple[str, ...] = ()
    enforce_dmarc: bool = True  # False: record results, never act on p= (monitoring)
    reject_spf_fail: bool = False  # RFC 7489 §10.1: leave SPF -all to DMARC by default
    verify_arc: bool = True


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    spf: SpfOutcome
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcOutcome
    arc: ArcOutcome
    headers: bytes  # Authentication-Results + Received-SPF, to prepend to `message`
    message: bytes  # as received, minus forged Authentication-Results fields
    action: Action
    reply: Reply | None = None  # the refusal to send when action is REJECT

    @property
    def content(self) -> bytes:
        """What to store or pass on: our header fields, then the cleaned message."""
        return self.headers + self.message

    def summary(self) -> str:
        """key=value text for the per-message log line."""
        dkim = ",".join(f"{r.result.value}:{r.domain}" for r in self.dkim) or "none"
        return (f"spf={self.spf.result.value} dkim={dkim} dmarc={self.dmarc.result.value} "
                f"from_domain={self.dmarc.from_domain or '-'} arc={self.arc.result.value} "
                f"action={self.action.value}")


class InboundAuthenticator:
    """Long-lived: one per server, shared by every session."""

    def __init__(self, settings: AuthSettings, resolver: Resolver, *,
                 rng: Callable[[], float] | None = None, spf_lookup: Lookup | None = None
                 ) -> None:
        self.settings = settings
        self.spf = SpfChecker(settings.dns, receiver=settings.hostname,
                              timeout=settings.spf_timeout, lookup=spf_lookup)
        self.dkim = DkimVerifier(resolver)
        self.arc = ArcVerifier(resolver)
        self.dmarc = DmarcEvaluator(resolver, DmarcPolicyOptions(
            always_accept_from=settings.always_accept_from,
            never_accept_from=settings.never_accept_from,
            trusted_arc_sealers=settings.trusted_arc_sealers), rng=rng or random.random)

    async def authenticate(self, message: bytes, ip: str, helo: str, mail_from: str
                           ) -> AuthVerdict:
        """`mail_from` is the reverse-path without brackets, "" for the null sender."""
        if self.settings.verify_arc:
            spf, dkim, arc = await asyncio.gather(
                self.spf.check(ip, mail_from, helo), self.dkim.verify(message),
                self.arc.verify(message))
        else:
            spf, dkim = await asyncio.gather(self.spf.check(ip, mail_from, helo),
                                             self.dkim.verify(message))
            arc = ArcOutcome(ArcResult.NONE)
        dmarc = await self.dmarc.check(message, spf, dkim, arc)
        action, reply = self._action(spf, dmarc)
        hostname = self.settings.hostname
        headers = (authentication_results(hostname, spf=spf, dkim=dkim, dmarc=dmarc, arc=arc)
                   + received_spf_header(spf, hostname))
        return AuthVerdict(spf=spf, dkim=tuple(dkim), dmarc=dmarc, arc=arc, headers=headers,
                           message=remove_forged(message, hostname), action=action,
                           reply=reply)

    def _action(self, spf: SpfOutcome, dmarc: DmarcOutcome) -> tuple[Action, Reply | None]:
        if dmarc.override == "local_policy" and dmarc.disposition is Policy.REJECT:
            return Action.REJECT, SENDER_DOMAIN_REFUSED
        if self.settings.reject_spf_fail and spf.result is SpfResult.FAIL \
                and dmarc.override != "local_policy":
            return Action.REJECT, SPF_FAILED
        if not self.settings.enforce_dmarc:
            return Action.ACCEPT, None
        if dmarc.disposition is Policy.REJECT:
            domain = dmarc.from_domain
            return Action.REJECT, DMARC_REJECTED.with_text(
                f"Message rejected: it fails the DMARC policy of {domain}")
        if dmarc.disposition is Policy.QUARANTINE:
            return Action.QUARANTINE, None
        return Action.ACCEPT, None


async def authenticate_inbound(message: bytes, ip: str, helo: str, mail_from: str,
                               settings: AuthSettings, resolver: Resolver) -> AuthVerdict:
    """One-off form of `InboundAuthenticator.authenticate`."""
    return await InboundAuthenticator(settings, resolver).authenticate(
        message, ip, helo, mail_from)


def signing_domain(message: bytes, keystore: DkimKeyStore) -> str | None:
    """The domain to sign as: the From domain when we hold active keys for it, else its
    organisational domain (still aligned under DMARC's default relaxed mode, RFC 7489
    §3.1.1: a bounce from MAILER-DAEMON@mx.example.com signed by example.com); None when
    we have keys for neither."""
    for domain in from_domains(message):
        for candidate in dict.fromkeys([domain, organizational_domain(domain)]):
            if keystore.active_keys(candidate):
                return candidate
    return None


def sign_outbound(message: bytes, domain: str | None, keystore: DkimKeyStore) -> bytes:
    """`message` with a DKIM-Signature per active key of `domain` (default: the From
    domain) prepended; unchanged when there is no key. CPU-bound (RSA): on the event loop
    call `await asyncio.to_thread(sign_outbound, …)` or `sign_outbound_async`."""
    d = domain or signing_domain(message, keystore)
    if not d:
        return message
    try:
        keys = keystore.active_keys(d)
    except DkimKeyError:
        return message
    if not keys:
        return message
    return sign(message, d, keys) + message


async def sign_outbound_async(message: bytes, domain: str | None, keystore: DkimKeyStore
                              ) -> bytes:
    return await asyncio.to_thread(sign_outbound, message, domain, keystore)


def seal_forwarded(message: bytes, domain: str, keystore: DkimKeyStore, authserv_id: str
                   ) -> bytes:
    """`message` (which carries our Authentication-Results) with an ARC set prepended,
    sealed by `domain`'s active RSA key (RFC 8617 §5.1); unchanged without such a key."""
    key = keystore.active_key(domain, KeyAlgorithm.RSA)
    if key is None:
        return message
    return arc_seal(message, key, authserv_id.lower()) + message


async def seal_forwarded_async(message: bytes, domain: str, keystore: DkimKeyStore,
                               authserv_id: str) -> bytes:
    return await asyncio.to_thread(seal_forwarded, message, domain, keystore, authserv_id)
