"""The shared backoff and the time readers every domain uses (app.core.backoff, app.core.times)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.core.backoff import Backoff
from app.core.times import as_utc, parse_retry_after, parse_time, parse_time_or_none


def test_backoff_doubles_from_the_first_wait_and_stops_at_the_cap():
    policy = Backoff(first=5, cap=600, jitter=(1.0, 1.0))
    assert [policy.seconds(n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 320, 600]
    assert policy.seconds(10_000) == 600  # no overflow however many failures
    assert policy.ms(2) == 10_000


def test_backoff_jitter_stays_inside_its_band_and_spreads_a_crowd():
    policy = Backoff(first=5, cap=300, jitter=(0.8, 1.0))
    rng = random.Random(7)
    waits = [policy.seconds(3, rng) for _ in range(200)]
    assert all(16 <= wait <= 20 for wait in waits)
    assert len({round(wait, 3) for wait in waits}) > 150  # a crowd that failed together comes back spread out


def test_times_without_a_zone_are_utc_and_bad_ones_are_refused():
    assert parse_time("2026-12-02T10:00") == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert parse_time("2026-12-02T10:00+02:00") == datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    assert parse_time("") is None and parse_time(None) is None
    with pytest.raises(ValueError):
        parse_time("yesterday")
    assert parse_time_or_none("yesterday") is None
    plus_one = timezone(timedelta(hours=1))
    assert as_utc(datetime(2026, 1, 1, 12, tzinfo=plus_one)).tzinfo is plus_one  # an aware time is kept


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 7 ", now) == 7
    assert parse_retry_after("Wed, 02 Dec 2026 10:00:30 GMT", now) == 30
    assert parse_retry_after("Wed, 02 Dec 2026 09:00:00 GMT", now) == 0  # a date in the past: now
    for unreadable in ("", None, "soon", "Tue, 99 Foo 2026", "-5", "1.5"):
        assert parse_retry_after(unreadable, now) is None
