"""OAuth connections against the run's Sandbox provider (a real Authlib authorization server on
127.0.0.1): the connect flow and its failures, the vault, refresh, needs_reauth, disconnect, rotation."""

from __future__ import annotations

import asyncio
import html
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.core import crypto, db
from app.core.redis import get_redis
from app.oauth import clients, disconnect, refresh, vault
from app.oauth.errors import TokenUnavailable
from tests.conftest import SANDBOX_SECRET
from tests.factories import sign_in
from tests.pipeline import wait_until

PANEL = "/employee/admin/integrations/oauth"
APP = "http://127.0.0.1:8000"


def form(client, **fields) -> dict:
    return {"_csrf_token": client.cookies.get("intime_csrf")} | fields


async def admin_with_sandbox(client, factory):
    admin = await factory.user()
    await sign_in(client, admin)
    await clients.save_client(admin.org.id, "sandbox", {"client_id": "intime-test", "client_secret": SANDBOX_SECRET})
    return admin


async def authorize(url: str, decision: str = "allow") -> str:
    """Play the admin at the provider: open the consent page, press Allow or Deny; the redirect back."""
    async with httpx.AsyncClient() as browser:
        consent = await browser.get(url)
        assert consent.status_code == 200, consent.text
        fields = {
            html.unescape(k): html.unescape(v) for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', consent.text)
        }
        answer = await browser.post(url.split("?")[0], data=fields | {"decision": decision})
    assert answer.status_code in (302, 303), answer.text
    return answer.headers["location"]


async def start(client) -> str:
    response = await client.post(f"{PANEL}/sandbox/connect", data=form(client))
    assert response.status_code in (302, 303), response.text
    return response.headers["location"]


async def come_back(client, location: str) -> httpx.Response:
    assert location.startswith(APP + "/oauth/sandbox/callback?")
    return await client.get(location.removeprefix(APP))


async def connect(client) -> uuid.UUID:
    returned = await come_back(client, await authorize(await start(client)))
    assert returned.status_code in (302, 303) and returned.headers["location"] == PANEL
    async with db.connection() as conn:
        return await conn.fetchval("SELECT id FROM oauth_connections ORDER BY created_at DESC LIMIT 1")


async def row(connection_id):
    async with db.connection() as conn:
        return await conn.fetchrow("SELECT * FROM oauth_connections WHERE id = $1", connection_id)


