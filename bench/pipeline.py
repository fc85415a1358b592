"""Delivery-pipeline scenarios of `./task bench`: throughput (with worker memory), latency, fan-out,
retry timing, and the two baselines, all against a fast receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from bench import cpu
from bench.common import ROOT, percentile
from devtools.embedded import free_port

BIN = Path(sys.executable).parent
WORKER_PROCESSES = int(os.environ.get("BENCH_WORKER_PROCESSES", "2"))
WORKER_THREADS = int(os.environ.get("BENCH_WORKER_THREADS", "32"))


def spawn(argv: list[str], **env: str) -> subprocess.Popen:
    """A child process; its output goes to $BENCH_LOG when set (to see why a scenario misbehaves)."""
    log = open(os.environ.get("BENCH_LOG", os.devnull), "a")  # noqa: SIM115
    # A process group of its own, so that stopping it reaches a worker's forked children too.
    return subprocess.Popen(
        argv, cwd=ROOT, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(*processes: subprocess.Popen) -> None:
    """Stop a scenario's processes: SIGTERM to each process group, SIGKILL to whatever is left after
    3 s (nothing is measured after a scenario ends, and the next one starts from truncated tables)."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def worker_argv(processes: int, threads: int) -> list[str]:
    """`dramatiq tasks`, as a deployment runs the workers."""
    return [str(BIN / "dramatiq"), "tasks", "--processes", str(processes), "--threads", str(threads)]


@asynccontextmanager
async def receiver(delay_ms: int = 0, keep_arrivals: bool = True):
    """The bench's receiver; with keep_arrivals off it only counts (a long run's arrivals would fill its
    memory), and /_arrivals answers an empty list."""
    port = free_port()
    process = spawn(
        [sys.executable, "-m", "bench.receiver", str(port), str(delay_ms)],
        BENCH_RECEIVER_ARRIVALS="1" if keep_arrivals else "0",
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as control:
        for _ in range(100):
            try:
                await control.get("/_stats")
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        try:
            yield base, control
        finally:
            stop(process)


@asynccontextmanager
async def pipeline(worker_processes: int = WORKER_PROCESSES, groups: int = 1, env: dict[str, str] | None = None):
    """The project's own processes: `groups` copies of a deployment's set, each a scheduler and a
    `dramatiq tasks` with `worker_processes` processes, against the one PostgreSQL and Redis; yields
    (the worker groups, the schedulers). `env` is added to their environment (retention, say)."""
    from app.core import db
    from app.core.redis import get_redis

    # Each scenario starts clean: no backlog of an earlier one may queue ahead of what is measured.
    async with db.connection() as conn:
        await conn.execute("TRUNCATE events, webhook_deliveries, delivery_attempts, webhook_stats_hourly, jobs")
        await conn.execute("UPDATE webhooks SET enabled = false")
        # and with no earlier scenario's dirty pages left for a checkpoint to write during this one
        # (superuser only: on a server where the bench may not, the scenarios just share more)
        with contextlib.suppress(Exception):
            await conn.execute("CHECKPOINT")
    await get_redis().flushdb()
    workers = [spawn(worker_argv(worker_processes, WORKER_THREADS), **(env or {})) for _ in range(groups)]
    schedulers = [spawn([sys.executable, "-m", "tasks.scheduler"], **(env or {})) for _ in range(groups)]
    await asyncio.sleep(3 * groups)  # boot
    try:
        yield workers, schedulers
    finally:
        stop(*schedulers, *workers)


async def organisation(name: str, hooks: int, url: str, policy: dict | None = None):
    from app.accounts import services as accounts
    from app.webhooks import services

    org = await accounts.create_organization(name, name)
    created = []
    for n in range(hooks):
        webhook, _ = await services.create_webhook(
            org.id,
            {
                "name": f"{name} {n}",
                "url": url,
                "event_patterns": ["*"],
                **({"retry_policy": policy} if policy else {}),
            },
        )
        created.append(webhook)
    return org, created


async def publish(org_id, count: int, batch: int = 200) -> list[tuple[str, float]]:
    """Publish `count` events through publish_event(), `batch` per transaction; (event id, commit time)."""
    from app.core import db

    published: list[tuple[str, float]] = []
    async with db.connection() as conn:
        for start in range(0, count, batch):
            size = min(batch, count - start)
            async with conn.transaction():
                ids = await conn.fetch(
                    "SELECT publish_event('job.created', NULL, jsonb_build_object('n', g), NULL, '{}'::jsonb, $1) "
                    "AS id FROM generate_series(1, $2) AS g",
                    org_id,
                    size,
                )
            committed = time.time()
            published.extend((str(row["id"]), committed) for row in ids)
    return published


def rss_mb(processes: list[subprocess.Popen]) -> float:
    """The resident memory of these processes and their children (a worker group), in MiB."""
    import psutil

    try:
        return sum(p.memory_info().rss for p in cpu.tree(*processes)()) / 2**20
    except psutil.Error as error:
        print(f"[bench] could not read worker memory: {error!r}", file=sys.stderr)
        return float("nan")


async def recorded_successes(org_id) -> int:
    from app.core import db

    async with db.connection() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE org_id = $1 AND status = 'success'", org_id
        )


