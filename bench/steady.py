"""The "steady state" scenario of `./task bench` (`--only steady`, issue 15): sustained load with pruning.

Events go to 10 webhooks on the receiver at a fixed rate the machine sustains (BENCH_STEADY_RATE
deliveries/s, 800 by default: not a backlog), through the project's own workers and scheduler. Two
phases in one run, each on fresh tables and processes and with the same publisher:
- off: the reference, retention at its defaults (30 days: the pruner runs its passes and finds nothing);
- on: retention of deliveries and events set to `retention` (2 minutes, bodies half that), a pruning
  pass every 2 s.
Every 10 s: rows (count) and bytes (pg_total_relation_size) of webhook_deliveries, delivery_attempts
and events; what arrived and what was recorded (the hourly rollups, which are not pruned here); and 20
sequential requests to each of two pages a user hits, through a web process: the debugger's history
partial and `GET /api/v1/webhooks/{id}/deliveries`.

Figures: deliveries recorded per second in each phase's window (off: after a warm-up; on: its second
half, past retention) and their ratio (target ≥ 0.90), the CPU split per delivery in each window; the
largest max/min of each table's rows and bytes over the second half of on (target ≤ 1.10); each page's
p95 over the last tenth of on against the first tenth (target ≤ 1.10).

Durations: on 15 minutes in the full run, 4 in the quick one (retention 1 minute); off is half of on.
BENCH_STEADY_SECONDS, BENCH_STEADY_OFF_SECONDS and BENCH_STEADY_RETENTION (seconds) override them
(BENCH_STEADY_SECONDS=600 for the issue's 10-minute run).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import httpx

from bench import cpu
from bench.common import percentile, start_web
from bench.pipeline import engine_groups, organisation, pipeline, publish, receiver
from devtools.embedded import free_port

SAMPLE_EVERY = 10.0
PAGE_CALLS = 20
TABLES = ("webhook_deliveries", "delivery_attempts", "events")
PASSWORD = "bench-password"  # noqa: S105 - the bench's own throwaway user
PRUNE_INTERVAL = "2s"
# The reference: an installation's defaults, stated so that no retention in the caller's environment leaks in.
OFF_ENV = {
    "INTIME_RETENTION_DELIVERIES": "30d",
    "INTIME_RETENTION_EVENTS": "30d",
    "INTIME_RETENTION_BODIES": "7d",
    "INTIME_PRUNE_INTERVAL_SECONDS": PRUNE_INTERVAL,
}

SIZES = """
SELECT (SELECT count(*) FROM webhook_deliveries) AS webhook_deliveries_rows,
       pg_total_relation_size('webhook_deliveries') AS webhook_deliveries_bytes,
       (SELECT count(*) FROM delivery_attempts) AS delivery_attempts_rows,
       pg_total_relation_size('delivery_attempts') AS delivery_attempts_bytes,
       (SELECT count(*) FROM events) AS events_rows,
       pg_total_relation_size('events') AS events_bytes
