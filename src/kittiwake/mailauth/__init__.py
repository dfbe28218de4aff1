"""Mail authenticity: SPF (RFC 7208), DKIM (RFC 6376, RFC 8463), DMARC (RFC 7489), ARC
(RFC 8617) and Authentication-Results (RFC 8601) — DESIGN.md layer L2.

Each third-party library sits behind one module: pyspf behind `spf`, dkimpy behind `dkim`
and `arc`, publicsuffixlist behind `dmarc`, authres behind `authresults`. `check` holds the
entry points the SMTP Backend uses; the names below are the public API.
"""

from kittiwake.mailauth.arc import ArcOutcome, ArcResult
from kittiwake.mailauth.check import (
    DMARC_REJECTED,
    SENDER_DOMAIN_REFUSED,
    SPF_FAILED,
    Action,
    AuthSettings,
    AuthVerdict,
    InboundAuthenticator,
    authenticate_inbound,
    seal_forwarded,
    seal_forwarded_async,
    sign_outbound,
    sign_outbound_async,
    signing_domain,
)
from kittiwake.mailauth.dkim import DkimResult, DkimStatus
from kittiwake.mailauth.dkimkeys import DkimKey, DkimKeyError, DkimKeyStore, KeyAlgorithm
from kittiwake.mailauth.dmarc import DmarcOutcome, DmarcResult, Policy
from kittiwake.mailauth.spf import SpfOutcome, SpfResult

__all__ = [
    "DMARC_REJECTED",
    "SENDER_DOMAIN_REFUSED",
    "SPF_FAILED",
    "Action",
    "ArcOutcome",
    "ArcResult",
    "AuthSettings",
    "AuthVerdict",
    "DkimKey",
    "DkimKeyError",
    "DkimKeyStore",
    "DkimResult",
    "DkimStatus",
    "DmarcOutcome",
    "DmarcResult",
    "InboundAuthenticator",
    "KeyAlgorithm",
    "Policy",
    "SpfOutcome",
    "SpfResult",
    "authenticate_inbound",
    "seal_forwarded",
    "seal_forwarded_async",
    "sign_outbound",
    "sign_outbound_async",
    "signing_domain",
]