async def test_an_admin_connects_the_sandbox_and_the_panel_shows_the_account(client, factory, sandbox):
    await admin_with_sandbox(client, factory)
    location = await start(client)
    assert location.startswith(sandbox.url + "/authorize?")
    assert "code_challenge_method=S256" in location and "nonce=" in location and "state=" in location
    connection_id = await connect_from(client, location)
    page = (await client.get(PANEL)).text
    assert "Connected Sandbox (development) as ada@sandbox.test." in page
    assert 'data-testid="connection-status">active' in page
    saved = await row(connection_id)
    assert saved["account_id"] == "sandbox-user-1" and saved["status"] == "active"
    assert saved["expires_at"] > datetime.now(UTC) + timedelta(seconds=100)
    assert saved["next_refresh_at"] is not None
    # The token works at the provider, and nothing in the pages or the API shows it.
    token = await refresh.get_access_token(connection_id)
    async with httpx.AsyncClient() as http:
        me = await http.get(f"{sandbox.url}/api/me", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert token not in page
    async with db.connection() as conn:
        history = await conn.fetch("SELECT kind FROM oauth_connection_events WHERE connection_id = $1", connection_id)
        published = await conn.fetchval("SELECT count(*) FROM events WHERE event_type = 'oauth.connection.connected'")
    assert [h["kind"] for h in history] == ["connected"] and published == 1


async def connect_from(client, location: str) -> uuid.UUID:
    returned = await come_back(client, await authorize(location))
    assert returned.status_code in (302, 303)
    async with db.connection() as conn:
        return await conn.fetchval("SELECT id FROM oauth_connections ORDER BY created_at DESC LIMIT 1")


async def test_tokens_are_unreadable_in_the_database_without_the_key(client, factory, sandbox):
    await admin_with_sandbox(client, factory)
    connection_id = await connect(client)
    saved = await row(connection_id)
    token = await refresh.get_access_token(connection_id)
    for column in ("access_token", "refresh_token"):
        assert saved[column].startswith("v1.") and token not in saved[column]
    other = crypto.KeyRing((b"\x01" * 32,))
    with pytest.raises(crypto.DecryptionError):
        other.open(saved["access_token"], f"oauth-connection:{connection_id}:access")
    # Bound to its row: the same value does not open as another connection's token.
    with pytest.raises(crypto.DecryptionError):
        crypto.get_keyring().open(saved["access_token"], f"oauth-connection:{uuid.uuid4()}:access")


async def test_a_tampered_state_is_refused_and_nothing_is_connected(client, factory, sandbox):
    await admin_with_sandbox(client, factory)
    location = await authorize(await start(client))
    forged = re.sub(r"state=[^&]+", "state=forged-state", location)
    response = await come_back(client, forged)
    assert response.headers["location"] == PANEL
    page = (await client.get(PANEL)).text
    assert "expired or was already used" in page
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM oauth_connections") == 0


async def test_a_callback_works_once(client, factory, sandbox):
    await admin_with_sandbox(client, factory)
    location = await authorize(await start(client))
    await come_back(client, location)
    await come_back(client, location)
    assert "expired or was already used" in (await client.get(PANEL)).text


async def test_a_tampered_pkce_verifier_is_refused_by_the_provider(client, factory, sandbox):
    await admin_with_sandbox(client, factory)
    location = await authorize(await start(client))
    state = re.search(r"state=([^&]+)", location).group(1)
    key = f"intime:oauth:state:{state}"
    record = json.loads(await get_redis().get(key))
    await get_redis().set(key, json.dumps(record | {"verifier": "x" * 64}), ex=60)
    await come_back(client, location)
    page = (await client.get(PANEL)).text
    assert "refused to issue tokens (invalid_grant" in page
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM oauth_connections") == 0


async def test_a_flow_started_in_another_session_is_refused(client, factory, sandbox, app):
    await admin_with_sandbox(client, factory)
    location = await authorize(await start(client))
    other = await factory.user(org=None, email="other@example.test")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP) as elsewhere:
        await sign_in(elsewhere, other)
        response = await come_back(elsewhere, location)
        assert response.headers["location"] == PANEL
        assert "started in another browser session" in (await elsewhere.get(PANEL)).text
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM oauth_connections") == 0


async def test_declining_at_the_provider_says_so(client, factory, sandbox):
    await admin_with_sandbox(client, factory)
    await come_back(client, await authorize(await start(client), decision="deny"))
    assert "Access was declined at Sandbox (development)" in (await client.get(PANEL)).text


async def test_a_provider_without_client_settings_explains_what_to_do(client, factory, sandbox):
    admin = await factory.user()
    await sign_in(client, admin)
    response = await client.post(f"{PANEL}/sandbox/connect", data=form(client))
    assert response.headers["location"] == PANEL
    assert "not set up for this organisation yet" in (await client.get(PANEL)).text


async def test_bad_client_settings_are_explained_beside_the_fields(client, factory, sandbox):
    admin = await factory.user()
    await sign_in(client, admin)
    response = await client.post(
        f"{PANEL}/clients/generic", data=form(client, client_id="", authorize_url="ftp://x", token_url="")
    )
    assert response.status_code == 422
    assert "Enter the client id" in response.text and "Required for a provider of your own" in response.text
    assert "Enter the client secret" in response.text
    missing = await client.post(f"{PANEL}/clients/nope", data=form(client, client_id="a", client_secret="b"))
    assert missing.status_code == 404


async def test_the_scheduler_refreshes_before_expiry_and_saves_the_rotated_refresh_token(
    client, factory, sandbox, worker_process, scheduler
):
    await admin_with_sandbox(client, factory)
    await sandbox.control(access_token_ttl=4)
    connection_id = await connect(client)
    first = await row(connection_id)
    before = await sandbox.stats()

    async def refreshed():
        current = await row(connection_id)
        return current if current["last_refreshed_at"] is not None else None

    current = await wait_until(refreshed, timeout=15)
    assert current["expires_at"] > first["expires_at"]
    assert current["refresh_token"] != first["refresh_token"]  # rotated, and saved
    assert (await sandbox.stats())["refresh_requests"] > before["refresh_requests"]
    old = crypto.get_keyring().open(first["refresh_token"], f"oauth-connection:{connection_id}:refresh")
    async with httpx.AsyncClient() as http:  # the provider no longer takes the old one
        reuse = await http.post(
            f"{sandbox.url}/token",
            data={"grant_type": "refresh_token", "refresh_token": old},
            auth=("intime-test", SANDBOX_SECRET),
        )
    assert reuse.json()["error"] == "invalid_grant"
    async with db.connection() as conn:
        kinds = await conn.fetch("SELECT kind FROM oauth_connection_events WHERE connection_id = $1", connection_id)
    assert "refreshed" in [k["kind"] for k in kinds]


