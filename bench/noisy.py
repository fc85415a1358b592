"""The "noisy neighbour" scenario of `./task bench` (`--only noisy`).

Ten organisations, each with one webhook to the receiver on 127.0.0.1, publish events at a steady rate.
The run is done twice in the same bench run, on fresh tables and processes each time:
(a) every endpoint answers at once; (b) organisation 1's endpoint never answers, so each of its sends
waits out the webhook's timeout (and is retried). Measured for the other nine, at the receiver with the
bench's clock: publish_event commit to first 2xx arrival (p50, p99) and deliveries received per second;
over all: `lost` attempts in delivery_attempts and duplicate 2xx arrivals of one (event, webhook).

(a) is the baseline, measured in the same run on the same machine: one tenant's slow endpoint should
cost the others little (the verdict: their p99 in (b) within 2x of (a), and no lost attempt).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from bench.common import percentile
from bench.pipeline import pipeline, publish, receiver

ORGS = 10
TIMEOUT_S = 5
# Retries of the hanging endpoint are real load too: a policy an organisation might well have.
POLICY = {"strategy": "exponential", "base_delay_ms": 1000, "max_delay_ms": 10_000, "max_retries": 5, "jitter": True}


async def _organisations(tag: str, base: str, hanging: bool) -> list[tuple[object, str]]:
    """(organisation id, receiver path) of each; organisation 1 is the first."""
    from app.accounts import services as accounts
    from app.webhooks import services

    out: list[tuple[object, str]] = []
    for n in range(1, ORGS + 1):
        org = await accounts.create_organization(f"noisy-{tag}-{n}", f"Noisy {tag} {n}")
        path = f"/hang/100/org/{n}" if hanging and n == 1 else f"/org/{n}"
        await services.create_webhook(
            org.id,
            {
                "name": f"noisy {n}",
                "url": base + path,
                "event_patterns": ["*"],
                "timeout_seconds": TIMEOUT_S,
                "retry_policy": POLICY,
            },
        )
        out.append((org.id, path))
    return out


async def _lost_attempts(org_ids: list) -> int:
    from app.core import db

    async with db.connection() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM delivery_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id "
            "WHERE d.org_id = ANY($1::uuid[]) AND a.outcome = 'lost'",
            org_ids,
        )


async def _run(tag: str, hanging: bool, rate: int, seconds: float, drain_timeout: float) -> dict:
    async with receiver() as (base, control), pipeline():
        orgs = await _organisations(tag, base, hanging)
        others = orgs[1:]
        published: dict[str, list[tuple[str, float]]] = {path: [] for _, path in orgs}
        tick = 0.1
        per_tick = max(1, round(rate * tick))
        started = time.monotonic()
        ticks = 0
        while time.monotonic() - started < seconds:
            for org_id, path in orgs:
                published[path] += await publish(org_id, per_tick, batch=per_tick)
            ticks += 1
            await asyncio.sleep(max(0.0, started + tick * ticks - time.monotonic()))
        published_s = time.monotonic() - started
        # Wait until the nine have everything (organisation 1's deliveries may never finish: not awaited)
        expected = sum(len(published[path]) for _, path in others)
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            arrivals = (await control.get("/_arrivals")).json()
            nine = {path for _, path in others}
            if sum(1 for _, _, _, path, status in arrivals if path in nine and 200 <= status < 300) >= expected:
                break
            await asyncio.sleep(0.5)
        drained_s = time.monotonic() - started
        lost = await _lost_attempts([org_id for org_id, _ in orgs])
        arrivals = (await control.get("/_arrivals")).json()
    return _figures(published, others, arrivals, lost, published_s, drained_s) | {"hanging": hanging}


def _figures(published, others, arrivals, lost: int, published_s: float, drained_s: float) -> dict:
    first: dict[tuple[str, str], float] = {}
    copies: Counter[tuple[str, str]] = Counter()
    hung = 0
    for event, _delivery, at, path, status in arrivals:
        if 200 <= status < 300:
            copies[(event, path)] += 1
            first[(event, path)] = min(at, first.get((event, path), at))
        elif status == 0:
            hung += 1
    delays, received, last = [], 0, 0.0
    for _, path in others:
        for event, committed in published[path]:
            if (event, path) in first:
                received += 1
                delays.append((first[(event, path)] - committed) * 1000)
                last = max(last, first[(event, path)])
    sent = sum(len(published[path]) for _, path in others)
    span = last - min(committed for _, path in others for _, committed in published[path][:1]) if delays else 0
    return {
        "others_events": sent,
        "others_received": received,
        "others_p50_ms": round(percentile(delays, 0.5), 1),
        "others_p99_ms": round(percentile(delays, 0.99), 1),
        "others_max_ms": round(max(delays, default=float("nan")), 1),
        "others_received_per_s": round(received / span, 1) if span else 0.0,
        "published_s": round(published_s, 1),
        "all_others_received_s": round(drained_s, 1),
        "hung_requests": hung,
        "lost_attempts": lost,
        "duplicate_arrivals": sum(n - 1 for n in copies.values()),
    }


async def noisy_neighbour(rate: int, seconds: float, drain_timeout: float = 180) -> dict:
    quiet = await _run("a", hanging=False, rate=rate, seconds=seconds, drain_timeout=drain_timeout)
    loud = await _run("b", hanging=True, rate=rate, seconds=seconds, drain_timeout=drain_timeout)
    return {
        "scenario": "noisy",
        "organisations": ORGS,
        "rate_per_org_per_s": rate,
        "seconds": seconds,
        "timeout_s": TIMEOUT_S,
        "quiet": quiet,
        "hanging": loud,
    }
