"""Typed settings, one object per concern, read once from the environment.

Development and test fall back to what `./task dev` prepares under `.data/`: the embedded servers'
URLs (`services.json`) and keys generated once (`dev-keys.json`). Production (`INTIME_ENV=production`)
falls back to nothing: every required variable must be set and well-formed, or start-up stops with a
message that names the variable and says what is wrong with it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
"""The checkout (development and tests: `.data/` lives here)."""
PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The installed `app` package. Its `templates` and `static` (links to the checkout's top-level folders,
copied into a built wheel) are found from here, so a production install needs no checkout."""
ENVIRONMENTS = ("development", "test", "production")
DEV_OUTBOUND_ALLOW = "127.0.0.0/8,::1/128"


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class ServerSettings:
    host: str
    """Interface the web process binds to (`INTIME_HOST`)."""
    port: int
    """TCP port of the web process (`INTIME_PORT`)."""
    base_url: str
    """Public URL of the portal, used to build OAuth redirect URIs (`INTIME_BASE_URL`)."""


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    """asyncpg DSN (`DATABASE_URL`); embedded PostgreSQL under `.data/pg` when unset outside production."""
    pool_max_size: int = 10
    """Connections per process (`INTIME_DB_POOL_SIZE`)."""


@dataclass(frozen=True)
class RedisSettings:
    url: str
    """Redis URL (`REDIS_URL`): broker, sessions, rate limits; embedded under `.data/redis` when unset."""


@dataclass(frozen=True)
class SecuritySettings:
    secret_key: str
    """Signs CSRF tokens (`INTIME_SECRET_KEY`, at least 32 characters)."""
    encryption_keys: tuple[bytes, ...]
    """AES-256-GCM keys for secrets at rest, newest first (`INTIME_ENCRYPTION_KEYS`)."""
    cookie_secure: bool
    """Send cookies over HTTPS only; on whenever the base URL is https."""
    session_ttl_seconds: int = 8 * 3600
    """Idle lifetime of a signed-in session; each request renews it."""
    login_max_failures: int = 10
    """Failed sign-ins allowed per account and per client address within the window."""
    login_window_seconds: int = 15 * 60
    """The window of the sign-in limit."""


@dataclass(frozen=True)
class OutboundSettings:
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default_factory=tuple)
    """Networks the SSRF guard lets through although they are private (`INTIME_OUTBOUND_ALLOW`)."""


@dataclass(frozen=True)
class OAuthSettings:
    refresh_margin_seconds: int = 600
    """Refresh a connection's access token this long before it expires (`INTIME_OAUTH_REFRESH_MARGIN`)."""
    sandbox_url: str | None = None
    """The development Sandbox provider (`INTIME_SANDBOX_URL`; default http://127.0.0.1:8002 outside
    production, and never offered in production)."""


@dataclass(frozen=True)
class EventSettings:
    idempotency_ttl_hours: int = 24
    """How long an `Idempotency-Key` of `POST /api/v1/events` stands for its first event
    (`INTIME_IDEMPOTENCY_TTL_HOURS`); an older key counts as new, and the scheduler prunes it."""


# Kind of record -> (default, cap), in seconds. The environment may set both per kind: the default
# with `INTIME_RETENTION_<KIND>`, the cap (how long an organisation may ask to keep them) with
# `INTIME_RETENTION_<KIND>_MAX`, each a duration such as `30d`, `12h`, `2m` or `90s`.
DAY = 86_400
RETENTION_DEFAULTS: dict[str, tuple[int, int]] = {
    "deliveries": (30 * DAY, 90 * DAY),
    "bodies": (7 * DAY, 30 * DAY),
    "events": (30 * DAY, 90 * DAY),
    "health_checks": (7 * DAY, 30 * DAY),
    "summaries": (90 * DAY, 365 * DAY),
    "jobs": (30 * DAY, 90 * DAY),
    "cleared_dlq": (30 * DAY, 90 * DAY),
    "audit": (365 * DAY, 3 * 365 * DAY),
}


