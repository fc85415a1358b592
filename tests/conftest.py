"""Test set-up: real PostgreSQL and Redis, shared by the whole run.

Tests come in three kinds, marked here by where they live and what they use:
- `unit` (tests/unit/): pure functions (patterns, signing, retry maths, backoff, times, settings,
  crypto); no servers. `pytest tests/unit` starts none and takes seconds.
- engine tests (the default): the app, services and the scheduler in-process against real PostgreSQL
  and Redis.
- `e2e`: anything that drives the subprocess worker, chaos, or headless Chromium (`browser` too).
  `./task test -- -m "not e2e"` is the quick loop.

Unless every collected test is a unit test, the embedded servers are started before the app reads
its settings (unless DATABASE_URL / REDIS_URL point elsewhere), a fresh `intime_test` database is
built by running the migrations (not from the table classes, so a missing migration fails tests), and
Redis database 15 is used. Each test starts from empty tables and an empty Redis database
(truncation, not new servers).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools import embedded  # noqa: E402  (embedded imports no settings)

pytest_plugins = ["tests.oauth_sandbox"]

TEST_DB_NAME = "intime_test"
TEST_REDIS_DB = 15
TEST_KEYS = {
    "INTIME_SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
    "INTIME_ENCRYPTION_KEYS": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
}


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


# The run's Sandbox OAuth provider (tests.oauth_sandbox) listens here; the settings (and the worker
# process) learn its URL from the environment, as in `./task dev`.
SANDBOX_PORT = embedded.free_port()
SANDBOX_SECRET = "sandbox-test-secret"


def _prepare() -> embedded.Started | None:
    need_pg, need_redis = not os.environ.get("DATABASE_URL"), not os.environ.get("REDIS_URL")
    started = embedded.up(ROOT / ".data", postgres=need_pg, redis=need_redis) if need_pg or need_redis else None
    base_db = os.environ.get("DATABASE_URL") or started.database_url  # type: ignore[union-attr]
    base_redis = os.environ.get("REDIS_URL") or started.redis_url  # type: ignore[union-attr]
    test_db = os.environ.get("INTIME_TEST_DATABASE_URL") or _with_path(base_db, f"/{TEST_DB_NAME}")
    test_redis = os.environ.get("INTIME_TEST_REDIS_URL") or _with_path(base_redis, f"/{TEST_REDIS_DB}")
    os.environ.update(
        INTIME_ENV="test",
        DATABASE_URL=test_db,
        REDIS_URL=test_redis,
        INTIME_OUTBOUND_ALLOW="127.0.0.0/8,::1/128",
        INTIME_BASE_URL="http://127.0.0.1:8000",
        INTIME_SANDBOX_URL=f"http://127.0.0.1:{SANDBOX_PORT}",
        INTIME_OAUTH_REFRESH_MARGIN="600",
        **TEST_KEYS,
    )
    asyncio.run(recreate_database(test_db))
    migrate = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"migrations failed on the test database:\n{migrate.stderr}")
    return started


async def recreate_database(url: str) -> None:
    import asyncpg

    name = urlsplit(url).path.lstrip("/")
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise RuntimeError(f"refusing to recreate database {name!r}")
    admin = await asyncpg.connect(_with_path(url, "/postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


UNIT_DIR = ROOT / "tests" / "unit"
BROWSER_DIR = ROOT / "tests" / "browser"
# Fixtures that mean a test drives a real subprocess worker or a browser: end-to-end.
E2E_FIXTURES = {"worker_process", "skewed_worker", "live_server", "browser", "page"}
E2E_FILES = {ROOT / "tests" / "test_chaos.py"}
_STARTED: embedded.Started | None = None
_PREPARED = False


def _is_unit(item: pytest.Item) -> bool:
    return Path(str(item.fspath)).is_relative_to(UNIT_DIR)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    global _STARTED, _PREPARED
    for item in items:
        if Path(str(item.fspath)).is_relative_to(BROWSER_DIR):
            item.add_marker(pytest.mark.browser)
        if _is_unit(item):
            item.add_marker(pytest.mark.unit)
        elif (
            E2E_FIXTURES & set(getattr(item, "fixturenames", ()))
            or item.get_closest_marker("browser")
            or Path(str(item.fspath)) in E2E_FILES
        ):
            item.add_marker(pytest.mark.e2e)
    # Markers are set before -m deselects; what is left decides whether servers are needed.
    selected = [item for item in items if not _deselected(config, item)]
    if not _PREPARED and any(not _is_unit(item) for item in selected):
        _STARTED, _PREPARED = _prepare(), True
        (ROOT / "test-artifacts").mkdir(exist_ok=True)


def _deselected(config: pytest.Config, item: pytest.Item) -> bool:
    expression = config.getoption("markexpr")
    if not expression:
        return False
    from _pytest.mark.expression import Expression

    names = {mark.name for mark in item.iter_markers()}
    return not Expression.compile(expression).evaluate(lambda name, **_: name in names)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Stop only what this run started: a `./task dev` running beside the tests keeps its servers.
    if _STARTED is not None and (_STARTED.started_postgres or _STARTED.started_redis):
        embedded.down(ROOT / ".data", postgres=_STARTED.started_postgres, redis=_STARTED.started_redis)


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def pytest_report_header(config: pytest.Config) -> list[str]:
    path = chromium_path()
    if path:
        return [f"browser tests: headless Chromium at {path}"]
    return ["browser tests: SKIPPED, no Chromium found (install Debian's `chromium`, or set CHROMIUM=/path)"]


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
async def db_pool() -> AsyncIterator[None]:
    if not _PREPARED:  # a run of unit tests only: no servers
        yield
        return
    from app.core import db, outbound

    await db.open_pool(max_size=5)
    yield
    await outbound.close_shared_client()  # as the worker does at shutdown: its sockets close cleanly
    await db.close_pool()


@pytest.fixture(autouse=True)
async def clean_state(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every test starts from empty tables (the catalog and migration history kept) and empty Redis."""
    yield
    if _is_unit(request.node):
        return
    from app.accounts.tables import Organization
    from app.core.redis import get_redis

    rows = await Organization.raw(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN ('event_types', 'migration')"
    )
    if rows:
        import asyncpg

        names = ", ".join(f'"{row["tablename"]}"' for row in rows)
        for attempt in range(5):
            # The session's worker may still be finishing this test's last message (a refresh, a send):
            # TRUNCATE's exclusive locks can then deadlock with it, and PostgreSQL picks one to fail.
            try:
                await Organization.raw(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
                break
            except asyncpg.DeadlockDetectedError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)
    await get_redis().flushdb()


