"""API tokens: shown once, stored hashed, scoped, expiring, revocable, rate-limited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.accounts.tables import ApiToken
from app.accounts.tokens import hash_token
from tests.factories import csrf_headers, sign_in

TOKENS = "/employee/admin/integrations/api-tokens"
EVENT = {"type": "job.created", "payload": {"job_id": "j-1"}}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_token_made_on_the_page_is_shown_once_and_stored_only_as_a_hash(client, factory):
    person = await factory.user()
    await sign_in(client, person)
    created = await client.post(
        TOKENS,
        data={
            "name": "ATS sync",
            "scopes": ["events:write", "webhooks:read"],
            "expires_in_days": "30",
            "rate_limit_per_hour": "500",
            "_csrf_token": client.cookies.get("intime_csrf"),
        },
    )
    assert created.status_code == 201
    token = "itk_" + created.text.split('value="itk_')[1].split('"')[0]
    row = await ApiToken.objects().first()
    assert row.token_hash == hash_token(token) and token not in (row.token_hash, row.token_prefix)
    assert sorted(row.scopes) == ["events:write", "webhooks:read"]
    assert row.rate_limit_per_hour == 500
    assert timedelta(days=29) < row.expires_at - datetime.now(UTC) <= timedelta(days=30)
    # The token works, and the page never shows it again
    assert (await client.post("/api/v1/events", json=EVENT, headers=bearer(token))).status_code == 201
    assert token not in (await client.get(TOKENS)).text


async def test_bad_token_form_input_is_explained_beside_each_field(client, factory):
    person = await factory.user()
    await sign_in(client, person)
    response = await client.post(
        TOKENS,
        data={"name": "", "expires_in_days": "soon", "rate_limit_per_hour": "0"},
        headers=csrf_headers(client),
    )
    assert response.status_code == 422
    assert "Enter a whole number." in response.text
    response = await client.post(TOKENS, data={"name": "ok", "rate_limit_per_hour": "10"}, headers=csrf_headers(client))
    assert response.status_code == 422 and "Choose at least one scope." in response.text
    response = await client.post(
        TOKENS,
        data={"name": "ok", "scopes": "events:write", "rate_limit_per_hour": "0"},
        headers=csrf_headers(client),
    )
    assert response.status_code == 422 and "hourly limit is between 1 and" in response.text
    assert await ApiToken.count() == 0


async def test_missing_malformed_and_unknown_tokens_get_401_problems(client):
    for headers, detail in (
        ({}, "Authorization: Bearer"),
        ({"authorization": "Basic abc"}, "Authorization: Bearer"),
        (bearer("itk_notarealtoken"), "not valid"),
        (bearer("ghp_something"), "not an InTime API token"),
    ):
        response = await client.post("/api/v1/events", json=EVENT, headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert detail in response.json()["detail"]


async def test_scopes_are_enforced_and_write_implies_read(client, factory):
    org = await factory.org()
    _, reader = await factory.token(org, scopes="webhooks:read")
    response = await client.post("/api/v1/events", json=EVENT, headers=bearer(reader))
    assert response.status_code == 403
    assert response.json()["detail"] == "The token lacks the scope events:write."
    from app.accounts.tokens import effective_scopes

    assert "webhooks:read" in effective_scopes(["webhooks:write"])


async def test_expired_and_revoked_tokens_stop_working(client, factory):
    person = await factory.user()
    row, token = await factory.token(person.org)
    assert (await client.post("/api/v1/events", json=EVENT, headers=bearer(token))).status_code == 201
    await ApiToken.update({ApiToken.expires_at: datetime.now(UTC) - timedelta(seconds=1)}).where(ApiToken.id == row.id)
    expired = await client.post("/api/v1/events", json=EVENT, headers=bearer(token))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]

    row2, token2 = await factory.token(person.org)
    await sign_in(client, person)
    revoke = await client.post(f"{TOKENS}/{row2.id}/revoke", headers=csrf_headers(client) | {"HX-Request": "true"})
    assert revoke.status_code == 200 and "revoked" in revoke.text
    revoked = await client.post("/api/v1/events", json=EVENT, headers=bearer(token2))
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]


async def test_hourly_limit_answers_429_with_retry_after(client, factory):
    org = await factory.org()
    _, token = await factory.token(org, rate_limit_per_hour=3)
    for _ in range(3):
        assert (await client.post("/api/v1/events", json=EVENT, headers=bearer(token))).status_code == 201
    limited = await client.post("/api/v1/events", json=EVENT, headers=bearer(token))
    assert limited.status_code == 429
    assert 0 < int(limited.headers["retry-after"]) <= 3600
    assert "limit of 3 requests per hour" in limited.json()["detail"]
    # Another token of the same organisation has its own budget
    _, other = await factory.token(org)
    assert (await client.post("/api/v1/events", json=EVENT, headers=bearer(other))).status_code == 201


async def test_use_is_recorded_as_last_used(client, factory):
    org = await factory.org()
    row, token = await factory.token(org)
    assert row.last_used_at is None
    await client.get("/api/v1/event-types", headers=bearer(token))
    assert (await ApiToken.objects().get(ApiToken.id == row.id)).last_used_at is not None