@dataclass(frozen=True)
class RetentionSettings:
    defaults: dict[str, int] = field(default_factory=lambda: {k: v[0] for k, v in RETENTION_DEFAULTS.items()})
    """Seconds each kind of record is kept when the organisation has not chosen (`INTIME_RETENTION_<KIND>`)."""
    caps: dict[str, int] = field(default_factory=lambda: {k: v[1] for k, v in RETENTION_DEFAULTS.items()})
    """The longest an organisation may keep each kind (`INTIME_RETENTION_<KIND>_MAX`)."""
    batch: int = 2000
    """Rows one pruning statement removes at most (`INTIME_PRUNE_BATCH`): the bound on its locks."""
    interval_seconds: float = 5.0
    """Pause between pruning passes when the last one found nothing more (`INTIME_PRUNE_INTERVAL_SECONDS`)."""


@dataclass(frozen=True)
class Settings:
    env: str
    data_dir: Path
    server: ServerSettings
    database: DatabaseSettings
    redis: RedisSettings
    security: SecuritySettings
    outbound: OutboundSettings
    oauth: OAuthSettings = OAuthSettings()
    events: EventSettings = EventSettings()
    retention: RetentionSettings = RetentionSettings()

    @property
    def is_production(self) -> bool:
        return self.env == "production"


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range ({low}..{high})")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY}


def parse_duration(raw: str, name: str) -> int:
    """`30d`, `12h`, `2m`, `90s` (or bare seconds) -> seconds, at least one."""
    text = raw.strip().lower()
    unit = _UNITS.get(text[-1:])
    number = text[:-1] if unit else text
    if not number.isdigit() or len(number) > 9:
        raise SettingsError(f"{name}={raw!r} is not a duration such as 30d, 12h, 2m or 90s")
    seconds = int(number) * (unit or 1)
    if seconds < 1:
        raise SettingsError(f"{name}={raw!r} must be at least one second")
    return seconds


def _retention() -> RetentionSettings:
    defaults, caps = {}, {}
    for kind, (default, cap) in RETENTION_DEFAULTS.items():
        name = f"INTIME_RETENTION_{kind.upper()}"
        raw_default, raw_cap = _env(name), _env(name + "_MAX")
        defaults[kind] = parse_duration(raw_default, name) if raw_default else default
        caps[kind] = parse_duration(raw_cap, name + "_MAX") if raw_cap else max(cap, defaults[kind])
        if defaults[kind] > caps[kind]:
            raise SettingsError(f"{name} ({raw_default}) is longer than its cap {name}_MAX ({raw_cap})")
    raw_interval = _env("INTIME_PRUNE_INTERVAL_SECONDS")
    return RetentionSettings(
        defaults=defaults,
        caps=caps,
        batch=_int("INTIME_PRUNE_BATCH", 2000, 10, 50_000),
        interval_seconds=parse_duration(raw_interval, "INTIME_PRUNE_INTERVAL_SECONDS") if raw_interval else 5.0,
    )


def parse_encryption_keys(raw: str, name: str = "INTIME_ENCRYPTION_KEYS") -> tuple[bytes, ...]:
    keys = []
    for position, item in enumerate(part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            key = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
        except (binascii.Error, ValueError):
            raise SettingsError(f"{name}: key #{position + 1} is not base64") from None
        if len(key) != 32:
            raise SettingsError(
                f"{name}: key #{position + 1} decodes to {len(key)} bytes; AES-256 needs 32 "
                "(make one with: python -c 'import os,base64;print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"
            )
        keys.append(key)
    if not keys:
        raise SettingsError(f"{name} holds no key")
    return tuple(keys)


def parse_networks(raw: str, name: str = "INTIME_OUTBOUND_ALLOW") -> tuple:
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(f"{name}: {item!r} is not an address or CIDR network") from None
    return tuple(networks)


def _check_url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.hostname or parts.path):
        raise SettingsError(f"{name}={value!r} is not a URL of scheme {' or '.join(schemes)}")
    return value


