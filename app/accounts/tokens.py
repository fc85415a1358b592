"""API tokens: shown once, stored as a SHA-256 hash with a readable prefix, scoped, expiring, limited.

A token has 240 bits of randomness, so a fast hash is enough: nobody can guess a preimage, and a fast
lookup by hash keeps every API request to one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from app.accounts import ratelimit
from app.accounts.services import AccountError, Principal
from app.accounts.tables import ApiToken, Organization
from app.core import db

SCOPES: dict[str, str] = {
    "events:write": "Publish events",
    "webhooks:read": "Read webhooks, deliveries and the DLQ",
    "webhooks:write": "Create, change, test and replay webhooks",
    "dlq:write": "Retry and clear dead-lettered deliveries",
    "oauth:read": "List OAuth connections",
    "oauth:write": "Connect and disconnect OAuth providers",
    "integrations:read": "Read integrations, health and failover settings",
    "integrations:write": "Change failover settings and trigger failover",
}
# A write scope includes reading the same things.
IMPLIED = {
    "webhooks:write": {"webhooks:read"},
    "dlq:write": {"webhooks:read"},
    "oauth:write": {"oauth:read"},
    "integrations:write": {"integrations:read"},
}
TOKEN_PREFIX = "itk_"  # noqa: S105  (a public marker, not a secret)
DEFAULT_RATE_LIMIT = 1000
MAX_RATE_LIMIT = 1_000_000


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(raw: str | list[str] | tuple[str, ...]) -> list[str]:
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes = sorted({item.strip() for item in items if item.strip()})
    if not scopes:
        raise AccountError("Choose at least one scope.", "scopes")
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise AccountError(f"Unknown scope {', '.join(unknown)}; the scopes are {', '.join(SCOPES)}.", "scopes")
    return scopes


def effective_scopes(scopes: list[str]) -> frozenset[str]:
    granted = set(scopes)
    for scope in scopes:
        granted |= IMPLIED.get(scope, set())
    return frozenset(granted)


async def create_token(
    org: Organization | uuid.UUID,
    name: str,
    scopes: str | list[str],
    *,
    expires_in_days: int | None = None,
    rate_limit_per_hour: int = DEFAULT_RATE_LIMIT,
    created_by: uuid.UUID | None = None,
) -> tuple[ApiToken, str]:
    """Return the stored row and the token itself, which exists only in this return value."""
    name = name.strip()
    if not name or len(name) > 100:
        raise AccountError("Give the token a name of 1-100 characters, e.g. the service that uses it.", "name")
    scope_list = parse_scopes(scopes)
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise AccountError("Expiry is between 1 and 3650 days, or never.", "expires_in_days")
    if not 1 <= rate_limit_per_hour <= MAX_RATE_LIMIT:
        raise AccountError(f"The hourly limit is between 1 and {MAX_RATE_LIMIT:,}.", "rate_limit_per_hour")
    token = TOKEN_PREFIX + secrets.token_urlsafe(30)
    row = ApiToken(
        org=org.id if isinstance(org, Organization) else org,
        name=name,
        token_prefix=token[:12],
        token_hash=hash_token(token),
        scopes=scope_list,
        expires_at=datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None,
        rate_limit_per_hour=rate_limit_per_hour,
        created_by=created_by,
    )
    await row.save()
    return row, token


async def list_tokens(org_id: uuid.UUID) -> list[dict]:
    rows = (
        await ApiToken.select(*ApiToken.all_columns(exclude=[ApiToken.token_hash]))
        .where(ApiToken.org == org_id)
        .order_by(ApiToken.created_at, ascending=False)
    )
    now = datetime.now(UTC)
    for row in rows:
        expired = row["expires_at"] is not None and row["expires_at"] <= now
        row["state"] = "revoked" if row["revoked_at"] else "expired" if expired else "active"
    return rows


async def revoke_token(org_id: uuid.UUID, token_id: uuid.UUID) -> bool:
    result = (
        await ApiToken.update({ApiToken.revoked_at: datetime.now(UTC)})
        .where((ApiToken.id == token_id) & (ApiToken.org == org_id) & ApiToken.revoked_at.is_null())
        .returning(ApiToken.id)
    )
    return bool(result)


class TokenRejected(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# One round trip per API request: the token with its organisation, and last_used_at touched in the
# same statement (a data-modifying CTE always runs) at most once a minute, only for a usable token.
_AUTHENTICATE = """
WITH token AS (
    SELECT t.id, t.scopes, t.expires_at, t.revoked_at, t.rate_limit_per_hour, t.last_used_at,
           o.id AS org_id, o.slug AS org_slug, o.name AS org_name
    FROM api_tokens t JOIN organizations o ON o.id = t.org_id
    WHERE t.token_hash = $1
), touched AS (
    UPDATE api_tokens SET last_used_at = now()
    FROM token
    WHERE api_tokens.id = token.id AND token.revoked_at IS NULL
      AND (token.expires_at IS NULL OR token.expires_at > now())
      AND (token.last_used_at IS NULL OR token.last_used_at < now() - interval '1 minute')
)
SELECT id, scopes, expires_at, revoked_at, rate_limit_per_hour, org_id, org_slug, org_name FROM token
"""


async def principal_for_token(token: str) -> tuple[Principal, int]:
    """Authenticate a Bearer token; returns the principal and its hourly limit, or raises TokenRejected."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise TokenRejected("The bearer token is not an InTime API token.")
    async with db.connection() as conn:
        row = await conn.fetchrow(_AUTHENTICATE, hash_token(token))
    if row is None:
        raise TokenRejected("The bearer token is not valid.")
    if row["revoked_at"] is not None:
        raise TokenRejected("The bearer token was revoked.")
    if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
        raise TokenRejected("The bearer token has expired.")
    principal = Principal(
        org_id=row["org_id"],
        org_slug=row["org_slug"],
        org_name=row["org_name"],
        role="token",
        token_id=row["id"],
        scopes=effective_scopes(row["scopes"]),
    )
    return principal, row["rate_limit_per_hour"]


async def charge_request(token_id: uuid.UUID, limit_per_hour: int, amount: int = 1) -> ratelimit.Window:
    """Count `amount` requests against the token's hourly limit (a batch counts each of its events)."""
    return await ratelimit.hit(f"token:{token_id}", limit_per_hour, 3600, amount)
