"""The OAuth refresh backoff is the shared one (app.core.backoff) with the numbers it always had."""

from __future__ import annotations

from app.oauth.refresh import BACKOFF


def test_a_failed_refresh_is_retried_after_5_s_doubling_to_5_minutes_shortened_by_up_to_a_fifth():
    assert [BACKOFF.base(n) for n in (1, 2, 3, 6, 7, 50)] == [5, 10, 20, 160, 300, 300]
    assert BACKOFF.jitter == (0.8, 1.0)
    assert all(0.8 * 300 <= BACKOFF.seconds(9) <= 300 for _ in range(100))