async def test_two_refreshers_at_once_make_one_refresh(client, factory, sandbox):
    await admin_with_sandbox(client, factory)
    connection_id = await connect(client)
    await sandbox.control(token_mode="slow")  # the first refresh takes 3 s: the second arrives meanwhile
    before = (await sandbox.stats())["refresh_requests"]
    outcomes = await asyncio.gather(
        refresh.refresh(connection_id, force=True), refresh.refresh(connection_id, force=True)
    )
    assert sorted(outcomes) == ["busy", "refreshed"]
    assert (await sandbox.stats())["refresh_requests"] == before + 1
    # And a reader during a refresh waits for it rather than refreshing again.
    async with db.connection() as conn:
        await conn.execute("UPDATE oauth_connections SET expires_at = now() WHERE id = $1", connection_id)
    tokens = await asyncio.gather(*(refresh.get_access_token(connection_id) for _ in range(3)))
    assert len(set(tokens)) == 1
    assert (await sandbox.stats())["refresh_requests"] == before + 2


async def test_invalid_grant_needs_reauth_and_is_announced(client, factory, sandbox):
    await admin_with_sandbox(client, factory)
    connection_id = await connect(client)
    await sandbox.control(token_mode="invalid_grant")
    assert await refresh.refresh(connection_id, force=True) == "needs_reauth"
    assert (await row(connection_id))["status"] == "needs_reauth"
    with pytest.raises(TokenUnavailable):
        async with db.connection() as conn:
            await conn.execute("UPDATE oauth_connections SET expires_at = now() WHERE id = $1", connection_id)
        await refresh.get_access_token(connection_id)
    page = (await client.get(PANEL)).text
    assert 'data-testid="reconnect"' in page and "needs reauth" in page
    async with db.connection() as conn:
        announced = await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'oauth.connection.needs_reauth'"
        )
    assert announced == 1
    # Reconnecting the same account brings it back.
    await sandbox.control(token_mode="ok")
    assert await connect(client) == connection_id
    assert (await row(connection_id))["status"] == "active"


async def test_a_provider_error_is_shown_and_retried_later(client, factory, sandbox):
    await admin_with_sandbox(client, factory)
    connection_id = await connect(client)
    await sandbox.control(token_mode="error_500")
    assert await refresh.refresh(connection_id, force=True) == "failed"
    failed = await row(connection_id)
    assert failed["status"] == "active" and failed["refresh_failures"] == 1
    assert "HTTP 500" in failed["last_error"]
    assert failed["next_refresh_at"] > datetime.now(UTC)
    assert "HTTP 500" in (await client.get(PANEL)).text


async def test_disconnect_revokes_at_the_provider_and_deletes_the_tokens(client, factory, sandbox):
    await admin_with_sandbox(client, factory)
    connection_id = await connect(client)
    token = await refresh.get_access_token(connection_id)
    before = (await sandbox.stats())["revocations"]
    response = await client.post(f"{PANEL}/connections/{connection_id}/disconnect", data=form(client))
    assert response.headers["location"] == PANEL
    assert "revoked at the provider" in (await client.get(PANEL)).text
    assert (await sandbox.stats())["revocations"] >= before + 1
    async with httpx.AsyncClient() as http:
        me = await http.get(f"{sandbox.url}/api/me", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 401
    gone = await row(connection_id)
    assert gone["status"] == "revoked" and gone["access_token"] is None and gone["refresh_token"] is None
    async with db.connection() as conn:
        kinds = [r["kind"] for r in await conn.fetch("SELECT kind FROM oauth_connection_events ORDER BY at")]
        announced = await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'oauth.connection.disconnected'"
        )
    assert kinds == ["connected", "disconnected"] and announced == 1
    with pytest.raises(TokenUnavailable):
        await refresh.get_access_token(connection_id)


