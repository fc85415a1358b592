"""The provider registry: `providers.toml`, plus the endpoints of the two providers whose endpoints are
not fixed (the generic one, entered per organisation, and the development Sandbox, from settings)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.core.settings import get_settings

ENDPOINT_FIELDS = ("authorize_url", "token_url", "revoke_url", "userinfo_url", "issuer", "jwks_url")


@dataclass(frozen=True)
class Endpoints:
    authorize_url: str
    token_url: str
    revoke_url: str = ""
    userinfo_url: str = ""
    issuer: str = ""
    jwks_url: str = ""


@dataclass(frozen=True)
class Provider:
    key: str
    name: str
    oidc: bool = False
    default_scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    authorize_params: dict[str, str] = field(default_factory=dict)
    account_id: str = "sub"
    account_label: str = "email"
    console: str = ""
    configurable: bool = False  # endpoints entered per organisation (the generic provider)
    development: bool = False  # the Sandbox: offered only outside production
    fixed: Endpoints | None = None

    def endpoints(self, entered: dict[str, Any] | None = None) -> Endpoints | None:
        """Where to send the admin and the token requests; None while a generic provider's endpoints
        have not been entered."""
        if self.development:
            base = get_settings().oauth.sandbox_url
            if base is None:
                return None
            return Endpoints(
                authorize_url=f"{base}/authorize",
                token_url=f"{base}/token",
                revoke_url=f"{base}/revoke",
                userinfo_url=f"{base}/userinfo",
                issuer=base,
                jwks_url=f"{base}/jwks",
            )
        if self.configurable:
            entered = entered or {}
            if not entered.get("authorize_url") or not entered.get("token_url"):
                return None
            return Endpoints(**{name: str(entered.get(name) or "") for name in ENDPOINT_FIELDS})
        return self.fixed

    def join_scopes(self, scopes: list[str] | tuple[str, ...]) -> str:
        return self.scope_separator.join(scopes)

    def split_scopes(self, scopes: str | None) -> list[str]:
        if not scopes:
            return []
        return [s for s in scopes.replace(",", " ").split() if s]


@lru_cache(maxsize=1)
def _registry() -> dict[str, Provider]:
    data = tomllib.loads((Path(__file__).parent / "providers.toml").read_text())
    providers = {}
    for key, entry in data.items():
        fixed = None
        if "authorize_url" in entry:
            fixed = Endpoints(**{name: entry.get(name, "") for name in ENDPOINT_FIELDS})
        providers[key] = Provider(
            key=key,
            name=entry["name"],
            oidc=bool(entry.get("oidc", False)),
            default_scopes=tuple(entry.get("default_scopes", ())),
            scope_separator=entry.get("scope_separator", " "),
            authorize_params=dict(entry.get("authorize_params", {})),
            account_id=entry.get("account_id", "sub"),
            account_label=entry.get("account_label", "email"),
            console=entry.get("console", ""),
            configurable=bool(entry.get("configurable", False)),
            development=bool(entry.get("development", False)),
            fixed=fixed,
        )
    return providers


def available() -> list[Provider]:
    """The providers offered here: all of them, less the Sandbox in production."""
    sandbox_on = get_settings().oauth.sandbox_url is not None
    return [p for p in _registry().values() if sandbox_on or not p.development]


def get(key: str) -> Provider | None:
    return next((p for p in available() if p.key == key), None)
