"""Setting integrations up: create, change and remove integrations and their providers. The one way to
make them: the pages, the API, the demo seed and the tests all come through here, so none of them can
store what an admin could not.

Every input is checked field by field and nothing is saved unless all of it is good (`fields.invalid`
answers 422 with the field errors). A provider is authorised by sealed credentials (sent as a Bearer
token; write-only: never shown again) or by one of the organisation's OAuth connections, not both.

Traffic never silently points at a provider that cannot take it: disabling or removing the active
provider moves traffic to the next usable one in the same transaction, as an audited manual failover.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg

from app.core import db, fields
from app.core.crypto import get_keyring
from app.core.guard import OutboundRefused, check_url
from app.core.problems import NotFound
from app.integrations.failover import next_usable, switch
from app.integrations.state import ProviderView, active_of, credentials_context, load, owned

# What an integration does; the pages offer these, the API accepts their keys.
KINDS = {
    "email": "Email delivery",
    "sms": "SMS",
    "calendar": "Calendar",
    "job_board": "Job-board posting",
    "background_check": "Background checks",
    "hris": "HRIS sync",
    "video": "Video interviews",
    "esignature": "E-signature",
    "other": "Other",
}
INTEGRATION_FIELDS = {"name", "kind", "description"}
PROVIDER_FIELDS = {
    "name",
    "kind",
    "priority",
    "endpoint_url",
    "health_url",
    "credentials",
    "oauth_connection_id",
    "enabled",
    "rate_limit_per_hour",
}
MAX_PRIORITY = 1000
MAX_RATE_LIMIT = 100_000_000
CREDENTIALS_MAX = 4096
CREDENTIALS_RE = re.compile(rf"[\x21-\x7e](?:[\x20-\x7e]{{0,{CREDENTIALS_MAX - 2}}}[\x21-\x7e])?")


# --- Integrations -------------------------------------------------------------------------------------


def _integration_columns(data: Any, *, partial: bool) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise fields.invalid("integration", {"body": "is a JSON object"})
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    if "name" in data or not partial:
        name = fields.text(data, "name", errors, "Give the integration a name of 1-100 characters.", limit=100)
        if name is not None:
            out["name"] = name
    if "kind" in data or not partial:
        if not isinstance(data.get("kind"), str) or data["kind"] not in KINDS:
            errors["kind"] = f"one of {', '.join(KINDS)}"
        else:
            out["kind"] = data["kind"]
    if "description" in data:
        description = fields.text(data, "description", errors, "At most 2000 characters.", limit=2000, required=False)
        if description is not None:
            out["description"] = description
    fields.unknown(data, INTEGRATION_FIELDS, errors)
    if errors:
        raise fields.invalid("integration", errors)
    return out


def _name_taken(what: str) -> Exception:
    return fields.invalid(what, {"name": f"another {what} of this name exists: choose another"})


async def create_integration(org_id: uuid.UUID, data: Any) -> uuid.UUID:
    """A new integration with the default failover settings (change them with failover.update_failover)."""
    columns = _integration_columns(data, partial=False)
    integration_id = uuid.uuid4()
    try:
        async with db.connection() as conn:
            await conn.execute(
                "INSERT INTO integrations (id, org_id, name, kind, description, created_at, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, now(), now())",
                integration_id,
                org_id,
                columns["name"],
                columns["kind"],
                columns.get("description", ""),
            )
    except asyncpg.UniqueViolationError:
        raise _name_taken("integration") from None
    return integration_id


async def update_integration(org_id: uuid.UUID, integration_id: uuid.UUID, data: Any) -> None:
    columns = _integration_columns(data, partial=True)
    async with db.connection() as conn:
        await owned(conn, org_id, integration_id)
        if columns:
            await _update_row(conn, "integrations", integration_id, columns, "integration")


async def _update_row(conn, table: str, row_id: uuid.UUID, columns: dict[str, Any], what: str) -> None:
    """Write checked columns (their names come from this module, never from input)."""
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(columns, start=2))
    try:
        await conn.execute(
            f"UPDATE {table} SET {assignments}, updated_at = now() WHERE id = $1",  # noqa: S608
            row_id,
            *columns.values(),
        )
    except asyncpg.UniqueViolationError:
        raise _name_taken(what) from None


async def delete_integration(org_id: uuid.UUID, integration_id: uuid.UUID) -> str:
    """Removes it with its providers, health history and audit trail; returns its name."""
    async with db.connection() as conn:
        name = await conn.fetchval(
            "DELETE FROM integrations WHERE id = $1 AND org_id = $2 RETURNING name", integration_id, org_id
        )
    if name is None:
        raise NotFound("No such integration in this organisation.")
    return name


# --- Providers ----------------------------------------------------------------------------------------


async def _provider_columns(conn, org_id: uuid.UUID, data: Any, *, partial: bool) -> dict[str, Any]:
    """The columns to write for a provider; `credentials` comes back as plain text (sealed by the caller).

    Credentials are write-only: absent (or, from a form, empty) keeps what is stored; null clears them.
    Setting credentials unlinks the OAuth connection and linking a connection clears credentials."""
    if not isinstance(data, dict):
        raise fields.invalid("provider", {"body": "is a JSON object"})
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}

    def present(field: str) -> bool:
        return field in data or not partial

    if present("name"):
        name = fields.text(data, "name", errors, "Give the provider a name of 1-100 characters.", limit=100)
        if name is not None:
            out["name"] = name
    if "kind" in data:
        kind = fields.text(data, "kind", errors, "At most 40 characters, e.g. sendgrid.", limit=40, required=False)
        if kind is not None:
            out["kind"] = kind
    if "priority" in data:
        priority = fields.whole_number(data, "priority", errors, 0, MAX_PRIORITY)
        if priority is not None:
            out["priority"] = priority
    for field, what in (("endpoint_url", "the URL calls go to"), ("health_url", "the URL health checks GET")):
        if present(field):
            url = fields.text(data, field, errors, f"Enter {what}.", limit=4096)
            if url is not None:
                try:
                    out[field] = await check_url(url)
                except OutboundRefused as refused:
                    errors[field] = str(refused)
    if "enabled" in data:
        enabled = fields.boolean(data, "enabled", errors)
        if enabled is not None:
            out["enabled"] = enabled
    if "rate_limit_per_hour" in data:
        if data["rate_limit_per_hour"] in (None, ""):
            out["rate_limit_per_hour"] = None
        else:
            limit = fields.whole_number(data, "rate_limit_per_hour", errors, 1, MAX_RATE_LIMIT)
            if limit is not None:
                out["rate_limit_per_hour"] = limit
    credentials = data.get("credentials")
    link = data.get("oauth_connection_id")
    if credentials not in (None, "") and link not in (None, ""):
        errors["oauth_connection_id"] = "a provider uses credentials or an OAuth connection, not both"
    elif "credentials" in data and credentials != "":
        if credentials is None:
            out["credentials"] = None
        elif not isinstance(credentials, str) or not CREDENTIALS_RE.fullmatch(credentials):
            # It travels in an HTTP header: visible ASCII only (spaces inside allowed), one line.
            errors["credentials"] = (
                f"letters, digits and ASCII punctuation on one line, at most {CREDENTIALS_MAX:,} characters"
            )
        else:
            out["credentials"] = credentials
            out["oauth_connection_id"] = None
    if "oauth_connection_id" in data and not errors.get("oauth_connection_id") and link != "":
        if link is None:
            out["oauth_connection_id"] = None
        else:
            connection_id = fields.as_uuid(link)
            row = connection_id and await conn.fetchrow(
                "SELECT status FROM oauth_connections WHERE id = $1 AND org_id = $2", connection_id, org_id
            )
            if not row:
                errors["oauth_connection_id"] = "is not an OAuth connection of this organisation"
            elif row["status"] == "revoked":
                errors["oauth_connection_id"] = "was disconnected: connect it again first"
            else:
                out["oauth_connection_id"] = connection_id
                out["credentials"] = None
    fields.unknown(data, PROVIDER_FIELDS, errors)
    if errors:
        raise fields.invalid("provider", errors)
    return out


def _sealed(provider_id: uuid.UUID, columns: dict[str, Any]) -> dict[str, Any]:
    if columns.get("credentials"):
        columns["credentials"] = get_keyring().seal(columns["credentials"], credentials_context(provider_id))
    return columns


async def create_provider(org_id: uuid.UUID, integration_id: uuid.UUID, data: Any) -> uuid.UUID:
    """Adds a provider; without a priority it goes last (after the others, in steps of 10)."""
    async with db.connection() as conn:
        await owned(conn, org_id, integration_id)
    provider_id = uuid.uuid4()
    columns = _sealed(provider_id, await validate_provider(org_id, data, partial=False))
    async with db.connection() as conn, conn.transaction():
        integration, views = await _locked(conn, org_id, integration_id)
        if "priority" not in columns:
            last = max((v.row["priority"] for v in views), default=None)
            columns["priority"] = min(MAX_PRIORITY, (last + 10) if last is not None else 10)
        new = {"id": provider_id, "enabled": columns.get("enabled", True), "priority": columns["priority"]}
        await _pin_traffic(conn, integration, views, [v.row for v in views] + [new | {"created_at": None}])
        names = ["id", "integration_id", "org_id", *columns]
        values = [provider_id, integration_id, org_id, *columns.values()]
        placeholders = ", ".join(f"${n}" for n in range(1, len(values) + 1))
        try:
            await conn.execute(
                f"INSERT INTO integration_providers ({', '.join(names)}, created_at, updated_at) "  # noqa: S608
                f"VALUES ({placeholders}, now(), now())",
                *values,
            )
        except asyncpg.UniqueViolationError:
            raise _name_taken("provider") from None
    return provider_id


async def validate_provider(org_id: uuid.UUID, data: Any, *, partial: bool) -> dict[str, Any]:
    """Checked before any lock is taken: a URL's check resolves its host, which may take seconds."""
    async with db.connection() as conn:
        return await _provider_columns(conn, org_id, data, partial=partial)


