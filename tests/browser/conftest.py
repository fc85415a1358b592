"""Browser fixtures: the real web process (uvicorn) on a free loopback port, and headless Chromium.

Without Chromium the browser tests skip locally, and say so in the report header; under CI they fail,
because a skipped browser test in CI would hide a broken page.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devtools import embedded
from tests.conftest import ROOT, chromium_path

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def live_server():
    port = embedded.free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = os.environ | {"INTIME_PORT": str(port), "INTIME_BASE_URL": base_url}
    log = open(ARTIFACTS.mkdir(exist_ok=True) or ARTIFACTS / "live-server.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "uvicorn"),
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the web process did not start; see {ARTIFACTS / 'live-server.log'}")
        time.sleep(0.2)
    yield base_url
    process.terminate()
    process.wait(timeout=10)
    log.close()


@pytest.fixture(scope="session")
async def browser():
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium for the browser tests: .ci/run installs Debian's chromium")
        pytest.skip("no Chromium found: install Debian's `chromium` (or set CHROMIUM=/path) to run browser tests")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield instance
        await instance.close()


@pytest.fixture
async def page(browser, live_server):
    context = await browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    yield page
    await context.close()
