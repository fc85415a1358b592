"""`./task chaos`: publish events to four webhooks while faults hit every part of the pipeline in turn,
then prove that nothing was lost.

Three webhooks point at a receiver that answers (in 100 ms); the fourth at an endpoint that hangs past
its webhook's timeout for a share of requests (HANG_PERCENT). Two worker process groups share the
queues, as two machines would: the one the faults kill, and one whose wall clock runs SKEW_S ahead
(libfaketime, devtools.skew), which is never killed.

The faults, in order: SIGKILL the worker in the middle of sends (a supervisor starts a new one a second
later); restart Redis with its data wiped (every queued and delayed message gone); the receiver answers
500 for a while and then recovers; SIGKILL the scheduler (restarted two seconds later); crash-restart
PostgreSQL (immediate stop, WAL recovery). Afterwards:

- every (event, webhook) pair was received (a 2xx answer) at least once: zero lost;
- duplicates are counted, and each carries the same `webhook-id` as its first copy;
- no delivery is left `processing` (or pending, or waiting for a retry);
- the DLQ holds only what the retry policy says: with the policy used here, which outlasts the outage,
  nothing;
- the hanging endpoint's deliveries have true histories (bench.chaos_verify: attempts 1..n, no more
  timeouts on record than hung requests, a `lost` attempt only where a worker was killed).

It runs on its own PostgreSQL and Redis under `.data/chaos/` (or `--data-dir`), because it restarts
them; DATABASE_URL and REDIS_URL are ignored. `--small` is the version the test suite runs.
Exit status 0 when every check holds, 1 otherwise; the figures go to stdout and, as JSON, to
bench/results/<date>-chaos.json (not with --small).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import pipeline
from bench.chaos_verify import Report, connect, verify
from bench.common import ROOT
from devtools.skew import skewed_env

HOOKS = 3  # webhooks to the answering receiver; one more goes to the hanging endpoint
HANG_PERCENT = 20  # of the requests to the fourth webhook, answered never (it times out at 2 s)
SKEW_S = 5.0  # the second worker's clock runs this far ahead
RECEIVER_DELAY_MS = 100  # each answer takes this long, so that a fault finds sends in flight
# Outlasts the outage: 12 retries, 0.25 s doubling to at most 4 s, is about 35 s of trying.
POLICY = {"strategy": "exponential", "base_delay_ms": 250, "max_delay_ms": 4000, "max_retries": 12, "jitter": True}


@dataclass
class Plan:
    events: int
    rate: float  # events published per second
    faults: list[tuple[float, str]]  # (seconds after publishing starts, fault)
    outage_s: float
    drain_timeout_s: float
    worker_processes: int = 2
    worker_threads: int = 8


FULL = Plan(
    events=5000,
    rate=60,
    faults=[
        (8, "kill worker"),
        (22, "wipe Redis"),
        (34, "receiver outage"),
        (62, "kill scheduler"),
        (72, "restart PostgreSQL"),
    ],
    outage_s=20,
    drain_timeout_s=240,
)
SMALL = Plan(
    events=300,
    rate=30,
    faults=[
        (1.5, "kill worker"),
        (3.5, "wipe Redis"),
        (5.0, "receiver outage"),
        (8.5, "kill scheduler"),
        (10.0, "restart PostgreSQL"),
    ],
    outage_s=3,
    drain_timeout_s=150,
    worker_processes=1,
    worker_threads=8,
)


class Processes:
    """The project's processes, as a supervisor (systemd, Kubernetes) would run them: started with
    bench.pipeline's spawn (its environment and $BENCH_LOG are the run's), killed at will."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.worker: subprocess.Popen | None = None
        self.scheduler: subprocess.Popen | None = None
        self.skewed: subprocess.Popen | None = None
        # Wall-clock times of the crashes that may lose an attempt's outcome: the worker's kill, and the
        # database's (a send in flight then cannot record, and the worker's asynchronous commit may
        # forget a claim it was told had committed).
        self.kills: list[float] = []

    def start_worker(self) -> None:
        self.worker = pipeline.spawn(pipeline.worker_argv(self.plan.worker_processes, self.plan.worker_threads))

    def start_skewed_worker(self) -> None:
        """One worker process whose clock is SKEW_S off, beside the others, for the whole run."""
        self.skewed = pipeline.spawn(pipeline.worker_argv(1, self.plan.worker_threads), **skewed_env(SKEW_S))

    def start_scheduler(self) -> None:
        self.scheduler = pipeline.spawn([sys.executable, "-m", "tasks.scheduler"])

    @staticmethod
    def kill(process: subprocess.Popen | None) -> None:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop_all(self) -> None:
        pipeline.stop(*(p for p in (self.scheduler, self.worker, self.skewed) if p is not None))


