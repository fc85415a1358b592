"""One jittered, capped exponential backoff for every "try again later" that is not a webhook retry
policy (a policy's maths is the policy's own, `app.webhooks.retry`): background integration calls,
OAuth token refresh, and the breaker's cooldown after repeated trips.

Why jitter: failures come in crowds (a provider goes down for everybody at once); waits that are all
the same bring the whole crowd back in the same second, so each wait is scaled by a random factor.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """`first` seconds after the first failure, times `factor` after each further one, never more than
    `cap`; each wait is then scaled by a random factor from `jitter` (low, high)."""

    first: float
    cap: float
    factor: float = 2.0
    jitter: tuple[float, float] = (0.8, 1.2)

    def base(self, failures: int) -> float:
        """The wait before jitter after `failures` consecutive failures (1 or more)."""
        exponent = min(max(0, failures - 1), 60)  # 2**60 s outgrows any cap; no float overflow
        return min(self.cap, self.first * self.factor**exponent)

    def seconds(self, failures: int, rng: random.Random | None = None) -> float:
        low, high = self.jitter
        return self.base(failures) * (rng or random).uniform(low, high)

    def ms(self, failures: int, rng: random.Random | None = None) -> int:
        return int(self.seconds(failures, rng) * 1000)
