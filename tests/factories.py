"""Small factories for rows a test needs, and helpers to act as a signed-in person."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from app.accounts import services, tokens
from app.accounts.tables import ApiToken, Organization, User

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