async def publish(url: str, org_id, plan: Plan, stop: asyncio.Event) -> int:
    """`plan.events` events at `plan.rate` per second, a few per transaction, riding out restarts.
    Returns how many commits were confirmed (the database, not this count, is the ground truth: a
    commit whose answer was lost may or may not have happened)."""
    import asyncpg

    confirmed, tick = 0, 0.1
    per_tick = max(1, round(plan.rate * tick))
    started = time.monotonic()
    conn = await connect(url)
    while confirmed < plan.events and not stop.is_set():
        size = min(per_tick, plan.events - confirmed)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT publish_event('job.created', NULL, jsonb_build_object('n', g), NULL, '{}'::jsonb, $1) "
                    "FROM generate_series(1, $2) AS g",
                    org_id,
                    size,
                )
            confirmed += size
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn = await connect(url)
            continue
        await asyncio.sleep(max(0.0, started + tick * (confirmed / per_tick) - time.monotonic()))
    await conn.close()
    return confirmed


async def counts(url: str, org_id) -> dict[str, int]:
    conn = await connect(url)
    try:
        rows = await conn.fetch(
            "SELECT status, count(*) AS n FROM webhook_deliveries WHERE org_id = $1 GROUP BY status", org_id
        )
        backlog = await conn.fetchval("SELECT count(*) FROM events WHERE org_id = $1 AND fanned_out_at IS NULL", org_id)
    finally:
        await conn.close()
    found = {row["status"]: row["n"] for row in rows}
    found["not fanned out"] = backlog
    return found


async def inject(fault: str, data_dir: Path, processes: Processes, control, plan: Plan, url: str, org_id) -> str:
    from devtools import embedded

    if fault == "kill worker":
        deadline, in_flight = time.monotonic() + 5, 0
        while not in_flight and time.monotonic() < deadline:  # strike while sends are in flight
            in_flight = (await counts(url, org_id)).get("processing", 0)
        processes.kills.append(time.time())
        processes.kill(processes.worker)
        await asyncio.sleep(1)
        processes.start_worker()
        return f"SIGKILL with {in_flight} deliveries in flight; a new worker 1 s later"
    if fault == "wipe Redis":
        await asyncio.to_thread(embedded.restart_redis, data_dir)
        return "restarted empty: every queued and delayed message gone"
    if fault == "receiver outage":
        await control.post(f"/_fail/{plan.outage_s}")
        return f"every request answered 500 for {plan.outage_s:g} s"
    if fault == "kill scheduler":
        processes.kill(processes.scheduler)
        await asyncio.sleep(2)
        processes.start_scheduler()
        return "SIGKILL; a new scheduler 2 s later"
    if fault == "restart PostgreSQL":
        processes.kills.append(time.time())
        started = time.monotonic()
        await asyncio.to_thread(embedded.restart_postgres, data_dir)
        return f"immediate stop and crash recovery, back after {time.monotonic() - started:.1f} s"
    raise ValueError(fault)


async def run(plan: Plan, data_dir: Path) -> Report:
    import httpx

    from bench.pipeline import receiver
    from devtools import embedded

    report = Report()
    await asyncio.to_thread(_fresh, data_dir)
    servers = await asyncio.to_thread(embedded.up, data_dir)
    url, redis_url = servers.database_url, servers.redis_url
    env = os.environ | {
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "INTIME_ENV": "development",
        "INTIME_OUTBOUND_ALLOW": "127.0.0.0/8,::1/128",
    }
    os.environ.update(env)
    log_path = data_dir / "processes.log"
    try:
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
        os.environ["BENCH_LOG"] = str(log_path)
        async with receiver(delay_ms=RECEIVER_DELAY_MS) as (base, control):
            org_id = await _organisation(base)
            processes = Processes(plan)
            processes.start_worker()
            processes.start_skewed_worker()
            processes.start_scheduler()
            report.skewed_worker_s = SKEW_S
            await asyncio.sleep(3)  # boot
            try:
                stop = asyncio.Event()
                publishing = asyncio.create_task(publish(url, org_id, plan, stop))
                started = time.monotonic()
                for at, fault in plan.faults:
                    await asyncio.sleep(max(0.0, started + at - time.monotonic()))
                    note = await inject(fault, data_dir, processes, control, plan, url, org_id)
                    report.faults.append({"at_s": round(time.monotonic() - started, 1), "fault": fault, "what": note})
                    print(f"[chaos] {report.faults[-1]['at_s']:>6.1f} s  {fault:<20} {note}", flush=True)
                await publishing
                deadline = time.monotonic() + plan.drain_timeout_s
                while time.monotonic() < deadline:
                    now = await counts(url, org_id)
                    if not any(now.get(s, 0) for s in ("pending", "failed", "processing", "not fanned out")):
                        break
                    await asyncio.sleep(0.5)
                report.drained_s = round(time.monotonic() - started, 1)
                arrivals = (await control.get("/_arrivals", timeout=60)).json()
            finally:
                processes.stop_all()
        await verify(url, org_id, arrivals, report, _hang_url(base), processes.kills)
    except (subprocess.CalledProcessError, httpx.HTTPError, RuntimeError) as error:
        report.problems.append(f"the run itself failed: {error!r}")
    finally:
        embedded.down(data_dir)
    return report