def engine_groups(workers: list[subprocess.Popen], schedulers: list[subprocess.Popen]) -> dict:
    """The processes that deliver, for a CPU split: the project's workers and schedulers, and the servers."""
    return {"workers": cpu.tree(*workers), "scheduler": cpu.tree(*schedulers), **cpu.servers()}


async def throughput(seconds: int, hooks: int = 10, groups: int = 1) -> dict:
    """Events at full speed to `hooks` webhooks for `seconds`: deliveries received and recorded per
    second over the run after a warm-up, CPU per recorded delivery in each process group over that
    window, the workers' memory over time, and how many deliveries arrived more than once. With
    `groups` > 1 that many schedulers and worker groups share the work (the scale-out scenario)."""
    # The same worker processes in all, spread over the groups, as over machines: on one machine's two
    # cores more processes would only measure contention.
    processes = max(1, WORKER_PROCESSES // groups)
    async with receiver() as (base, control), pipeline(processes, groups) as (workers, scheduler):
        org, _ = await organisation("throughput" if groups == 1 else f"scale-out-{groups}", hooks, base + "/hook")
        stop_at = time.monotonic() + seconds
        warm_at = time.monotonic() + min(10, seconds / 4)
        rss: list[float] = []
        published = 0

        async def feed() -> None:
            # Keep a backlog of ~10,000 deliveries, not an unbounded one: what was published minus what
            # arrived (a count over the table would itself load the database being measured).
            nonlocal published
            while time.monotonic() < stop_at:
                if published * hooks - (await control.get("/_stats")).json()["count"] < 10_000:
                    await publish(org.id, 100)
                    published += 100
                else:
                    await asyncio.sleep(0.05)

        async def sample() -> dict:
            meter = cpu.Meter(**engine_groups(workers, scheduler))
            while time.monotonic() < warm_at:
                rss.append(rss_mb(workers))
                await asyncio.sleep(1)
            received0, recorded0, t0 = (
                (await control.get("/_stats")).json()["count"],
                await recorded_successes(org.id),
                time.monotonic(),
            )
            with meter:
                while time.monotonic() < stop_at:
                    rss.append(rss_mb(workers))
                    await asyncio.sleep(1)
                received1, recorded1, t1 = (
                    (await control.get("/_stats")).json()["count"],
                    await recorded_successes(org.id),
                    time.monotonic(),
                )
            span = t1 - t0
            return {
                "received_per_s": round((received1 - received0) / span, 1),
                "recorded_per_s": round((recorded1 - recorded0) / span, 1),
                "cpu_ms_per_delivery": meter.per(recorded1 - recorded0),
                "cpu_core_share_pct": meter.share(span),
                "deliveries_recorded": recorded1,
            }

        _, figures = await asyncio.gather(feed(), sample())
        await _drain(control, published * hooks, timeout=60)
        arrivals = Counter(
            delivery
            for _, delivery, _, _, status, *_ in (await control.get("/_arrivals")).json()
            if 200 <= status < 300
        )
    half = len(rss) // 2
    return {
        "scenario": "throughput" if groups == 1 else f"scale-out ({groups} groups)",
        "groups": groups,
        "duplicates": sum(n - 1 for n in arrivals.values() if n > 1),
        "arrived": len(arrivals),
        "published_deliveries": published * hooks,
        "webhooks": hooks,
        "seconds": seconds,
        "worker_processes": processes * groups,
        "worker_threads": WORKER_THREADS,
        **figures,
        "worker_rss_mb_first_half_max": round(max(rss[:half] or [float("nan")]), 1),
        "worker_rss_mb_second_half_max": round(max(rss[half:] or [float("nan")]), 1),
    }


async def memory(deliveries: int, hooks: int = 10) -> dict:
    """Worker memory while `deliveries` are delivered at full speed: RSS sampled every two seconds; the
    second half of the run must not grow beyond the first."""
    from app.core.redis import get_redis

    async with receiver() as (base, _control), pipeline() as (workers, _schedulers):
        org, _ = await organisation("memory", hooks, base + "/hook")
        rss: list[float] = []
        started = time.monotonic()
        recorded = 0

        async def feed() -> None:
            published = 0
            while published < deliveries // hooks:
                if await get_redis().llen("intime:deliveries") < 5000:
                    await publish(org.id, 100)
                    published += 100
                else:
                    await asyncio.sleep(0.1)

        feeding = asyncio.create_task(feed())
        while recorded < deliveries and time.monotonic() - started < 1800:
            await asyncio.sleep(2)
            rss.append(rss_mb(workers))
            recorded = await recorded_successes(org.id)
        await feeding
    half = len(rss) // 2
    return {
        "scenario": "memory",
        "deliveries": recorded,
        "seconds": round(time.monotonic() - started),
        "worker_rss_mb_first_half_max": round(max(rss[:half] or [float("nan")]), 1),
        "worker_rss_mb_second_half_max": round(max(rss[half:] or [float("nan")]), 1),
    }


async def _backlog(org_id) -> int:
    from app.core import db

    async with db.connection() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE org_id = $1 AND status IN ('pending', 'processing')", org_id
        )


