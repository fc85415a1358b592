"""Organisation A never reads or changes organisation B's rows, through pages or the API."""

from __future__ import annotations

from app.accounts.tables import ApiToken
from app.events import services as events
from tests.factories import csrf_headers, sign_in

BASE = "/employee/admin/integrations"


async def test_pages_show_only_the_signed_in_organisations_rows(client, factory):
    a = await factory.user()
    b = await factory.user()
    token_b, _ = await factory.token(b.org)
    event_b = await events.publish(b.org.id, "job.created", {"secret": "of b"})
    event_a = await events.publish(a.org.id, "job.closed", {})
    await sign_in(client, a)
    tokens_page = (await client.get(f"{BASE}/api-tokens")).text
    assert token_b.name not in tokens_page and token_b.token_prefix not in tokens_page
    overview = (await client.get(BASE)).text
    assert str(event_a) in overview and str(event_b) not in overview
    partial = (await client.get(f"{BASE}/partials/recent-events", headers={"HX-Request": "true"})).text
    assert str(event_b) not in partial


async def test_admin_of_a_cannot_revoke_bs_token_by_its_id(client, factory):
    a = await factory.user(role="admin")
    b = await factory.user()
    token_b, secret_b = await factory.token(b.org)
    await sign_in(client, a)
    response = await client.post(f"{BASE}/api-tokens/{token_b.id}/revoke", headers=csrf_headers(client))
    assert response.status_code == 404
    assert (await ApiToken.objects().get(ApiToken.id == token_b.id)).revoked_at is None
    assert (
        await client.post(
            "/api/v1/events",
            json={"type": "job.created", "payload": {}},
            headers={"authorization": f"Bearer {secret_b}"},
        )
    ).status_code == 201


async def test_api_token_publishes_only_into_its_own_organisation(client, factory):
    a = await factory.org()
    b = await factory.org()
    _, token_a = await factory.token(a)
    response = await client.post(
        "/api/v1/events",
        json={"type": "job.created", "payload": {}, "org_id": str(b.id)},
        headers={"authorization": f"Bearer {token_a}"},
    )
    assert response.status_code == 422  # there is no way to name another organisation
    await client.post(
        "/api/v1/events",
        json={"type": "job.created", "payload": {}},
        headers={"authorization": f"Bearer {token_a}"},
    )
    assert len(await events.recent_events(a.id)) == 1
    assert await events.recent_events(b.id) == []
