"""Small factories for rows a test needs, and helpers to act as a signed-in person."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

from app.accounts import services, tokens
from app.accounts.tables import ApiToken, Organization, User
from app.core import db
from app.integrations import failover, setup

PASSWORD = "correct-horse-battery"
_counter = itertools.count(1)


@dataclass
class Person:
    org: Organization
    user: User
    password: str = PASSWORD


class Factory:
    async def org(self, slug: str | None = None, name: str | None = None) -> Organization:
        n = next(_counter)
        return await services.create_organization(slug or f"org-{n}", name or f"Organisation {n}")

    async def user(self, org: Organization | None = None, role: str = "admin", email: str | None = None) -> Person:
        org = org or await self.org()
        user = await services.create_user(org, email or f"user{next(_counter)}@example.test", PASSWORD, role)
        return Person(org=org, user=user)

    async def token(self, org: Organization, scopes: str = "events:write", **options) -> tuple[ApiToken, str]:
        return await tokens.create_token(org, f"token {next(_counter)}", scopes, **options)

    async def integration(
        self, org_id: uuid.UUID, name: str = "Email delivery", kind: str = "email", **failover_settings: Any
    ) -> uuid.UUID:
        """An integration made the way the pages and the API make one, with these failover settings."""
        integration_id = await setup.create_integration(org_id, {"name": name, "kind": kind})
        if failover_settings:
            await failover.update_failover(org_id, integration_id, failover_settings)
        return integration_id

    async def provider(
        self, integration_id: uuid.UUID, name: str, endpoint_url: str, health_url: str, **fields: Any
    ) -> uuid.UUID:
        """A provider added the way the pages and the API add one (`fields`: priority, credentials, ...)."""
        async with db.connection() as conn:
            org_id = await conn.fetchval("SELECT org_id FROM integrations WHERE id = $1", integration_id)
        data = {"name": name, "endpoint_url": endpoint_url, "health_url": health_url} | fields
        return await setup.create_provider(org_id, integration_id, data)


def csrf_headers(client) -> dict[str, str]:
    token = client.cookies.get("intime_csrf")
    assert token, "GET a page first: the CSRF cookie comes with any page"
    return {"x-csrftoken": token}


async def sign_in(client, person: Person, password: str | None = None, next_path: str = ""):
    await client.get("/login")
    return await client.post(
        "/login",
        data={
            "email": person.user.email,
            "password": password or person.password,
            "next": next_path,
            "_csrf_token": client.cookies.get("intime_csrf"),
        },
        follow_redirects=False,
    )