async def test_the_api_lists_starts_and_disconnects_without_ever_showing_a_token(client, factory, sandbox):
    admin = await admin_with_sandbox(client, factory)
    connection_id = await connect(client)
    _, token = await factory.token(admin.org, scopes="oauth:write")
    bearer = {"authorization": f"Bearer {token}"}
    listed = await client.get("/api/v1/oauth/connections", headers=bearer)
    assert listed.status_code == 200
    [item] = listed.json()["items"]
    assert item["account"] == "ada@sandbox.test" and item["status"] == "active"
    assert "access_token" not in listed.text and "refresh_token" not in listed.text
    started = await client.post("/api/v1/oauth/sandbox/connect", headers=bearer)
    assert started.json()["authorization_url"].startswith(sandbox.url + "/authorize?")
    # Finished in a browser that is not signed in to the portal: refused, since whoever was sent the link
    # could otherwise connect their own account to this organisation.
    async with httpx.AsyncClient(transport=client._transport, base_url=APP) as anonymous:
        refused = await come_back(anonymous, await authorize(started.json()["authorization_url"]))
    assert refused.status_code == 400 and "must be finished in a browser signed in" in refused.text
    # Finished by a signed-in admin of the organisation (this client): connected.
    again = await client.post("/api/v1/oauth/sandbox/connect", headers=bearer)
    done = await come_back(client, await authorize(again.json()["authorization_url"]))
    assert done.headers["location"] == PANEL
    assert "Connected Sandbox (development) as ada@sandbox.test" in (await client.get(PANEL)).text
    assert (await client.post("/api/v1/oauth/nope/connect", headers=bearer)).status_code == 404
    removed = await client.delete(f"/api/v1/oauth/connections/{connection_id}", headers=bearer)
    assert removed.status_code == 200 and removed.json()["status"] == "revoked"
    _, reader = await factory.token(admin.org, scopes="oauth:read")
    denied = await client.delete(
        f"/api/v1/oauth/connections/{connection_id}", headers={"authorization": f"Bearer {reader}"}
    )
    assert denied.status_code == 403
    other_org = await factory.org()
    _, stranger = await factory.token(other_org, scopes="oauth:write")
    hidden = await client.delete(
        f"/api/v1/oauth/connections/{connection_id}", headers={"authorization": f"Bearer {stranger}"}
    )
    assert hidden.status_code == 404


async def test_a_short_lived_token_stays_valid_through_many_lifetimes(
    client, factory, sandbox, worker_process, scheduler
):
    """The issue's "2-minute token valid for an hour", scaled down 60 times: a 2-second token used every
    quarter second for 30 seconds (15 lifetimes) is never refused by the provider."""
    await admin_with_sandbox(client, factory)
    await sandbox.control(access_token_ttl=2)
    connection_id = await connect(client)
    refused = 0
    async with httpx.AsyncClient() as http:
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            token = await refresh.get_access_token(connection_id)
            me = await http.get(f"{sandbox.url}/api/me", headers={"authorization": f"Bearer {token}"})
            refused += me.status_code != 200
            await asyncio.sleep(0.25)
    assert refused == 0
    async with db.connection() as conn:
        refreshes = await conn.fetchval(
            "SELECT count(*) FROM oauth_connection_events WHERE connection_id = $1 AND kind = 'refreshed'",
            connection_id,
        )
    assert refreshes >= 10


async def test_key_rotation_reseals_every_secret_with_the_new_key(client, factory, sandbox, monkeypatch):
    from app.core import keyrotation
    from app.core.settings import get_settings
    from app.webhooks import secrets as webhook_secrets
    from app.webhooks import services as webhooks

    admin = await admin_with_sandbox(client, factory)
    connection_id = await connect(client)
    from app.integrations import calls as integration_calls
    from app.integrations import setup as integration_setup

    integration = await factory.integration(admin.org.id, "Email", "email")
    await factory.provider(integration, "p", "http://127.0.0.1:9/", "http://127.0.0.1:9/", priority=1, credentials="k")
    webhook, secret = await webhooks.create_webhook(
        admin.org.id, {"name": "w", "url": "http://127.0.0.1:9/h", "event_patterns": ["*"], "headers": {"X-Key": "k"}}
    )
    token = await refresh.get_access_token(connection_id)
    new_ring = crypto.KeyRing((b"\x07" * 32, *get_settings().security.encryption_keys))
    monkeypatch.setattr(crypto, "get_keyring", lambda: new_ring)
    for module in (keyrotation, vault, webhook_secrets, integration_setup, integration_calls):
        monkeypatch.setattr(module, "get_keyring", lambda: new_ring)
    done = await keyrotation.rotate()
    assert done["oauth_connections.access_token"] == 1 and done["webhooks.secret"] == 1
    assert done["webhooks.headers"] == 1 and done["oauth_clients.client_secret"] == 1
    saved = await row(connection_id)
    assert saved["access_token"].split(".")[1] == new_ring.primary_id
    assert await refresh.get_access_token(connection_id) == token
    async with db.connection() as conn:
        stored = await conn.fetchval("SELECT secret FROM webhooks WHERE id = $1", webhook.id)
    assert new_ring.open(stored, f"webhook:{webhook.id}") == secret
    assert (await keyrotation.rotate())["oauth_connections.access_token"] == 0  # nothing left: resumable
    # No column anywhere still holds a value sealed with the old key: every sealed column is known.
    old_kid = crypto.key_id(get_settings().security.encryption_keys[0])
    async with db.connection() as conn:
        columns = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'jsonb', 'character varying')"
        )
        for column in columns:
            stale = await conn.fetchval(
                f'SELECT count(*) FROM "{column["table_name"]}" WHERE "{column["column_name"]}"::text LIKE $1',  # noqa: S608
                f"%v1.{old_kid}.%",
            )
            assert stale == 0, f"{column['table_name']}.{column['column_name']} still sealed with the old key"


