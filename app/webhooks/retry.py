"""Retry policies: the shape in CONTRACT, validation with a message per field, and the schedule.

Delay before retry n (n = 1 after the first failed attempt): exponential `base * 2^(n-1)`, linear
`base * n`, fixed `base`; capped at `max_delay_ms`; with jitter multiplied by a factor drawn from
0.5-1.0, so endpoints that failed together do not all get retried in the same instant. A receiver's
`Retry-After` is honoured (never retried sooner), still capped at the policy's maximum.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

STRATEGIES = ("exponential", "linear", "fixed")
MAX_RETRIES_LIMIT = 50
MAX_DELAY_LIMIT_MS = 7 * 24 * 3600 * 1000  # a week: beyond it an event is history, not news


@dataclass(frozen=True)
class Policy:
    strategy: str = "exponential"
    base_delay_ms: int = 10_000
    max_delay_ms: int = 7_200_000
    max_retries: int = 12
    jitter: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Ten seconds doubling up to two hours, twelve retries: about 3.5-7 hours of trying before the DLQ,
# enough to ride out a deploy or a night-time outage of a receiver.
DEFAULT_POLICY = Policy()


class PolicyError(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "on", "1", "yes", "false", "off", "0", "no", ""):
        return value.lower() in ("true", "on", "1", "yes")
    return None


def parse_policy(data: Any) -> Policy:
    """Accept CONTRACT's JSON (or a form's strings); refuse impossible values with a message per field."""
    if not isinstance(data, dict):
        raise PolicyError(
            {"retry_policy": "must be an object with strategy, base_delay_ms, max_delay_ms, max_retries and jitter"}
        )
    errors: dict[str, str] = {}
    unknown = sorted(set(data) - set(Policy.__dataclass_fields__))
    if unknown:
        errors["retry_policy"] = f"unknown field {', '.join(unknown)}"
    strategy = data.get("strategy", DEFAULT_POLICY.strategy)
    if strategy not in STRATEGIES:
        errors["strategy"] = f"is one of {', '.join(STRATEGIES)}"
    values: dict[str, int] = {}
    for field in ("base_delay_ms", "max_delay_ms", "max_retries"):
        raw = data.get(field, getattr(DEFAULT_POLICY, field))
        number = _as_int(raw)
        if number is None:
            errors[field] = "must be a whole number"
        elif number < 0:
            errors[field] = "cannot be negative"
        else:
            values[field] = number
    if "base_delay_ms" in values and values["base_delay_ms"] > MAX_DELAY_LIMIT_MS:
        errors["base_delay_ms"] = "is at most 7 days (604800000 ms)"
    if "max_delay_ms" in values:
        if values["max_delay_ms"] > MAX_DELAY_LIMIT_MS:
            errors["max_delay_ms"] = "is at most 7 days (604800000 ms)"
        elif "base_delay_ms" in values and values["max_delay_ms"] < values["base_delay_ms"]:
            errors["max_delay_ms"] = "cannot be less than the base delay"
    if "max_retries" in values and values["max_retries"] > MAX_RETRIES_LIMIT:
        errors["max_retries"] = f"is at most {MAX_RETRIES_LIMIT}"
    jitter = _as_bool(data.get("jitter", DEFAULT_POLICY.jitter))
    if jitter is None:
        errors["jitter"] = "must be true or false"
    if errors:
        raise PolicyError(errors)
    return Policy(strategy=strategy, jitter=bool(jitter), **values)


def base_delay_ms(policy: Policy, retry_number: int) -> int:
    """The delay before retry `retry_number` (1-based) without jitter, capped at the maximum."""
    if policy.strategy == "exponential":
        # Cap the exponent so a large retry number cannot build a huge integer.
        raw = policy.base_delay_ms * (2 ** min(retry_number - 1, 62))
    elif policy.strategy == "linear":
        raw = policy.base_delay_ms * retry_number
    else:
        raw = policy.base_delay_ms
    return min(raw, policy.max_delay_ms)


def delay_ms(policy: Policy, retry_number: int, rng: random.Random | None = None) -> int:
    delay = base_delay_ms(policy, retry_number)
    if policy.jitter:
        delay = int(delay * (rng or random).uniform(0.5, 1.0))
    return delay


def next_delay_ms(
    policy: Policy, attempts_made: int, retry_after_ms: int | None = None, rng: random.Random | None = None
) -> int | None:
    """After `attempts_made` scheduled attempts all failed: the delay before the next one, or None
    when the policy says stop (the delivery goes to the DLQ)."""
    retry_number = attempts_made  # the first attempt is not a retry
    if retry_number > policy.max_retries:
        return None
    delay = delay_ms(policy, retry_number, rng)
    if retry_after_ms is not None:
        delay = max(delay, min(retry_after_ms, policy.max_delay_ms))
    return delay


def schedule(policy: Policy) -> list[dict[str, int]]:
    """Each retry's delay range and the cumulative time since the first attempt: the page's preview."""
    rows = []
    low_total = high_total = 0
    for n in range(1, policy.max_retries + 1):
        high = base_delay_ms(policy, n)
        low = high // 2 if policy.jitter else high
        low_total += low
        high_total += high
        rows.append({"retry": n, "min_ms": low, "max_ms": high, "total_min_ms": low_total, "total_max_ms": high_total})
    return rows


def human_ms(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 1:
        return f"{ms} ms"
    if seconds < 90:
        return f"{seconds:.3g} s"
    if seconds < 5400:
        return f"{seconds / 60:.3g} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} d"