@pytest.fixture
def app():
    from app.main import create_app

    return create_app()


@pytest.fixture
async def client(app):
    """The app in this test's event loop (Litestar's own test client runs it in another thread and loop,
    where the session's connection pool could not be used)."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


@pytest.fixture
def factory():
    from tests.factories import Factory

    return Factory()


# --- the delivery pipeline: a real worker process, the scheduler, local receivers ----------------------


@pytest.fixture(scope="session")
def worker_process():
    """A real `dramatiq tasks` worker on the test Redis and database, shared by the run."""
    import signal

    log = open(ROOT / "test-artifacts" / "worker.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dramatiq"), "tasks", "--processes", "1", "--threads", "4"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def _stop_worker(process: subprocess.Popen) -> None:
    import signal

    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def skewed_worker():
    """Start extra real `dramatiq tasks` workers whose wall clock is off by `seconds` (libfaketime, see
    devtools.skew), beside the session's worker and on the same queues; each is stopped when the test
    ends. `skewed_worker(5.0)` returns the process; its log is test-artifacts/skewed-worker-*.log."""
    from devtools.skew import skewed_env

    started: list[tuple[subprocess.Popen, IO[str]]] = []

    def start(seconds: float, *, threads: int = 4) -> subprocess.Popen:
        name = f"skewed-worker-{len(started)}-{seconds:+g}s.log"
        log = open(ROOT / "test-artifacts" / name, "w")  # noqa: SIM115
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dramatiq"), "tasks", "--processes", "1", "--threads", str(threads)],
            cwd=ROOT,
            env=skewed_env(seconds, os.environ.copy()),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        # Dramatiq says so once its consumers run: only then does the test's traffic reach this worker.
        deadline = time.monotonic() + 30
        while "ready for action" not in (ROOT / "test-artifacts" / name).read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the skewed worker did not start; see test-artifacts/{name}")
            time.sleep(0.1)
        return process

    yield start
    for process, log in started:
        _stop_worker(process)
        log.close()


@pytest.fixture
async def scheduler():
    """The scheduler loop, in this test's event loop (fan-out on NOTIFY, sweeps every second)."""
    from datetime import timedelta

    from tasks.scheduler import Scheduler

    # Pruning off: the tests of the pruner run its passes themselves (tests/test_prune.py), and one
    # scheduler with it on (test_the_scheduler_prunes_on_its_own) shows that the loop does too.
    instance = Scheduler(sweep_grace=timedelta(seconds=1), prunes=False)
    task = asyncio.create_task(instance.run())
    yield instance
    instance.stopping.set()
    instance.wake.set()
    await asyncio.wait_for(task, 10)


@pytest.fixture(scope="session")
def sandbox_session():
    from tests.oauth_sandbox import run_sandbox

    with run_sandbox(port=SANDBOX_PORT, client_id="intime-test", client_secret=SANDBOX_SECRET) as sandbox:
        yield sandbox


@pytest.fixture
async def sandbox(sandbox_session):
    """The run's Sandbox provider at INTIME_SANDBOX_URL, its switches back to normal for this test."""
    await sandbox_session.control(token_mode="ok", access_token_ttl=120, refresh_rotation=True)
    return sandbox_session


@pytest.fixture
async def receiver():
    from tests.receiver import Receiver

    instance = await Receiver().start()
    yield instance
    await instance.stop()


@pytest.fixture
async def api(client, factory):
    """An organisation, a token with every webhook scope, and helpers to drive the API with it."""
    from tests import pipeline

    org = await factory.org()
    _, token = await factory.token(org, scopes="events:write,webhooks:write,dlq:write")

    class Api:
        organisation = org

        async def webhook(self, url: str, **fields) -> dict:
            body = {"name": "receiver", "url": url, "event_patterns": ["job.*"], "retry_policy": pipeline.FAST} | fields
            response = await client.post("/api/v1/webhooks", json=body, headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 201, response.text
            return response.json()

        async def publish(self, event_type: str = "job.created", payload: dict | None = None) -> str:
            response = await client.post(
                "/api/v1/events",
                json={"type": event_type, "payload": payload or {"n": 1}},
                headers={"authorization": f"Bearer {token}"},
            )
            assert response.status_code == 201, response.text
            return response.json()["id"]

        async def get(self, path: str, **params):
            return await client.get(f"/api/v1{path}", params=params, headers={"authorization": f"Bearer {token}"})

        async def post(self, path: str, body: dict | None = None):
            return await client.post(f"/api/v1{path}", json=body, headers={"authorization": f"Bearer {token}"})

        async def patch(self, path: str, body: dict):
            return await client.patch(f"/api/v1{path}", json=body, headers={"authorization": f"Bearer {token}"})

        async def put(self, path: str, body):
            return await client.put(f"/api/v1{path}", json=body, headers={"authorization": f"Bearer {token}"})

    return Api()
