"""The offline demo receiver that `./task dev` runs answers as its README paragraph promises."""

from __future__ import annotations

import asyncio
import socket

import httpx

from app import devreceiver


async def test_demo_receiver_paths():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = asyncio.create_task(devreceiver.main(port))
    await asyncio.sleep(0.2)
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
