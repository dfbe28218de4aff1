"""RetrySchedule: Postfix-like backoff, lifetime and delay warnings (pure, table-driven)."""

from __future__ import annotations

import pytest

from kittiwake.queue.schedule import RetrySchedule

DAY = 86400.0
HOUR = 3600.0
T0 = 1_700_000_000.0
S = RetrySchedule()


def test_defaults_are_postfix_defaults() -> None:
    assert S.minimal_backoff == 300
    assert S.maximal_backoff == 4000
    assert S.max_lifetime == 5 * DAY
    assert S.delay_warning_after == 4 * HOUR


@pytest.mark.parametrize("attempts,backoff", [
    (0, 0), (1, 300), (2, 600), (3, 1200), (4, 2400), (5, 4000), (6, 4000), (100, 4000),
    (10_000, 4000),
])
def test_backoff_doubles_up_to_the_maximum(attempts: int, backoff: float) -> None:
    assert S.backoff(attempts) == backoff


@pytest.mark.parametrize("attempts,now,expected", [
    (0, T0, T0),  # never tried: now
    (1, T0 + 10, T0 + 10 + 300),
    (2, T0 + 400, T0 + 400 + 600),
    (5, T0 + HOUR, T0 + HOUR + 4000),
    (20, T0 + 2 * DAY, T0 + 2 * DAY + 4000),
])
def test_next_attempt_without_jitter(attempts: int, now: float, expected: float) -> None:
    assert S.next_attempt(T0, attempts, now) == expected


@pytest.mark.parametrize("jitter,expected", [(0.0, 600.0), (0.5, 630.0), (1.0, 660.0)])
def test_jitter_only_ever_delays(jitter: float, expected: float) -> None:
    assert S.next_attempt(T0, 2, T0, jitter) == pytest.approx(T0 + expected)


@pytest.mark.parametrize("jitter", [-0.1, 1.5])
def test_jitter_out_of_range(jitter: float) -> None:
    with pytest.raises(ValueError):
        S.next_attempt(T0, 1, T0, jitter)


def test_last_retry_is_pulled_in_to_the_expiry() -> None:
    now = T0 + 5 * DAY - 100
    assert S.next_attempt(T0, 30, now) == T0 + 5 * DAY


@pytest.mark.parametrize("now", [T0 + 5 * DAY, T0 + 5 * DAY + 1, T0 + 30 * DAY])
def test_expired_recipient_gets_no_next_attempt(now: float) -> None:
    assert S.expired(T0, now)
    assert S.next_attempt(T0, 30, now) is None


@pytest.mark.parametrize("now,expired", [
    (T0, False), (T0 + 5 * DAY - 1, False), (T0 + 5 * DAY, True),
])
def test_expired(now: float, expired: bool) -> None:
    assert S.expired(T0, now) is expired


@pytest.mark.parametrize("schedule,warned,age,expected", [
    (S, False, 0, False),
    (S, False, 4 * HOUR - 1, False),
    (S, False, 4 * HOUR, True),
    (S, False, 2 * DAY, True),
    (S, True, 2 * DAY, False),  # only one warning per recipient
    (S, False, 5 * DAY, False),  # expired: a bounce, not a warning
    (RetrySchedule(delay_warning_after=0), False, 2 * DAY, False),  # 0 = off
    (RetrySchedule(delay_warning_after=60), False, 61, True),
])
def test_should_warn(schedule: RetrySchedule, warned: bool, age: float, expected: bool) -> None:
    assert schedule.should_warn(T0, warned, T0 + age) is expected


def test_whole_life_of_a_deferred_recipient() -> None:
    """Retry until the lifetime ends, then bounce; the gaps never shrink."""
    now, attempts, gaps = T0, 0, []
    while True:
        nxt = S.next_attempt(T0, attempts, now)
        if nxt is None:
            break
        gaps.append(nxt - now)
        now, attempts = nxt, attempts + 1
    assert now == T0 + 5 * DAY
    assert gaps[:6] == [0, 300, 600, 1200, 2400, 4000]
    assert all(g <= 4000 for g in gaps)
    assert 100 < attempts < 120  # ~5 days at 4000 s


@pytest.mark.parametrize("kwargs", [
    {"minimal_backoff": 0},
    {"minimal_backoff": 500, "maximal_backoff": 400},
    {"max_lifetime": 0},
    {"delay_warning_after": -1},
    {"jitter_spread": 2},
])
def test_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetrySchedule(**kwargs)
