"""Configuration: production refuses to start without its settings; development makes its own keys."""

from __future__ import annotations

import base64
import json

import pytest

from app.core.settings import SettingsError, load_settings

GOOD_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
PRODUCTION = {
    "INTIME_ENV": "production",
    "DATABASE_URL": "postgresql://intime@db.example/intime",
    "REDIS_URL": "redis://cache.example:6379/0",
    "INTIME_SECRET_KEY": "x" * 40,
    "INTIME_ENCRYPTION_KEYS": GOOD_KEY,
    "INTIME_BASE_URL": "https://integrations.example",
}


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in (
        "DATABASE_URL",
        "REDIS_URL",
        "INTIME_SECRET_KEY",
        "INTIME_ENCRYPTION_KEYS",
        "INTIME_BASE_URL",
        "INTIME_OUTBOUND_ALLOW",
        "INTIME_PORT",
        "INTIME_ENV",
        "INTIME_IDEMPOTENCY_TTL_HOURS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INTIME_DATA_DIR", str(tmp_path))

    def apply(values: dict[str, str]) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return apply


def test_production_names_every_missing_setting(env):
    env({"INTIME_ENV": "production", "DATABASE_URL": PRODUCTION["DATABASE_URL"]})
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    for name in ("REDIS_URL", "INTIME_SECRET_KEY", "INTIME_ENCRYPTION_KEYS", "INTIME_BASE_URL"):
        assert name in message
    assert "DATABASE_URL" not in message


def test_production_with_everything_set_starts_with_secure_cookies_and_no_outbound_allowance(env):
    env(PRODUCTION)
    settings = load_settings()
    assert settings.is_production
    assert settings.security.cookie_secure
    assert settings.outbound.allow == ()
    assert settings.events.idempotency_ttl_hours == 24


def test_idempotency_keys_live_as_long_as_configured(env):
    env(PRODUCTION | {"INTIME_IDEMPOTENCY_TTL_HOURS": "48"})
    assert load_settings().events.idempotency_ttl_hours == 48


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("INTIME_ENCRYPTION_KEYS", "c2hvcnQ=", "decodes to 5 bytes"),
        ("INTIME_ENCRYPTION_KEYS", "!!!not-base64!!!", "not base64"),
        ("INTIME_SECRET_KEY", "short", "at least 32 characters"),
        ("INTIME_PORT", "eighty", "not a whole number"),
        ("INTIME_PORT", "70000", "out of range"),
        ("DATABASE_URL", "mysql://db/x", "not a URL of scheme postgres"),
        ("INTIME_OUTBOUND_ALLOW", "10.0.0.0/33", "not an address or CIDR"),
        ("INTIME_ENV", "staging", "must be one of"),
        ("INTIME_IDEMPOTENCY_TTL_HOURS", "0", "out of range"),
    ],
)
def test_malformed_setting_is_named_with_the_reason(env, name, value, expected):
    env(PRODUCTION | {name: value})
    with pytest.raises(SettingsError, match=expected) as error:
        load_settings()
    assert name in str(error.value) or name == "INTIME_ENV"


def test_development_generates_keys_once_and_reuses_them(env, tmp_path):
    env({"DATABASE_URL": "postgresql://localhost/x", "REDIS_URL": "redis://localhost/0"})
    first = load_settings()
    second = load_settings()
    assert first.security.secret_key == second.security.secret_key
    assert first.security.encryption_keys == second.security.encryption_keys
    stored = json.loads((tmp_path / "dev-keys.json").read_text())
    assert stored["secret_key"] == first.security.secret_key
    assert [str(n) for n in first.outbound.allow] == ["127.0.0.0/8", "::1/128"]


def test_development_without_servers_says_how_to_start_them(env):
    with pytest.raises(SettingsError, match=r"./task services"):
        load_settings()


def test_development_reads_the_embedded_servers_urls(env, tmp_path):
    (tmp_path / "services.json").write_text(
        json.dumps(
            {
                "database_url": "postgresql://postgres@127.0.0.1:5999/intime",
                "redis_url": "redis://127.0.0.1:6999/0",
            }
        )
    )
    settings = load_settings()
    assert settings.database.url.endswith(":5999/intime")
    assert settings.redis.url == "redis://127.0.0.1:6999/0"
