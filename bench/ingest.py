"""Ingest: `POST /api/v1/events` and `POST /api/v1/events/batch` against one web process.

Eight keep-alive clients (aiohttp, the lightest client Python has here, so the client steals as little
of the two cores as it can) post for `seconds` each: single events, then batches of 500. Besides
throughput and latency, the CPU each request cost is read from /proc: the web process's, PostgreSQL's
(its server processes) and Redis's, and the clients' own (this process), over the measured window
only (bench/cpu.py). All of them share the machine's two cores.

Each client has its own token (events:write, the highest hourly limit): every event counts toward a
token's limit, and a long batch run would spend one token's million an hour.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from bench import cpu
from bench.common import percentile, start_web
from devtools.embedded import free_port

CLIENTS = 8
BATCH_SIZE = 500
WARM_UP_S = 2.0
EVENT = {"type": "job.created", "payload": {"job_id": "j-1", "title": "Senior Nurse", "site": "Leeds"}}


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


async def measure(
    session, web: subprocess.Popen, url: str, tokens: list[str], body: dict, seconds: int, per: int
) -> dict:
    """Warm up, then load for `seconds`; `per` is the number of events one request carries. The body is
    encoded once, so the clients spend their share of the CPU on requests, not on JSON."""
    encoded = json.dumps(body).encode()
    await _load(session, url, tokens, encoded, WARM_UP_S)
    meter = cpu.Meter(web=cpu.tree(web), client=cpu.this_process(), **cpu.servers())
    started = time.monotonic()
    with meter:
        timings, codes = await _load(session, url, tokens, encoded, seconds)
    elapsed = time.monotonic() - started
    spent = {name: seconds * 1000 for name, seconds in meter.seconds.items()}
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
        "web_cpu_ms_per_request": round(spent["web"] / max(1, requests), 3),
        "postgres_cpu_ms_per_request": round(spent["postgres"] / max(1, requests), 3),
        "redis_cpu_ms_per_request": round(spent["redis"] / max(1, requests), 3),
        "client_cpu_ms_per_request": round(spent["client"] / max(1, requests), 3),
        "web_cpu_share": round(spent["web"] / (elapsed * 1000), 2),
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


async def ingest(seconds: int) -> dict:
    """Single events, then batches of 500, each with 8 concurrent clients for `seconds`."""
    import aiohttp

    from app.accounts import services as accounts
    from app.core import db

    opened = await db.open_pool(max_size=2)
    org = await accounts.create_organization(f"ingest-{int(time.time())}", "Ingest bench")
    tokens = await _tokens(org.id, CLIENTS)
    port = free_port()
    web = start_web(port)
    base = f"http://127.0.0.1:{port}"
    try:
        connector = aiohttp.TCPConnector(limit=CLIENTS)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            await wait_healthy(session, base, web)
            single = await measure(session, web, f"{base}/api/v1/events", tokens, EVENT, seconds, 1)
            print(f"[bench] ingest single: {single}", file=sys.stderr, flush=True)
            batch_body = {"events": [EVENT] * BATCH_SIZE}
            url = f"{base}/api/v1/events/batch"
            batch = await measure(session, web, url, tokens, batch_body, seconds, BATCH_SIZE)
            print(f"[bench] ingest batch: {batch}", file=sys.stderr, flush=True)
    finally:
        web.terminate()
        web.wait(timeout=10)
        if opened:
            await db.close_pool()
    return {"scenario": "ingest", "seconds": seconds, "single": single, "batch": batch}