async def latency(rate: int, seconds: int) -> dict:
    """`rate` events/s to one webhook for `seconds`: publish_event commit to arrival at the receiver."""
    async with receiver() as (base, control), pipeline():
        org, _ = await organisation("latency", 1, base + "/hook")
        published: list[tuple[str, float]] = []
        per_tick, tick = max(1, rate // 20), 0.05
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            published += await publish(org.id, per_tick, batch=per_tick)
            await asyncio.sleep(max(0.0, started + tick * (len(published) / per_tick) - time.monotonic()))
        await _drain(control, len(published))
        arrivals = {event: at for event, _, at, *_ in (await control.get("/_arrivals")).json()}
    delays = [(arrivals[event] - committed) * 1000 for event, committed in published if event in arrivals]
    return {
        "scenario": "latency",
        "rate_per_s": rate,
        "seconds": seconds,
        "events": len(published),
        "received": len(delays),
        "p50_ms": round(percentile(delays, 0.5), 1),
        "p95_ms": round(percentile(delays, 0.95), 1),
        "p99_ms": round(percentile(delays, 0.99), 1),
    }


async def _drain(control, expected: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (await control.get("/_stats")).json()["count"] < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def fan_out(hooks: int) -> dict:
    """One event to `hooks` webhooks: the time until the last copy arrives."""
    async with receiver() as (base, control), pipeline():
        org, _ = await organisation("fanout", hooks, base + "/hook")
        [(_, committed)] = await publish(org.id, 1)
        await _drain(control, hooks)
        arrivals = [at for _, _, at, *_ in (await control.get("/_arrivals")).json()]
    return {
        "scenario": "fan-out",
        "webhooks": hooks,
        "received": len(arrivals),
        "all_received_s": round(max(arrivals) - committed, 3) if arrivals else None,
    }


async def retry_timing(retries: int) -> dict:
    """Receivers that fail each delivery once: how late each retry arrives against the time it was
    scheduled for (`next_attempt_at`, read from the database while the run goes on).

    Four events to retries/4 webhooks: a webhook that failed ten times in a row would be disabled
    (by design), so no webhook gets more than four failing deliveries."""
    from app.core import db

    policy = {"strategy": "fixed", "base_delay_ms": 2000, "max_delay_ms": 2000, "max_retries": 3, "jitter": False}
    hooks = max(1, retries // 4)
    scheduled: dict[str, float] = {}
    async with receiver() as (base, control), pipeline():
        org, _ = await organisation("retry", hooks, base + "/fail-first/hook", policy)
        await publish(org.id, 4)
        deadline = time.monotonic() + 120
        while (await control.get("/_stats")).json()["count"] < hooks * 4 and time.monotonic() < deadline:
            async with db.connection() as conn:
                for row in await conn.fetch(
                    "SELECT id, next_attempt_at FROM webhook_deliveries WHERE org_id = $1 AND status = 'failed'", org.id
                ):
                    scheduled.setdefault(str(row["id"]), row["next_attempt_at"].timestamp())
            await asyncio.sleep(0.05)
        arrivals = (await control.get("/_arrivals")).json()
    seen: set[str] = set()
    late = []
    for _, delivery, at, *_ in arrivals:
        if delivery in seen and delivery in scheduled:
            late.append((at - scheduled[delivery]) * 1000)
        seen.add(delivery)
    return {
        "scenario": "retry timing",
        "retries": len(late),
        "scheduled_delay_ms": 2000,
        "lateness_p50_ms": round(percentile(late, 0.5), 1),
        "lateness_p99_ms": round(percentile(late, 0.99), 1),
    }


async def baseline_asyncio(seconds: int, concurrency: int = 64) -> dict:
    """(a) The ceiling: an asyncio loop that POSTs signed bodies, no database, no broker, on the
    fastest client Python has here (aiohttp's own, without httpx above it)."""
    from datetime import UTC, datetime

    import aiohttp

    from app.webhooks.signing import generate_secret, signature_headers

    secret = generate_secret()
    body = json.dumps({"id": "00000000-0000-0000-0000-000000000000", "type": "job.created", "data": {"n": 1}}).encode()
    async with receiver() as (base, control), aiohttp.ClientSession() as session:
        stop_at = time.monotonic() + seconds

        async def loop() -> None:
            while time.monotonic() < stop_at:
                headers = signature_headers("d", "job.created", body, [secret], datetime.now(UTC))
                async with session.post(base + "/hook", data=body, headers=headers) as response:
                    await response.read()

        with cpu.Meter(sender=cpu.tree(os.getpid())) as meter:
            await asyncio.gather(*(loop() for _ in range(concurrency)))
        count = (await control.get("/_stats")).json()["count"]
    return {
        "scenario": "baseline (a) asyncio",
        "seconds": seconds,
        "per_s": round(count / seconds, 1),
        "cpu_ms_per_delivery": meter.per(count),
    }


async def idle(seconds: int) -> dict:
    """The workers and the scheduler running with nothing to do: the share of a core each group uses
    (the workers' figure is for all WORKER_PROCESSES together), and Redis's and PostgreSQL's."""
    async with pipeline() as (workers, scheduler):
        await asyncio.sleep(5)  # past the boot
        with cpu.Meter(**engine_groups(workers, scheduler)) as meter:
            await asyncio.sleep(seconds)
    share = meter.share(seconds)
    return {
        "scenario": "idle",
        "seconds": seconds,
        "worker_processes": WORKER_PROCESSES,
        "cpu_core_share_pct": share,
        "per_worker_process_pct": round(share["workers"] / WORKER_PROCESSES, 2),
    }


async def baseline_dramatiq(seconds: int) -> dict:
    """(b) The honest simple sender (bench/naive_actor.py): a Dramatiq actor signing each body and POSTing
    through one shared, pooled httpx client per process, with the project's worker processes and
    threads; it records nothing. Its queue is kept full for `seconds`; the figures are what arrived per
    second after a warm-up and the CPU its workers and Redis used per arrival (its messages are
    enqueued by this bench process, as the project's events are published by it)."""
    from bench import naive_actor

    async with receiver() as (base, control):
        from app.core.redis import get_redis

        await get_redis().flushdb()
        workers = spawn(
            [
                str(BIN / "dramatiq"),
                "bench.naive_actor",
                "--processes",
                str(WORKER_PROCESSES),
                "--threads",
                str(WORKER_THREADS),
            ],
            BENCH_RECEIVER=base + "/hook",
            BENCH_WORKER_THREADS=str(WORKER_THREADS),
        )
        stop_at = time.monotonic() + seconds + min(5, seconds / 4)

        def feed() -> None:
            sent = 0
            while time.monotonic() < stop_at:
                if naive_actor.waiting() < 5_000:
                    naive_actor.enqueue(1_000, sent)
                    sent += 1_000
                else:
                    time.sleep(0.05)

        try:
            feeding = asyncio.create_task(asyncio.to_thread(feed))
            await asyncio.sleep(min(5, seconds / 4))  # boot and warm up
            meter = cpu.Meter(workers=cpu.tree(workers), redis=cpu.servers()["redis"])
            start_count, started = (await control.get("/_stats")).json()["count"], time.monotonic()
            with meter:
                await asyncio.sleep(max(1.0, stop_at - time.monotonic()))
                count = (await control.get("/_stats")).json()["count"] - start_count
                elapsed = time.monotonic() - started
            await feeding
        finally:
            stop(workers)
    return {
        "scenario": "baseline (b) Dramatiq + shared httpx client",
        "seconds": seconds,
        "worker_processes": WORKER_PROCESSES,
        "worker_threads": WORKER_THREADS,
        "received": count,
        "per_s": round(count / elapsed, 1),
        "cpu_ms_per_delivery": meter.per(count),
    }