async def _locked(conn, org_id: uuid.UUID, integration_id: uuid.UUID) -> tuple[Any, list[ProviderView]]:
    """The integration and its providers, locked against evaluate() and other changes till commit."""
    integration, views = await load(conn, integration_id, lock=True)
    if integration["org_id"] != org_id:
        raise NotFound("No such integration in this organisation.")
    return integration, views


async def _pin_traffic(conn, integration, views: list[ProviderView], rows_after: list[dict[str, Any]]) -> None:
    """Before a change of providers (`rows_after`: them as they will be): traffic stays where it goes
    now (a new provider first in priority, or one re-enabled, becomes the primary but takes traffic
    only by an audited failback), and if the primary changes, its healthy time starts afresh."""
    active = active_of(integration, views)
    new_primary = _primary_id([v.row for v in views]) != _primary_id(rows_after)
    await conn.execute(
        "UPDATE integrations SET active_provider_id = $2, "
        "primary_healthy_since = CASE WHEN $3 THEN NULL ELSE primary_healthy_since END WHERE id = $1",
        integration["id"],
        active.id if active else None,
        new_primary,
    )


def _primary_id(rows: list[dict[str, Any]]) -> uuid.UUID | None:
    """The first enabled provider by priority, then age (a row not yet created, created_at None, last)."""
    enabled = [r for r in rows if r["enabled"]]
    enabled.sort(key=lambda r: (r["priority"], r["created_at"] is None, r["created_at"] or 0))
    return enabled[0]["id"] if enabled else None