def _required_url(name: str, value: str | None, schemes: tuple[str, ...]) -> str:
    if value is None:
        raise SettingsError(
            f"{name} is not set and the embedded servers are not running: "
            "start them with `./task services` (or `./task dev`), or set it"
        )
    return _check_url(name, value, schemes)


def _dev_keys(data_dir: Path) -> dict[str, str]:
    """Keys generated once per checkout, so dev sessions and encrypted rows survive restarts."""
    path = data_dir / "dev-keys.json"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        generated = {
            "secret_key": secrets.token_urlsafe(48),
            "encryption_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        }
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process won the race; read its keys below
        else:
            with os.fdopen(fd, "w") as handle:
                json.dump(generated, handle)
    for _ in range(50):
        try:
            return json.loads(path.read_text())
        except ValueError:  # the winner is still writing
            time.sleep(0.02)
    raise SettingsError(f"{path} is not valid JSON: delete it to generate new development keys")


def _embedded_urls(data_dir: Path) -> dict[str, str]:
    path = data_dir / "services.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def load_settings() -> Settings:
    env = _env("INTIME_ENV") or "development"
    if env not in ENVIRONMENTS:
        raise SettingsError(f"INTIME_ENV={env!r} must be one of {', '.join(ENVIRONMENTS)}")
    production = env == "production"
    data_dir = Path(_env("INTIME_DATA_DIR") or ROOT / ".data")

    missing = []
    if production:
        for name in (
            "DATABASE_URL",
            "REDIS_URL",
            "INTIME_SECRET_KEY",
            "INTIME_ENCRYPTION_KEYS",
            "INTIME_BASE_URL",
        ):
            if _env(name) is None:
                missing.append(name)
        if missing:
            raise SettingsError("production mode needs these settings, which are not set: " + ", ".join(missing))

    embedded = {} if production else _embedded_urls(data_dir)
    database_url = _required_url(
        "DATABASE_URL", _env("DATABASE_URL") or embedded.get("database_url"), ("postgres", "postgresql")
    )
    redis_url = _required_url("REDIS_URL", _env("REDIS_URL") or embedded.get("redis_url"), ("redis", "rediss", "unix"))

    host = _env("INTIME_HOST") or "127.0.0.1"
    port = _int("INTIME_PORT", 8000, 1, 65535)
    base_url = _env("INTIME_BASE_URL") or f"http://{host}:{port}"
    _check_url("INTIME_BASE_URL", base_url, ("http", "https"))

    keys = {} if production else _dev_keys(data_dir)
    secret_key = _env("INTIME_SECRET_KEY") or keys["secret_key"]
    if len(secret_key) < 32:
        raise SettingsError("INTIME_SECRET_KEY must be at least 32 characters of random text")
    encryption_keys = parse_encryption_keys(_env("INTIME_ENCRYPTION_KEYS") or keys["encryption_key"])

    allow_raw = os.environ.get("INTIME_OUTBOUND_ALLOW")
    if allow_raw is None:
        allow_raw = "" if production else DEV_OUTBOUND_ALLOW

    return Settings(
        env=env,
        data_dir=data_dir,
        server=ServerSettings(host=host, port=port, base_url=base_url.rstrip("/")),
        database=DatabaseSettings(url=database_url, pool_max_size=_int("INTIME_DB_POOL_SIZE", 10, 1, 500)),
        redis=RedisSettings(url=redis_url),
        security=SecuritySettings(
            secret_key=secret_key,
            encryption_keys=encryption_keys,
            cookie_secure=base_url.startswith("https://"),
        ),
        outbound=OutboundSettings(allow=parse_networks(allow_raw)),
        oauth=OAuthSettings(
            refresh_margin_seconds=_int("INTIME_OAUTH_REFRESH_MARGIN", 600, 10, 86_400),
            sandbox_url=None if production else (_env("INTIME_SANDBOX_URL") or "http://127.0.0.1:8002").rstrip("/"),
        ),
        events=EventSettings(idempotency_ttl_hours=_int("INTIME_IDEMPOTENCY_TTL_HOURS", 24, 1, 24 * 30)),
        retention=_retention(),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
