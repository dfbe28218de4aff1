"""When to retry a deferred recipient, when to warn the sender, when to give up.

RFC 5321 §4.5.4.1 asks a sender to retry deferred mail with a delay of at least 30 minutes
and to keep trying for at least 4-5 days before giving up; it also says the interval should
grow for destinations that stay unreachable.  The defaults here are Postfix's:

    minimal_backoff_time  300 s    the first retry comes 5 minutes after the first failure
    maximal_backoff_time  4000 s   the gap stops growing at ~67 minutes
    maximal_queue_lifetime 5 d     then the message is bounced
    delay_warning_time    4 h      one "still trying" notice (Postfix: 0 = off)

Postfix's first retry (5 min) is earlier than RFC 5321's 30 minutes; like Postfix we accept
that, because most temporary failures (greylisting, a busy MX) clear within minutes.

Between those bounds the gap doubles with each attempt (300, 600, 1200, 2400, 4000, ...),
spread by a caller-supplied jitter so that a burst of mail deferred together does not retry
together.  Everything here is pure: times are POSIX seconds passed in, no clock is read.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetrySchedule"]

_DAY = 86400.0
_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Backoff and lifetime settings (seconds).

    `jitter_spread` is the largest fraction by which a backoff is stretched: the caller's
    `jitter` in [0, 1] (for instance `random.random()`) adds up to that fraction, so retries
    are never *earlier* than the nominal backoff.
    """

    minimal_backoff: float = 300.0
    maximal_backoff: float = 4000.0
    max_lifetime: float = 5 * _DAY
    delay_warning_after: float = 4 * _HOUR
    jitter_spread: float = 0.1

    def __post_init__(self) -> None:
        if self.minimal_backoff <= 0:
            raise ValueError("minimal_backoff must be positive")
        if self.maximal_backoff < self.minimal_backoff:
            raise ValueError("maximal_backoff must not be below minimal_backoff")
        if self.max_lifetime <= 0:
            raise ValueError("max_lifetime must be positive")
        if self.delay_warning_after < 0:
            raise ValueError("delay_warning_after must be >= 0 (0 turns warnings off)")
        if not 0 <= self.jitter_spread <= 1:
            raise ValueError("jitter_spread must be within [0, 1]")

    def backoff(self, attempts: int) -> float:
        """The nominal gap after `attempts` failed attempts (0 → retry at once)."""
        if attempts <= 0:
            return 0.0
        # min() before the power would overflow for absurd attempt counts; cap the exponent.
        doubling = self.minimal_backoff * 2.0 ** min(attempts - 1, 64)
        return min(self.maximal_backoff, doubling)

    def expires_at(self, first_seen: float) -> float:
        return first_seen + self.max_lifetime

    def expired(self, first_seen: float, now: float) -> bool:
        """True once the recipient has been queued for `max_lifetime`: bounce it
        (Postfix maximal_queue_lifetime; RFC 5321 §4.5.4.1 "4-5 days")."""
        return now >= self.expires_at(first_seen)

    def next_attempt(self, first_seen: float, attempts: int, now: float,
                     jitter: float = 0.0) -> float | None:
        """When to try again after `attempts` failed attempts, or None when the recipient
        has expired and must be bounced.

        The last retry is pulled in to the expiry time, so a message is bounced when its
        lifetime ends rather than up to one backoff later; the attempt made at that moment
        is the final one (its failure finds `expired()` true).
        """
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")
        if self.expired(first_seen, now):
            return None
        delay = self.backoff(attempts) * (1.0 + jitter * self.jitter_spread)
        return min(now + delay, self.expires_at(first_seen))

    def should_warn(self, first_seen: float, warned: bool, now: float) -> bool:
        """Send the one delay warning (RFC 3464 Action: delayed) for this recipient?

        Once per recipient, only after `delay_warning_after`, never when warnings are off
        (0) and never once the recipient has expired: then it gets a bounce instead.
        """
        if warned or self.delay_warning_after <= 0:
            return False
        if self.expired(first_seen, now):
            return False
        return now - first_seen >= self.delay_warning_after