async def check_owned_provider(org_id: uuid.UUID, integration_id: uuid.UUID, provider_id: uuid.UUID) -> None:
    async with db.connection() as conn:
        found = await conn.fetchval(
            "SELECT 1 FROM integration_providers WHERE id = $1 AND integration_id = $2 AND org_id = $3",
            provider_id,
            integration_id,
            org_id,
        )
    if not found:
        raise NotFound("No such provider in this integration.")


async def update_provider(
    org_id: uuid.UUID, integration_id: uuid.UUID, provider_id: uuid.UUID, data: Any, actor: str
) -> None:
    await check_owned_provider(org_id, integration_id, provider_id)
    columns = _sealed(provider_id, await validate_provider(org_id, data, partial=True))
    if not columns:
        return
    async with db.connection() as conn, conn.transaction():
        integration, views = await _locked(conn, org_id, integration_id)
        current = next((v for v in views if v.id == provider_id), None)
        if current is None:
            raise NotFound("No such provider in this integration.")
        columns["credentials_rejected_at"] = None  # an admin has looked at it: it may take traffic again
        changed = current.row | columns
        await _pin_traffic(conn, integration, views, [changed if v.id == provider_id else v.row for v in views])
        if columns.get("enabled") is False and current.row["enabled"]:
            await _move_traffic_off(conn, integration, views, current, f"{current.row['name']} was disabled", actor)
        await _update_row(conn, "integration_providers", provider_id, columns, "provider")


async def delete_provider(org_id: uuid.UUID, integration_id: uuid.UUID, provider_id: uuid.UUID, actor: str) -> str:
    """Removes a provider with its health history; traffic moves off it first. Returns its name."""
    async with db.connection() as conn, conn.transaction():
        integration, views = await _locked(conn, org_id, integration_id)
        current = next((v for v in views if v.id == provider_id), None)
        if current is None:
            raise NotFound("No such provider in this integration.")
        await _pin_traffic(conn, integration, views, [v.row for v in views if v.id != provider_id])
        if current.row["enabled"]:
            await _move_traffic_off(conn, integration, views, current, f"{current.row['name']} was removed", actor)
        await conn.execute("DELETE FROM integration_providers WHERE id = $1", provider_id)
    return current.row["name"]


async def _move_traffic_off(conn, integration, views: list[ProviderView], leaving: ProviderView, reason, actor):
    """If traffic goes to `leaving`, switch it to the next usable provider (or, if none is usable, the
    next enabled one: better a provider that may recover than none), audited as a manual switch."""
    active = active_of(integration, views)
    if active is None or active.id != leaving.id:
        return
    others = [v for v in views if v.id != leaving.id]
    target = next_usable(views, after=leaving) or next((v for v in others if v.row["enabled"]), None)
    if target is None:
        await conn.execute(
            "UPDATE integrations SET active_provider_id = NULL, updated_at = now() WHERE id = $1", integration["id"]
        )
        return
    primary = next(v for v in views if v.row["enabled"])
    kind = "failback" if target.id == primary.id else "failover"
    await switch(conn, integration, leaving, target, kind, "manual", reason, actor)
