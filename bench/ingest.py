"""Ingest: `POST /api/v1/events` and `POST /api/v1/events/batch` against one web process.

Eight keep-alive clients (aiohttp, the lightest client Python has here, so the client steals as little
of the two cores as it can) post for `seconds` each: single events, then batches of 500. Besides
throughput and latency, the CPU each request cost is read from /proc: the web process's, PostgreSQL's
(the postmaster and its backends), Redis's (its own INFO) and the clients' own (this process), over
the measured window only. All of them share the machine's two cores.

Each client has its own token (events:write, the highest hourly limit): every event counts toward a
token's limit, and a long batch run would spend one token's million an hour.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.common import percentile, start_web
from devtools.embedded import free_port

CLIENTS = 8
BATCH_SIZE = 500
WARM_UP_S = 2.0
EVENT = {"type": "job.created", "payload": {"job_id": "j-1", "title": "Senior Nurse", "site": "Leeds"}}
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_ms(pid: int) -> float:
    """utime + stime of one process, in ms (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICK


def postgres_cpu_ms(postmaster: psutil.Process) -> dict[int, float]:
    """CPU ms of the postmaster and each of its children (backends, WAL writer, checkpointer)."""
    found = {}
    for proc in [postmaster, *postmaster.children()]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        found[proc.pid] = (times.user + times.system) * 1000
    return found


async def redis_cpu_ms() -> float:
    from app.core.redis import get_redis

    info = await get_redis().info("cpu")
    return (float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1000


@dataclass
class Window:
    """CPU readings at the start of a measured window; `spent()` gives each one's ms since."""

    web_pid: int
    postmaster: psutil.Process
    web: float = 0.0
    postgres: dict[int, float] = field(default_factory=dict)
    redis: float = 0.0
    client: float = 0.0

    async def start(self) -> None:
        self.client = time.process_time() * 1000
        self.web = process_cpu_ms(self.web_pid)
        self.postgres = postgres_cpu_ms(self.postmaster)
        self.redis = await redis_cpu_ms()

    async def spent(self) -> dict[str, float]:
        postgres = postgres_cpu_ms(self.postmaster)
        return {
            "web": process_cpu_ms(self.web_pid) - self.web,
            "postgres": sum(ms - self.postgres.get(pid, 0.0) for pid, ms in postgres.items()),
            "redis": await redis_cpu_ms() - self.redis,
            "client": time.process_time() * 1000 - self.client,
        }


async def _client(session, url: str, token: str, body: bytes, until: float, timings: list[float], codes: dict) -> None:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    while time.monotonic() < until:
        started = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            elapsed = (time.perf_counter() - started) * 1000
        codes[response.status] = codes.get(response.status, 0) + 1
        timings.append(elapsed)


async def _load(session, url: str, tokens: list[str], body: bytes, seconds: float) -> tuple[list[float], dict]:
    timings: list[float] = []
    codes: dict[int, int] = {}
    until = time.monotonic() + seconds
    await asyncio.gather(*(_client(session, url, token, body, until, timings, codes) for token in tokens))
    return timings, codes


async def measure(session, window: Window, url: str, tokens: list[str], body: dict, seconds: int, per: int) -> dict:
    """Warm up, then load for `seconds`; `per` is the number of events one request carries. The body is
    encoded once, so the clients spend their share of the CPU on requests, not on JSON."""
    encoded = json.dumps(body).encode()
    await _load(session, url, tokens, encoded, WARM_UP_S)
    await window.start()
    started = time.monotonic()
    timings, codes = await _load(session, url, tokens, encoded, seconds)
    elapsed = time.monotonic() - started
    cpu = await window.spent()
    requests = len(timings)
    ok = sum(count for code, count in codes.items() if 200 <= code < 300)
    return {
        "clients": len(tokens),
        "events_per_request": per,
        "requests": requests,
        "errors": requests - ok,
        "status_codes": {str(code): count for code, count in sorted(codes.items())},
        "requests_per_s": round(requests / elapsed, 1),
        "events_per_s": round(ok * per / elapsed, 1),
        "p50_ms": round(percentile(timings, 0.50), 1),
        "p95_ms": round(percentile(timings, 0.95), 1),
        "p99_ms": round(percentile(timings, 0.99), 1),
        "web_cpu_ms_per_request": round(cpu["web"] / max(1, requests), 3),
        "postgres_cpu_ms_per_request": round(cpu["postgres"] / max(1, requests), 3),
        "redis_cpu_ms_per_request": round(cpu["redis"] / max(1, requests), 3),
        "client_cpu_ms_per_request": round(cpu["client"] / max(1, requests), 3),
        "web_cpu_share": round(cpu["web"] / (elapsed * 1000), 2),
    }


async def wait_healthy(session, base: str, web: subprocess.Popen) -> None:
    import aiohttp

    for _ in range(150):
        if web.poll() is not None:
            raise RuntimeError("the web process exited during start-up")
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the web process did not answer /healthz within 30 s")


async def _tokens(org_id, n: int) -> list[str]:
    from app.accounts import tokens

    made = []
    for index in range(n):
        _, token = await tokens.create_token(
            org_id, f"ingest bench {index}", "events:write", rate_limit_per_hour=tokens.MAX_RATE_LIMIT
        )
        made.append(token)
    return made


async def _postmaster() -> psutil.Process:
    from app.core import db

    async with db.connection() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
    parent = psutil.Process(backend).parent()
    assert parent is not None
    return parent


async def ingest(seconds: int) -> dict:
    """Single events, then batches of 500, each with 8 concurrent clients for `seconds`."""
    import aiohttp

    from app.accounts import services as accounts
    from app.core import db

    opened = await db.open_pool(max_size=2)
    org = await accounts.create_organization(f"ingest-{int(time.time())}", "Ingest bench")
    tokens = await _tokens(org.id, CLIENTS)
    postmaster = await _postmaster()
    port = free_port()
    web = start_web(port)
    base = f"http://127.0.0.1:{port}"
    try:
        connector = aiohttp.TCPConnector(limit=CLIENTS)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            await wait_healthy(session, base, web)
            window = Window(web.pid, postmaster)
            single = await measure(session, window, f"{base}/api/v1/events", tokens, EVENT, seconds, 1)
            print(f"[bench] ingest single: {single}", file=sys.stderr, flush=True)
            batch_body = {"events": [EVENT] * BATCH_SIZE}
            url = f"{base}/api/v1/events/batch"
            batch = await measure(session, window, url, tokens, batch_body, seconds, BATCH_SIZE)
            print(f"[bench] ingest batch: {batch}", file=sys.stderr, flush=True)
    finally:
        web.terminate()
        web.wait(timeout=10)
        if opened:
            await db.close_pool()
    return {"scenario": "ingest", "seconds": seconds, "single": single, "batch": batch}
