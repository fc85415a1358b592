"""Every unsafe request carries the CSRF token; viewers can look but not change."""

from __future__ import annotations

from app.accounts.tables import ApiToken
from tests.factories import csrf_headers, sign_in

TOKENS = "/employee/admin/integrations/api-tokens"


async def test_form_post_without_csrf_token_is_refused_with_a_readable_page(client, factory):
    person = await factory.user()
    await sign_in(client, person)
    response = await client.post(TOKENS, data={"name": "x", "scopes": "events:write"})
    assert response.status_code == 403
    assert "This form had expired" in response.text
    assert await ApiToken.count() == 0


async def test_sign_in_form_itself_needs_the_token(client, factory):
    person = await factory.user()
    response = await client.post("/login", data={"email": person.user.email, "password": person.password})
    assert response.status_code == 403


async def test_htmx_request_passes_with_the_token_in_its_header(client, factory):
    person = await factory.user()
    await sign_in(client, person)
    response = await client.post(
        TOKENS,
        data={
            "name": "from htmx",
            "scopes": "events:write",
            "expires_in_days": "",
            "rate_limit_per_hour": "50",
        },
        headers=csrf_headers(client) | {"HX-Request": "true"},
    )
    assert response.status_code == 201
    assert 'data-testid="new-token"' in response.text
    assert await ApiToken.count() == 1


async def test_a_token_from_a_forged_cookie_is_refused(client, factory):
    person = await factory.user()
    await sign_in(client, person)
    forged = "0" * 128
    client.cookies.set("intime_csrf", forged)
    response = await client.post(TOKENS, data={"name": "x", "scopes": "events:write"}, headers={"x-csrftoken": forged})
    assert response.status_code == 403


async def test_viewer_sees_tokens_but_no_create_form_and_cannot_post(client, factory):
    admin = await factory.user(role="admin")
    viewer = await factory.user(org=admin.org, role="viewer")
    row, _ = await factory.token(admin.org)
    await sign_in(client, viewer)
    page = await client.get(TOKENS)
    assert page.status_code == 200
    assert row.name in page.text
    assert 'data-testid="token-submit"' not in page.text and "Revoke" not in page.text
    create = await client.post(TOKENS, data={"name": "x", "scopes": "events:write"}, headers=csrf_headers(client))
    assert create.status_code == 403
    assert "admin role" in create.text
    revoke = await client.post(f"{TOKENS}/{row.id}/revoke", headers=csrf_headers(client))
    assert revoke.status_code == 403
    assert await ApiToken.count().where(ApiToken.revoked_at.is_null()) == 1