def _fresh(data_dir: Path) -> None:
    """No servers or data of an earlier run."""
    from devtools import embedded

    if data_dir.exists():
        embedded.down(data_dir)
        shutil.rmtree(data_dir)


async def _organisation(base: str):
    from app.accounts import services as accounts
    from app.core import db
    from app.webhooks import services

    await db.open_pool(max_size=2)
    try:
        org = await accounts.create_organization("chaos", "Chaos")
        for n in range(HOOKS):
            await services.create_webhook(
                org.id,
                {
                    "name": f"chaos {n}",
                    "url": f"{base}/hook/{n}",
                    "event_patterns": ["job.*"],
                    "timeout_seconds": 2,  # the lease is this plus 15 s: how soon a killed send is retried
                    "retry_policy": POLICY,
                },
            )
        await services.create_webhook(
            org.id,
            {
                "name": "chaos hanging",
                "url": _hang_url(base),
                "event_patterns": ["job.*"],
                "timeout_seconds": 2,
                # A hung request holds its slot for the 2 s timeout: at the default cap of 10 this
                # endpoint takes about 21 requests/s, a third of what the run publishes, and the cap
                # (doing its job) would leave it a backlog past the drain. Sized as its owner would.
                "max_in_flight": 100,
                "retry_policy": POLICY,
            },
        )
    finally:
        await db.close_pool()
    return org.id


def _hang_url(base: str) -> str:
    return f"{base}/hang/{HANG_PERCENT}/hook/{HOOKS}"


def print_report(report: Report) -> None:
    rows = [
        ("events published (committed)", f"{report.events:,}"),
        ("(event, webhook) pairs", f"{report.pairs:,}"),
        ("pairs received at least once", f"{report.received_pairs:,}"),
        ("lost", f"{report.lost:,}"),
        ("duplicates (same webhook-id)", f"{report.duplicates:,}"),
        ("duplicates with another webhook-id", f"{report.duplicates_with_another_id:,}"),
        ("left processing / pending or failed", f"{report.left_processing} / {report.left_unfinished}"),
        ("dead-lettered", ", ".join(f"{k}: {v}" for k, v in report.dlq.items()) or "0"),
        ("failed attempts / attempts lost with a worker", f"{report.failed_attempts:,} / {report.lost_attempts:,}"),
        ("all settled after", f"{report.drained_s} s"),
        ("worker with a skewed clock", f"{report.skewed_worker_s:+g} s"),
        (
            f"hanging endpoint ({HANG_PERCENT}% of requests): deliveries",
            ", ".join(f"{k}: {v}" for k, v in report.hanging.get("by_status", {}).items()) or "none",
        ),
        (
            "  requests that hung / attempts by outcome",
            f"{report.hanging.get('hung_requests', 0)} / "
            + ", ".join(f"{k}: {v}" for k, v in report.hanging.get("attempt_outcomes", {}).items()),
        ),
        (
            "  untrue histories / unexplained lost attempts",
            f"{report.hanging.get('untrue_histories', 0)} / {report.hanging.get('unexplained_lost_attempts', 0)}",
        ),
    ]
    print()
    for name, value in rows:
        print(f"{name:<46} {value}")
    print()
    print("PASSED: nothing lost" if report.passed else "FAILED:\n  " + "\n  ".join(report.problems))


def main() -> None:
    parser = argparse.ArgumentParser(prog="./task chaos", description=__doc__)
    parser.add_argument("--small", action="store_true", help="the test suite's version: fewer events, short faults")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data" / "chaos")
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ["INTIME_ENV"] = "development"
    plan = SMALL if args.small else FULL
    if not args.json:
        print(
            f"[chaos] {plan.events:,} events at {plan.rate:g}/s to {HOOKS} webhooks and one that hangs for "
            f"{HANG_PERCENT}% of requests; a worker {SKEW_S:+g} s off; faults: "
            + ", ".join(f"{fault} at {at:g} s" for at, fault in plan.faults),
            flush=True,
        )
    report = asyncio.run(run(plan, args.data_dir.resolve()))
    if args.json:
        print(json.dumps(asdict(report) | {"passed": report.passed}))
    else:
        print_report(report)
    if not args.small:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
        out = ROOT / "bench" / "results" / f"{stamp}-chaos.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"date": stamp, "plan": asdict(plan), **asdict(report)}, indent=2) + "\n")
        print(f"written to {out.relative_to(ROOT)}")
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