async def test_a_provider_of_your_own_is_set_up_from_its_discovery_document(client, factory, sandbox):
    admin = await factory.user()
    await sign_in(client, admin)
    saved = await client.post(
        f"{PANEL}/clients/generic",
        data=form(client, client_id="intime-test", client_secret=SANDBOX_SECRET, discovery_url=sandbox.metadata_url),
    )
    assert saved.headers["location"] == PANEL
    endpoints = (await clients.clients(admin.org.id))["generic"]["endpoints"]
    assert endpoints["token_url"] == f"{sandbox.url}/token" and endpoints["jwks_url"] == f"{sandbox.url}/jwks"
    response = await client.post(f"{PANEL}/generic/connect", data=form(client))
    location = response.headers["location"]
    assert location.startswith(f"{sandbox.url}/authorize?") and "nonce=" in location  # OIDC: it has a JWKS
    back = await authorize(location)
    assert back.startswith(APP + "/oauth/generic/callback?")
    await client.get(back.removeprefix(APP))
    assert "Connected Other OAuth 2.0 / OpenID Connect provider as ada@sandbox.test." in (await client.get(PANEL)).text
    broken = await client.post(
        f"{PANEL}/clients/generic",
        data=form(client, client_id="x", client_secret="y", discovery_url=f"{sandbox.url}/nothing-here"),
    )
    assert broken.status_code == 422 and "Could not read the discovery document" in broken.text


async def test_a_disconnect_during_a_refresh_waits_and_the_tokens_stay_deleted(client, factory, sandbox):
    admin = await admin_with_sandbox(client, factory)
    connection_id = await connect(client)
    await sandbox.control(token_mode="slow")  # the refresh takes 3 s

    async def disconnect_meanwhile():
        await asyncio.sleep(0.5)
        return await disconnect.disconnect(admin.org.id, connection_id, "test")

    refreshed, disconnected = await asyncio.gather(refresh.refresh(connection_id, force=True), disconnect_meanwhile())
    assert refreshed == "refreshed" and "revoked at the provider" in disconnected
    gone = await row(connection_id)
    assert gone["status"] == "revoked" and gone["access_token"] is None and gone["refresh_token"] is None
    # Again: nothing changes and nothing more is announced.
    assert await disconnect.disconnect(admin.org.id, connection_id, "test") == "already disconnected"
    async with db.connection() as conn:
        announced = await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'oauth.connection.disconnected'"
        )
    assert announced == 1


async def test_a_client_secret_sealed_with_a_removed_key_asks_for_the_secret_again(client, factory, sandbox):
    await admin_with_sandbox(client, factory)
    async with db.connection() as conn:
        stranger = crypto.KeyRing((b"\x09" * 32,))
        client_id = await conn.fetchval("SELECT id FROM oauth_clients")
        await conn.execute(
            "UPDATE oauth_clients SET client_secret = $2 WHERE id = $1",
            client_id,
            stranger.seal("s", f"oauth-client:{client_id}"),
        )
    response = await client.post(f"{PANEL}/sandbox/connect", data=form(client))
    assert response.headers["location"] == PANEL
    assert "client secret cannot be read" in (await client.get(PANEL)).text
