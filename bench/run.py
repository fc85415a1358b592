"""`./task bench`: measured figures, printed as a table and written to bench/results/<date>.json.

Scenarios so far: `pages`, the debugger page and its fragments with 10k, 100k and 1M deliveries in the
table (`--quick`: 10k only). The benchmark uses its own database (`intime_bench`, recreated) on the
embedded PostgreSQL (or on DATABASE_URL's server) and its own web process on a free loopback port.
Requests are sequential, so each figure is one request's latency, not a throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from bench import plot
from bench.common import ROOT, percentile, start_web
from devtools.embedded import free_port

RESULTS = ROOT / "bench" / "results"
TARGET_P95_MS = 50.0


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def prepare_environment() -> None:
    """Servers up, a fresh `intime_bench` database built by the migrations, before any app import."""
    sys.path.insert(0, str(ROOT))
    from devtools import embedded

    need_pg, need_redis = not os.environ.get("DATABASE_URL"), not os.environ.get("REDIS_URL")
    started = embedded.up(ROOT / ".data", postgres=need_pg, redis=need_redis) if need_pg or need_redis else None
    database = _with_path(os.environ.get("DATABASE_URL") or started.database_url, "/intime_bench")  # type: ignore[union-attr]
    redis = _with_path(os.environ.get("REDIS_URL") or started.redis_url, "/12")  # type: ignore[union-attr]
    os.environ.update(DATABASE_URL=database, REDIS_URL=redis, INTIME_ENV="development")

    async def recreate() -> None:
        import asyncpg

        admin = await asyncpg.connect(_with_path(database, "/postgres"))
        await admin.execute('DROP DATABASE IF EXISTS "intime_bench" WITH (FORCE)')
        await admin.execute('CREATE DATABASE "intime_bench"')
        await admin.close()

    asyncio.run(recreate())
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, check=True, capture_output=True)


async def measure(client, url: str, headers: dict[str, str], n: int) -> dict[str, float]:
    for _ in range(5):  # warm the connection pool and caches
        await client.get(url, headers=headers)
    timings = []
    for _ in range(n):
        started = time.perf_counter()
        response = await client.get(url, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
    return {
        "p50_ms": round(percentile(timings, 0.5), 1),
        "p95_ms": round(percentile(timings, 0.95), 1),
        "mean_ms": round(statistics.fmean(timings), 1),
        "requests": n,
    }


async def pages_scenario(sizes: list[int], requests: int) -> list[dict]:
    import httpx

    from app.accounts import services as accounts
    from app.accounts import tokens
    from app.core import db
    from app.webhooks import services
    from devtools import seed

    await db.open_pool(max_size=4)
    org = await accounts.create_organization("bench", "Bench")
    await accounts.create_user(org, "bench@bench.test", "bench-password", "admin")
    webhook, _ = await services.create_webhook(
        org.id, {"name": "bench", "url": "http://127.0.0.1:9/", "event_patterns": ["*"]}
    )
    _, token = await tokens.create_token(org, "bench", "webhooks:read", rate_limit_per_hour=1_000_000)
    port = free_port()
    web = start_web(port)  # started once, before any measurement
    rows = []
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for _ in range(100):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            login = await client.get("/login")
            await client.post(
                "/login",
                data={
                    "email": "bench@bench.test",
                    "password": "bench-password",
                    "_csrf_token": client.cookies.get("intime_csrf"),
                },
            )
            page = f"/employee/admin/integrations/webhooks/{webhook.id}"
            seeded = 0
            for size in sizes:
                print(f"[bench] seeding to {size:,} deliveries ...", file=sys.stderr, flush=True)
                await seed.seed_deliveries(webhook.id, size - seeded, days=7)
                seeded = size
                first = await client.get(page, headers={"HX-Request": "true", "HX-Target": "history"})
                cursor = re.search(r"cursor=([\w-]+)", first.text).group(1)
                async with db.connection() as conn:
                    delivery_id = await conn.fetchval(
                        "SELECT id FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY created_at DESC LIMIT 1",
                        webhook.id,
                    )
                hx = {"HX-Request": "true"}
                checks = {
                    "debugger page": (page, {}),
                    "history partial": (page, hx | {"HX-Target": "history"}),
                    "history, status=dlq": (page + "?status=dlq", hx | {"HX-Target": "history"}),
                    "history, page 2": (page + f"?cursor={cursor}", hx | {"HX-Target": "history"}),
                    "history, search by id": (page + f"?q={delivery_id}", hx | {"HX-Target": "history"}),
                    "overview partial, 7 days": (page + "?window=7d", hx | {"HX-Target": "overview"}),
                    "inspector partial": (f"{page}/deliveries/{delivery_id}", hx),
                    "API deliveries list": (
                        f"/api/v1/webhooks/{webhook.id}/deliveries?limit=50",
                        {"authorization": f"Bearer {token}"},
                    ),
                }
                for name, (url, headers) in checks.items():
                    figures = await measure(client, url, headers, requests)
                    rows.append(
                        {
                            "scenario": "pages",
                            "deliveries": size,
                            "check": name,
                            **figures,
                            "target_p95_ms": TARGET_P95_MS,
                            "met": figures["p95_ms"] <= TARGET_P95_MS,
                        }
                    )
                    print(
                        f"[bench] {size:>9,}  {name:<28} p50 {figures['p50_ms']:>6} ms  p95 {figures['p95_ms']:>6} ms",
                        file=sys.stderr,
                        flush=True,
                    )
            del login
    finally:
        web.terminate()
        web.wait(timeout=10)
        await db.close_pool()
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'deliveries':>11}  {'check':<28} {'p50 ms':>8} {'p95 ms':>8}  target p95 ≤ {TARGET_P95_MS:.0f} ms")
    for row in rows:
        mark = "met" if row["met"] else "MISSED"
        print(f"{row['deliveries']:>11,}  {row['check']:<28} {row['p50_ms']:>8} {row['p95_ms']:>8}  {mark}")


SCENARIOS = (
    "ingest",
    "idle",
    "throughput",
    "scaleout",
    "memory",
    "steady",
    "latency",
    "fanout",
    "retry",
    "disable",
    "noisy",
    "baselines",
    "pages",
)


async def pipeline_scenarios(quick: bool, only: set[str]) -> list[dict]:
    from app.core import db
    from bench import engine_load, ingest, noisy, pipeline, steady

    await db.open_pool(max_size=4)
    rows: list[dict] = []

    async def run(name: str, scenario) -> None:
        started = time.monotonic()
        rows.append(await scenario)
        print(f"[bench] {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

    try:
        if "baselines" in only:
            await run("baseline (a)", pipeline.baseline_asyncio(5 if quick else 30))
            await run("baseline (b)", pipeline.baseline_dramatiq(5 if quick else 30))
        if "idle" in only:
            await run("idle", pipeline.idle(10 if quick else 30))
        if "throughput" in only:
            await run("throughput", pipeline.throughput(15 if quick else 60))
        if "scaleout" in only:
            await run("scale-out", pipeline.throughput(15 if quick else 60, groups=2))
        if "memory" in only and not quick:  # the smoke run reads memory from the throughput run
            await run("memory", pipeline.memory(200_000))
        if "steady" in only:  # before the scenarios that leave many webhooks behind for every pruning pass
            await run("steady", steady.steady(**steady.durations(quick)))
        if "latency" in only:
            await run("latency", pipeline.latency(100 if quick else 200, 12 if quick else 60))
        if "fanout" in only:
            await run("fan-out", pipeline.fan_out(100 if quick else 1000))
        if "retry" in only:
            await run("retry", pipeline.retry_timing(40 if quick else 500))
        if "disable" in only:
            await run("disable storm", engine_load.disable_storm(10_000 if quick else 100_000))
        if "noisy" in only:
            await run("noisy neighbour", noisy.noisy_neighbour(50, 8 if quick else 20))
        # Last: its millions of events would leave the delivery scenarios a checkpoint and vacuum to pay.
        if "ingest" in only:
            await run("ingest", ingest.ingest(10 if quick else 30))
        for row in rows:
            print(f"[bench] {json.dumps(_brief(row), default=str)}", file=sys.stderr, flush=True)
    finally:
        await db.close_pool()
    return rows


def _brief(row: dict) -> dict:
    """A row without its samples (the steady scenario's curve is in the JSON file and the plot)."""
    if row.get("scenario") != "steady":
        return row
    return row | {phase: {k: v for k, v in row[phase].items() if k != "samples"} for phase in ("off", "on")}


def _split(split: dict) -> str:
    return f"{split['all']} ms (" + ", ".join(f"{k} {v}" for k, v in split.items() if k != "all") + ")"


def judge_steady(s: dict) -> list[tuple[str, str, str]]:
    """The steady-state scenario's targets (issue 15), and its CPU split, which has none ("info")."""
    off, on = s["off"], s["on"]
    verdicts = []

    def add(target: str, figure: str, met: bool) -> None:
        verdicts.append((target, figure, "met" if met else "MISSED"))

    minutes = f"{s['on_seconds'] / 60:g} min on, {s['off_seconds'] / 60:g} off, retention {s['retention_s']} s"
    add(
        f"steady ({minutes}): deliveries/s pruning on ≥ 0.90 of off",
        f"{s['throughput_ratio']:.2f} ({on['recorded_per_s']:,} vs {off['recorded_per_s']:,}/s, "
        f"offered {s['rate_per_s']:,}/s; lag at end {on['lag_at_end']:,} vs {off['lag_at_end']:,})",
        s["throughput_ratio"] >= 0.9,
    )
    flat = s["second_half_max_over_min"]
    figure = f"worst {s['worst_flatness']} ({max(flat, key=flat.get)})" if flat else "no samples"
    if on["samples"] and off["samples"]:
        mb = [phase["samples"][-1]["bytes"]["total"] / 2**20 for phase in (on, off)]
        figure += f"; {mb[0]:.0f} MB at the end (off: {mb[1]:.0f} MB)"
    add("steady: table rows and bytes flat in the second half (max/min ≤ 1.10)", figure, s["worst_flatness"] <= 1.10)
    pages = s["pages"]
    add(
        "steady: page p95 at the end within 10% of the start",
        "; ".join(f"{name} {p['start_p95_ms']} → {p['end_p95_ms']} ms" for name, p in pages.items()),
        all(p["ratio"] is not None and p["ratio"] <= 1.10 for p in pages.values()) and on["page_errors"] == 0,
    )
    # What the pruner costs, beside the reference.
    verdicts.append(
        (
            "steady: CPU per delivery, pruning off → on",
            f"{_split(off['cpu_ms_per_delivery'])} → {_split(on['cpu_ms_per_delivery'])}",
            "info",
        )
    )
    return verdicts


BASELINES = ("baseline (a) asyncio", "baseline (b) Dramatiq + shared httpx client")


def judge(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(target, figure, met?) for each target of issue 5 that this run measured."""
    by = {row["scenario"]: row for row in rows}
    verdicts = []

    def add(target: str, figure: str, met: bool) -> None:
        verdicts.append((target, figure, "met" if met else "MISSED"))

    if "ingest" in by:
        single, batch = by["ingest"]["single"], by["ingest"]["batch"]
        add(
            "POST /events, 8 clients: ≥ 1,000 events/s, p99 ≤ 50 ms",
            f"{single['events_per_s']:,}/s, p99 {single['p99_ms']} ms, web CPU {single['web_cpu_ms_per_request']} ms",
            single["events_per_s"] >= 1000 and single["p99_ms"] <= 50 and single["errors"] == 0,
        )
        add(
            "POST /events/batch of 500, 8 clients: ≥ 10,000 events/s",
            f"{batch['events_per_s']:,}/s, p99 {batch['p99_ms']} ms per batch",
            batch["events_per_s"] >= 10_000 and batch["errors"] == 0,
        )
    if "throughput" in by:
        t = by["throughput"]
        add(
            "≥ 1,500 deliveries/s sustained, every attempt recorded",
            f"{t['recorded_per_s']:,}/s",
            t["recorded_per_s"] >= 1500,
        )
        split = t["cpu_ms_per_delivery"]
        add(
            "≤ 1.4 ms CPU per delivery, all processes",
            f"{split['all']} ms (" + ", ".join(f"{k} {v}" for k, v in split.items() if k != "all") + ")",
            split["all"] <= 1.4,
        )
        for name in BASELINES:
            if name in by:
                ratio = t["recorded_per_s"] / by[name]["per_s"] if by[name]["per_s"] else 0
                theirs = by[name]["cpu_ms_per_delivery"]["all"]
                add(
                    f"ratio to {name}",
                    f"{ratio:.2f}x ({by[name]['per_s']:,}/s, {theirs} ms CPU each)",
                    name.startswith("baseline (a)") or ratio > 1,
                )
    scaled = next((row for name, row in by.items() if name.startswith("scale-out")), None)
    if scaled:
        one = by.get("throughput")
        add(
            f"scale-out: {scaled['groups']} schedulers + worker groups, no duplicate, ≥ one group's rate",
            f"{scaled['recorded_per_s']:,}/s"
            + (f" vs {one['recorded_per_s']:,}/s" if one else "")
            + f", {scaled['duplicates']} duplicates of {scaled['arrived']:,}",
            scaled["duplicates"] == 0 and (one is None or scaled["recorded_per_s"] >= one["recorded_per_s"]),
        )
    if "idle" in by:
        i = by["idle"]
        add(
            "idle: a worker ≤ 2% of a core, Redis ≤ 1%",
            f"worker {i['per_worker_process_pct']}%, Redis {i['cpu_core_share_pct']['redis']}%, "
            f"scheduler {i['cpu_core_share_pct']['scheduler']}%",
            i["per_worker_process_pct"] <= 2 and i["cpu_core_share_pct"]["redis"] <= 1,
        )
    if "memory" in by or "throughput" in by:
        m = by.get("memory") or by["throughput"]
        over = f" over {m['deliveries']:,} deliveries" if "deliveries" in m else " over the throughput run"
        add(
            "worker RSS ≤ 250 MB and flat" + over,
            f"{m['worker_rss_mb_first_half_max']} → {m['worker_rss_mb_second_half_max']} MB",
            # NaN or 0 means not measured, which is not "met"
            0 < m["worker_rss_mb_second_half_max"] <= 250
            and m["worker_rss_mb_second_half_max"] <= m["worker_rss_mb_first_half_max"] * 1.1,
        )
    if "steady" in by:
        verdicts += judge_steady(by["steady"])
    if "latency" in by:
        lat = by["latency"]
        add(
            "latency p50 ≤ 50 ms, p99 ≤ 250 ms",
            f"p50 {lat['p50_ms']} / p95 {lat['p95_ms']} / p99 {lat['p99_ms']} ms",
            lat["p50_ms"] <= 50 and lat["p99_ms"] <= 250,
        )
    if "fan-out" in by:
        f = by["fan-out"]
        add(f"fan-out of {f['webhooks']} ≤ 3 s", f"{f['all_received_s']} s", (f["all_received_s"] or 99) <= 3)
    if "retry timing" in by:
        r = by["retry timing"]
        add(
            "retry lateness p99 ≤ 1 s",
            f"p50 {r['lateness_p50_ms']} / p99 {r['lateness_p99_ms']} ms",
            r["lateness_p99_ms"] <= 1000,
        )
    if "disable storm" in by:
        d = by["disable storm"]
        add(
            f"disable with {d['waiting']:,} waiting answers in < 1 s (baseline: one UPDATE in the request)",
            f"{d['disable_call_ms']} ms (baseline {d['baseline_single_update_call_ms']} ms); "
            f"all in the DLQ after {d['all_in_dlq_s']} s",
            d["disable_call_ms"] < 1000,
        )
        before, during = d["other_webhook_before"], d["other_webhook_during"]
        add(
            "another webhook's p99 latency during the drain within 2x of before",
            f"p99 {before['p99_ms']} → {during['p99_ms']} ms",
            during["p99_ms"] <= 2 * before["p99_ms"],
        )
    if "noisy" in by:
        n = by["noisy"]
        quiet, loud = n["quiet"], n["hanging"]
        add(
            f"noisy neighbour: the other {n['organisations'] - 1} orgs' p99 within 2x while 1 hangs",
            f"p99 {quiet['others_p99_ms']} → {loud['others_p99_ms']} ms",
            loud["others_p99_ms"] <= 2 * quiet["others_p99_ms"] and loud["others_received"] == loud["others_events"],
        )
        add(
            "noisy neighbour: zero lost attempts",
            f"{quiet['lost_attempts']} / {loud['lost_attempts']} (quiet / hanging)",
            quiet["lost_attempts"] == 0 and loud["lost_attempts"] == 0,
        )
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(prog="./task bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs (a smoke run)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}")
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}")
    sizes = [10_000] if args.quick else [10_000, 100_000, 1_000_000]
    requests = 30 if args.quick else 200
    started = time.time()
    prepare_environment()
    print(f"[bench] set-up: {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    rows = asyncio.run(pipeline_scenarios(args.quick, only))
    verdicts = judge(rows)
    if "pages" in only:
        pages_started = time.time()
        rows += asyncio.run(pages_scenario(sizes, requests))
        print(f"[bench] pages: {time.time() - pages_started:.0f} s", file=sys.stderr, flush=True)
    print_table([row for row in rows if row["scenario"] == "pages"])
    if verdicts:
        print(f"\n{'target':<56} {'measured':<34} verdict")
        for target, figure, verdict in verdicts:
            print(f"{target:<56} {figure:<34} {verdict}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    out = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    result = {
        "date": stamp,
        "quick": args.quick,
        "seconds": round(time.time() - started),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rows": rows,
        "verdicts": [{"target": t, "measured": f, "verdict": v} for t, f, v in verdicts],
    }
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    out.with_suffix(".svg").write_text(plot.svg(result))
    print(f"\nwritten to {out.relative_to(ROOT)} and {out.with_suffix('.svg').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