"""


def on_env(retention_s: int) -> dict[str, str]:
    return {
        "INTIME_RETENTION_DELIVERIES": f"{retention_s}s",
        "INTIME_RETENTION_EVENTS": f"{retention_s}s",
        "INTIME_RETENTION_BODIES": f"{max(1, retention_s // 2)}s",
        "INTIME_PRUNE_INTERVAL_SECONDS": PRUNE_INTERVAL,
    }


def durations(quick: bool) -> dict[str, int]:
    """The scenario's arguments for this run (environment overrides, in seconds)."""
    on = int(os.environ.get("BENCH_STEADY_SECONDS") or (240 if quick else 900))
    return {
        "on_seconds": on,
        "off_seconds": int(os.environ.get("BENCH_STEADY_OFF_SECONDS") or on // 2),
        "retention_s": int(os.environ.get("BENCH_STEADY_RETENTION") or (60 if quick else 120)),
        "rate": int(os.environ.get("BENCH_STEADY_RATE") or 800),
    }


async def _login(client: httpx.AsyncClient, email: str) -> None:
    await client.get("/login")
    await client.post(
        "/login", data={"email": email, "password": PASSWORD, "_csrf_token": client.cookies.get("intime_csrf")}
    )


async def _wait_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        for _ in range(150):
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the web process did not come up")


async def _recorded(org_id) -> int:
    """Successes recorded for this organisation, from the hourly rollups (the pruner keeps them 90 days)."""
    from app.core import db

    async with db.connection() as conn:
        return await conn.fetchval(
            "SELECT coalesce(sum(s.successes), 0) FROM webhook_stats_hourly s "
            "JOIN webhooks w ON w.id = s.webhook_id WHERE w.org_id = $1",
            org_id,
        )


async def _removed() -> dict[str, int]:
    from app.core import db

    async with db.connection() as conn:
        rows = await conn.fetch("SELECT kind, total_removed FROM prune_state")
    return {row["kind"]: row["total_removed"] for row in rows}


async def _sizes() -> tuple[dict[str, int], dict[str, int]]:
    from app.core import db

    async with db.connection() as conn:
        row = await conn.fetchrow(SIZES)
    rows = {t: row[f"{t}_rows"] for t in TABLES}
    size = {t: row[f"{t}_bytes"] for t in TABLES}
    rows["total"], size["total"] = sum(rows.values()), sum(size.values())
    return rows, size


async def _pages(client: httpx.AsyncClient, checks: dict, timings: dict[str, list[list[float]]]) -> tuple[dict, int]:
    """PAGE_CALLS sequential requests to each check: the p95 of each, and how many did not answer 200."""
    p95, errors = {}, 0
    for name, (url, headers) in checks.items():
        took = []
        for _ in range(PAGE_CALLS):
            started = time.perf_counter()
            try:
                response = await client.get(url, headers=headers)
                errors += response.status_code != 200
            except httpx.HTTPError:
                errors += 1
            took.append((time.perf_counter() - started) * 1000)
        timings[name].append(took)
        p95[name] = round(percentile(took, 0.95), 1)
    return p95, errors


async def _phase(tag: str, seconds: float, window_from: float, env: dict[str, str], rate: int, hooks: int, web: str):
    """One phase on fresh tables and processes: (its figures, each check's timings per sample)."""
    from app.accounts import services as accounts
    from app.accounts import tokens

    async with receiver(keep_arrivals=False) as (base, control), pipeline(env=env) as (workers, schedulers):
        org, created = await organisation(f"steady-{tag}", hooks, base + "/hook")
        email = f"steady-{tag}@bench.test"
        await accounts.create_user(org, email, PASSWORD, "admin")
        _, token = await tokens.create_token(org, f"steady {tag}", "webhooks:read", rate_limit_per_hour=1_000_000)
        checks = {
            "history partial": (
                f"/employee/admin/integrations/webhooks/{created[0].id}",
                {"HX-Request": "true", "HX-Target": "history"},
            ),
            "API deliveries list": (
                f"/api/v1/webhooks/{created[0].id}/deliveries?limit=50",
                {"authorization": f"Bearer {token}"},
            ),
        }
        removed0 = await _removed()
        stopping = asyncio.Event()
        published = 0  # events; each makes `hooks` deliveries

        async def feed() -> None:
            # On a clock: what is due by now, in small transactions; late ticks catch up.
            nonlocal published
            per_s, began = rate / hooks, time.monotonic()
            while not stopping.is_set():
                due = int((time.monotonic() - began) * per_s) - published
                if due > 0:
                    count = min(due, 200)
                    await publish(org.id, count, batch=count)
                    published += count
                await asyncio.sleep(0.05)

        async def counts() -> tuple[float, int, int, int]:
            received = (await control.get("/_stats")).json()["count"]
            return time.monotonic(), received, await _recorded(org.id), published * hooks

        samples: list[dict] = []
        timings: dict[str, list[list[float]]] = {name: [] for name in checks}
        meter = cpu.Meter(**engine_groups(workers, schedulers))
        errors = 0
        window: tuple | None = None
        async with httpx.AsyncClient(base_url=web, timeout=30) as client:
            await _login(client, email)
            for url, headers in checks.values():  # warm the web process's pool and caches
                await client.get(url, headers=headers)
            started = time.monotonic()
            feeding = asyncio.create_task(feed())
            try:
                tick = 0
                while True:
                    tick += 1
                    wake = min(started + tick * SAMPLE_EVERY, started + seconds)
                    await asyncio.sleep(max(0.0, wake - time.monotonic()))
                    elapsed = time.monotonic() - started
                    if window is None and elapsed >= window_from:
                        window = await counts()
                        meter.__enter__()
                    if elapsed >= seconds - 0.5:
                        break
                    rows, size = await _sizes()
                    _, received, recorded, sent = await counts()
                    p95, failed = await _pages(client, checks, timings)
                    errors += failed
                    sample = {
                        "t": round(elapsed, 1),
                        "rows": rows,
                        "bytes": size,
                        "received": received,
                        "recorded": recorded,
                        "lag": sent - received,
                        "page_p95_ms": p95,
                    }
                    samples.append(sample)
                    print(
                        f"[bench] steady {tag:>3} {elapsed:>5.0f} s  deliveries {rows['webhook_deliveries']:>8,} rows "
                        f"{size['total'] / 2**20:>7.1f} MB in all three  lag {sent - received:>6,}  "
                        + "  ".join(f"{name} p95 {ms} ms" for name, ms in p95.items()),
                        file=sys.stderr,
                        flush=True,
                    )
                end = await counts()
                if window is None:
                    raise RuntimeError(f"steady {tag}: the measured window never opened")
                meter.__exit__(None, None, None)
            finally:
                stopping.set()
                await feeding
        removed1 = await _removed()
    (t0, received0, recorded0, sent0), (t1, received1, recorded1, sent1) = window, end
    span, recorded = t1 - t0, recorded1 - recorded0
    figures = {
        "seconds": round(seconds),
        "window_s": round(span, 1),
        "window_from_s": round(window_from),
        "published_per_s": round((sent1 - sent0) / span, 1),
        "received_per_s": round((received1 - received0) / span, 1),
        "recorded_per_s": round(recorded / span, 1),
        "lag_at_end": sent1 - received1,
        "cpu_ms_per_delivery": meter.per(recorded),
        "cpu_core_share_pct": meter.share(span),
        "page_errors": errors,
        "removed": {kind: n - removed0.get(kind, 0) for kind, n in removed1.items() if n - removed0.get(kind, 0)},
        "env": env,
        "samples": samples,
    }
    return figures, timings


def _flatness(samples: list[dict], since: float) -> dict[str, float]:
    """max/min of each table's rows and bytes in the samples from `since` on."""
    late = [s for s in samples if s["t"] >= since]
    out = {}
    for measure in ("rows", "bytes"):
        for table in (*TABLES, "total"):
            values = [s[measure][table] for s in late]
            low = min(values, default=0)
            out[f"{table} {measure}"] = round(max(values) / low, 3) if low else float("inf")
    return out


def _ends(timings: list[list[float]]) -> tuple[float, float]:
    """p95 of the pooled requests of the first and of the last tenth of the samples (three at least)."""
    n = max(3, len(timings) // 10)
    first = [ms for sample in timings[:n] for ms in sample]
    last = [ms for sample in timings[-n:] for ms in sample]
    return round(percentile(first, 0.95), 1), round(percentile(last, 0.95), 1)


async def steady(on_seconds: int, off_seconds: int, retention_s: int, rate: int, hooks: int = 10) -> dict:
    if on_seconds / 2 < retention_s + 10:
        print(
            f"[bench] steady: the second half of {on_seconds} s starts before retention ({retention_s} s) is reached",
            file=sys.stderr,
            flush=True,
        )
    port = free_port()
    web = start_web(port)
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_up(base)
        warm = min(30.0, off_seconds / 4)
        off, _ = await _phase("off", off_seconds, warm, OFF_ENV, rate, hooks, base)
        on, timings = await _phase("on", on_seconds, on_seconds / 2, on_env(retention_s), rate, hooks, base)
    finally:
        web.terminate()
        web.wait(timeout=10)
    pages = {}
    for name, per_sample in timings.items():
        start, end = _ends(per_sample)
        pages[name] = {"start_p95_ms": start, "end_p95_ms": end, "ratio": round(end / start, 3) if start else None}
    flat = _flatness(on["samples"], on_seconds / 2)
    return {
        "scenario": "steady",
        "rate_per_s": rate,
        "webhooks": hooks,
        "retention_s": retention_s,
        "prune_interval": PRUNE_INTERVAL,
        "on_seconds": on_seconds,
        "off_seconds": off_seconds,
        "off": off,
        "on": on,
        "throughput_ratio": round(on["recorded_per_s"] / off["recorded_per_s"], 3) if off["recorded_per_s"] else 0.0,
        "second_half_max_over_min": flat,
        "worst_flatness": max(flat.values(), default=float("inf")),
        "pages": pages,
    }
