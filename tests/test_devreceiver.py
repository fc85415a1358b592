"""The offline demo receiver that `./task dev` runs answers as its README paragraph promises."""

from __future__ import annotations

import asyncio
import socket

import httpx

from devtools import receiver as devreceiver
from tests.pipeline import wait_until


async def _listening(port: int) -> None:
    async def accepts() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    await wait_until(accepts, timeout=10, interval=0.02)


async def test_demo_receiver_paths():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = asyncio.create_task(devreceiver.main(port))
    await _listening(port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.post("/ok", json={})).status_code == 200
            assert (await client.post("/status/410", json={})).status_code == 410
            flaky = [(await client.post("/flaky", json={})).status_code for _ in range(4)]
            assert sorted(flaky) == [200, 200, 503, 503]
            assert (await client.post("/nowhere", json={})).status_code == 404
            try:
                await client.post("/slow/2", json={}, timeout=0.5)
                raise AssertionError("a slow answer should have timed out")
            except httpx.ReadTimeout:
                pass
    finally:
        server.cancel()


async def test_the_demo_integration_fails_over_when_its_simulated_primary_is_broken(factory, monkeypatch):
    from app.core import db
    from app.integrations import calls, health, queries
    from devtools.demo import seed_demo_integration

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("INTIME_DEV_RECEIVER_PORT", str(port))
    devreceiver._broken.clear()
    server = asyncio.create_task(devreceiver.main(port))
    await _listening(port)
    try:
        org = await factory.org()
        await seed_demo_integration(org.id)
        await seed_demo_integration(org.id)  # idempotent
        [integration] = await queries.overview(org.id)
        primary = integration["providers"][0]["id"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert "Break" in (await client.get("/providers")).text
            assert (await client.post("/providers/primary/break")).status_code == 303
            assert "broken (503)" in (await client.get("/providers")).text
        for _ in range(2):  # the demo's breaker opens after two failed checks
            assert await health.check_provider(primary) is False
        [after] = await queries.overview(org.id)
        assert after["active_provider"] == "Backup mail (simulated)"
        result = await calls.call_integration(after["id"], "send", {"to": "ada@example.test"})
        assert result["provider"] == "Backup mail (simulated)" and result["body"] == {"ok": True}
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM failover_events") == 1
    finally:
        server.cancel()
        devreceiver._broken.clear()
