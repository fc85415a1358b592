"""`./task dev`: embedded servers, migrations, demo data, then web + worker + scheduler, supervised.

A child that exits is restarted after a short pause (the restart is printed): `dramatiq` stops all of
its worker processes when one dies, by design, and this restart is what brings them back. Ctrl-C
stops the children, then the embedded servers if this run started them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from app.core.settings import ROOT, get_settings
from devtools import embedded
from devtools.demo import DEMO_ADMIN, DEMO_VIEWER

RESTART_PAUSE_SECONDS = 2.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        # A session of its own: Ctrl-C reaches only the supervisor, which then stops children in order.
        self.process = subprocess.Popen(self.argv, cwd=ROOT, start_new_session=True)
        self.started_at = time.monotonic()


def _say(message: str) -> None:
    print(f"[dev] {message}", file=sys.stderr, flush=True)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"[dev] {' '.join(argv[1:])} failed with exit code {result.returncode}")


def main(with_scheduler: bool = True) -> None:
    started = None
    need_pg, need_redis = not os.environ.get("DATABASE_URL"), not os.environ.get("REDIS_URL")
    if need_pg or need_redis:
        _say("starting the embedded servers under .data/ (set DATABASE_URL / REDIS_URL to use your own)")
        started = embedded.up(ROOT / ".data", postgres=need_pg, redis=need_redis)
    get_settings.cache_clear()
    settings = get_settings()
    bin_dir = os.path.dirname(sys.executable)
    _run([sys.executable, "-m", "app.cli", "migrate"])
    _run([sys.executable, "-m", "devtools", "seed"])

    children = [
        Child(
            "web",
            [
                os.path.join(bin_dir, "uvicorn"),
                "app.main:create_app",
                "--factory",
                "--host",
                settings.server.host,
                "--port",
                str(settings.server.port),
                "--no-access-log",
            ],
        ),
        Child("worker", [os.path.join(bin_dir, "dramatiq"), "tasks", "--processes", "1", "--threads", "16"]),
    ]
    if with_scheduler:
        children.append(Child("scheduler", [sys.executable, "-m", "tasks.scheduler"]))
    receiver_port = os.environ.get("INTIME_DEV_RECEIVER_PORT", "8001")
    children.append(Child("receiver", [sys.executable, "-m", "devtools.receiver"]))
    # The Sandbox OAuth provider at INTIME_SANDBOX_URL, so connecting can be tried offline
    # (devtools/sandbox.py); it reads its client secret from INTIME_SANDBOX_CLIENT_SECRET, as the seed does.
    sandbox_url = settings.oauth.sandbox_url or "http://127.0.0.1:8002"
    sandbox_port = str(urlsplit(sandbox_url).port or 8002)
    sandbox_callback = f"{settings.server.base_url}/oauth/sandbox/callback"
    sandbox = [sys.executable, "-m", "devtools.sandbox", "--port", sandbox_port, "--client-id", "intime-dev"]
    sandbox += ["--redirect-uri", sandbox_callback]
    children.append(Child("sandbox", sandbox))

    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    for child in children:
        child.start()
    _say(f"InTime Integrations is running: {settings.server.base_url}/employee/admin/integrations/")
    _say(f"sign in as {DEMO_ADMIN[0]} / {DEMO_ADMIN[1]} (admin) or {DEMO_VIEWER[0]} / {DEMO_VIEWER[1]} (viewer)")
    _say(f"demo receiver for webhooks: http://127.0.0.1:{receiver_port}/ok (also /status/503, /flaky, /slow/20)")
    _say(f"Sandbox OAuth provider: {sandbox_url} (client intime-dev; signs in Ada Sandbox, no password)")
    _say("API reference: " + settings.server.base_url + "/schema · Ctrl-C stops everything")

    try:
        while not stopping:
            for child in children:
                assert child.process is not None
                code = child.process.poll()
                if code is None or stopping:
                    continue
                child.restarts += 1
                _say(
                    f"{child.name} exited with code {code}; restarting in {RESTART_PAUSE_SECONDS:.0f} s "
                    f"(restart #{child.restarts})"
                )
                time.sleep(RESTART_PAUSE_SECONDS)
                if not stopping:
                    child.start()
            time.sleep(0.3)
    finally:
        _say("stopping web, worker and scheduler")
        for child in reversed(children):
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _say(f"{child.name} did not stop in time; killing it")
                child.process.kill()
        if started is not None and (started.started_postgres or started.started_redis):
            _say("stopping the embedded servers this run started")
            embedded.down(ROOT / ".data", postgres=started.started_postgres, redis=started.started_redis)
        _say("stopped")
