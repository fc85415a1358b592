"""Setting integrations up, in the API and in the pages: integrations and providers are created, changed
and removed with every bad input explained; credentials are write-only; a provider may use an OAuth
connection instead; disabling or removing the active provider moves traffic, audited."""

from __future__ import annotations

import base64
import json
import re
import uuid

import pytest

from app.core import db
from app.integrations import calls, failover, health, queries, setup
from app.oauth.disconnect import disconnect
from app.oauth.refresh import get_access_token
from tests.factories import sign_in
from tests.receiver import Answer
from tests.test_oauth import admin_with_sandbox, connect

API = "/api/v1/integrations"
PAGES = "/employee/admin/integrations/integrations"


def form(client, **fields) -> dict:
    return {"_csrf_token": client.cookies.get("intime_csrf")} | fields


async def api_client(factory, scopes="integrations:write"):
    org = await factory.org()
    _, token = await factory.token(org, scopes=scopes)
    return org, {"authorization": f"Bearer {token}"}


def fields_of(response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {e["field"]: e["message"] for e in response.json()["errors"]}


async def test_the_api_creates_an_integration_and_its_providers_and_never_shows_credentials(client, factory, receiver):
    _org, bearer = await api_client(factory)
    created = await client.post(API, json={"name": "Email delivery", "kind": "email"}, headers=bearer)
    assert created.status_code == 201 and created.json()["providers"] == []
    integration = created.json()["id"]
    again = await client.post(API, json={"name": "email DELIVERY", "kind": "email"}, headers=bearer)
    assert "another integration of this name" in fields_of(again)["name"]
    bad = await client.post(API, json={"name": " ", "kind": "pigeon", "colour": "red"}, headers=bearer)
    assert set(fields_of(bad)) == {"name", "kind", "colour"}
    wrong_types = await client.post(API, json={"name": ["x"], "kind": ["email"], "description": 7}, headers=bearer)
    assert set(fields_of(wrong_types)) == {"name", "kind", "description"}

    first = await client.post(
        f"{API}/{integration}/providers",
        json={"name": "SendGrid", "endpoint_url": receiver.url, "health_url": receiver.url, "credentials": "sg-key-1"},
        headers=bearer,
    )
    assert first.status_code == 201, first.text
    assert first.json()["has_credentials"] is True and "sg-key-1" not in first.text
    assert first.json()["priority"] == 10 and first.json()["active"] is True
    second = await client.post(
        f"{API}/{integration}/providers",
        json={"name": "Mailgun", "endpoint_url": receiver.url, "health_url": receiver.url, "rate_limit_per_hour": 500},
        headers=bearer,
    )
    assert second.json()["priority"] == 20 and second.json()["rate_limit_per_hour"] == 500
    listed = (await client.get(f"{API}/{integration}", headers=bearer)).text
    assert "sg-key-1" not in listed
    async with db.connection() as conn:
        stored = await conn.fetchval("SELECT credentials FROM integration_providers WHERE name = 'SendGrid'")
    assert stored and "sg-key-1" not in stored  # sealed at rest

    # A call carries the credentials as a Bearer token.
    await calls.call_integration(integration, "send", {"to": "a@example.test"})
    assert receiver.log[-1].headers["authorization"] == "Bearer sg-key-1"
    assert receiver.log[-1].path.endswith("/send") and receiver.log[-1].headers["idempotency-key"]

    provider = first.json()["id"]
    renamed = await client.patch(
        f"{API}/{integration}/providers/{provider}", json={"name": "SendGrid EU", "priority": 5}, headers=bearer
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "SendGrid EU"
    assert renamed.json()["has_credentials"] is True  # absent: kept
    await calls.call_integration(integration, "send", {})
    assert receiver.log[-1].headers["authorization"] == "Bearer sg-key-1"
    cleared = await client.patch(
        f"{API}/{integration}/providers/{provider}", json={"credentials": None}, headers=bearer
    )
    assert cleared.json()["has_credentials"] is False
    await calls.call_integration(integration, "send", {})
    assert "authorization" not in receiver.log[-1].headers


async def test_every_bad_provider_field_is_named(client, factory, receiver):
    _org, bearer = await api_client(factory)
    integration = (await client.post(API, json={"name": "SMS", "kind": "sms"}, headers=bearer)).json()["id"]
    bad = await client.post(
        f"{API}/{integration}/providers",
        json={
            "name": "x" * 101,
            "endpoint_url": "ftp://files.example/",
            "health_url": "http://10.1.2.3/health",  # refused by the outbound guard's check, never connected to
            "priority": -1,
            "rate_limit_per_hour": 0,
            "enabled": "yes",
            "credentials": "ключ",  # it travels in an HTTP header: ASCII only
        },
        headers=bearer,
    )
    errors = fields_of(bad)
    assert set(errors) == {
        "name",
        "endpoint_url",
        "health_url",
        "priority",
        "rate_limit_per_hour",
        "enabled",
        "credentials",
    }
    assert errors["health_url"].startswith("10.1.2.3 is a private address")
    both = await client.post(
        f"{API}/{integration}/providers",
        json={
            "name": "Twilio",
            "endpoint_url": receiver.url,
            "health_url": receiver.url,
            "credentials": "k",
            "oauth_connection_id": "00000000-0000-0000-0000-000000000000",
        },
        headers=bearer,
    )
    assert "not both" in fields_of(both)["oauth_connection_id"]
    strangers = await client.post(
        f"{API}/{integration}/providers",
        json={
            "name": "Twilio",
            "endpoint_url": receiver.url,
            "health_url": receiver.url,
            "oauth_connection_id": "00000000-0000-0000-0000-000000000000",
        },
        headers=bearer,
    )
    assert "not an OAuth connection of this organisation" in fields_of(strangers)["oauth_connection_id"]
    not_json_object = await client.post(f"{API}/{integration}/providers", json=[1, 2], headers=bearer)
    assert not_json_object.status_code == 422
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM integration_providers") == 0


async def test_scopes_and_organisations_fence_the_set_up(client, factory, receiver):
    org, bearer = await api_client(factory)
    integration = (await client.post(API, json={"name": "Calendar", "kind": "calendar"}, headers=bearer)).json()["id"]
    provider = (
        await client.post(
            f"{API}/{integration}/providers",
            json={"name": "Google", "endpoint_url": receiver.url, "health_url": receiver.url},
            headers=bearer,
        )
    ).json()["id"]
    _, reader = await factory.token(org, scopes="integrations:read")
    read_only = {"authorization": f"Bearer {reader}"}
    assert (await client.post(API, json={"name": "B", "kind": "sms"}, headers=read_only)).status_code == 403
    assert (await client.delete(f"{API}/{integration}", headers=read_only)).status_code == 403
    _, stranger = await api_client(factory)
    assert (await client.patch(f"{API}/{integration}", json={"name": "Mine"}, headers=stranger)).status_code == 404
    assert (
        await client.patch(f"{API}/{integration}/providers/{provider}", json={"name": "Mine"}, headers=stranger)
    ).status_code == 404
    assert (await client.delete(f"{API}/{integration}/providers/{provider}", headers=stranger)).status_code == 404
    assert (await client.delete(f"{API}/{integration}", headers=stranger)).status_code == 404
    assert (await client.delete(f"{API}/{integration}", headers=bearer)).status_code == 204
    assert (await client.get(f"{API}/{integration}", headers=bearer)).status_code == 404


async def two_providers(factory, receiver):
    org = await factory.org()
    integration = await setup.create_integration(org.id, {"name": "Email delivery", "kind": "email"})
    common = {"endpoint_url": receiver.url, "health_url": receiver.url}
    first = await setup.create_provider(org.id, integration, {"name": "SendGrid"} | common)
    second = await setup.create_provider(org.id, integration, {"name": "Mailgun"} | common)
    return org, integration, first, second


async def audit_and_events(integration):
    async with db.connection() as conn:
        audit = await conn.fetch(
            "SELECT kind, trigger, reason, actor, from_provider_name, to_provider_name FROM failover_events "
            "WHERE integration_id = $1 ORDER BY at",
            integration,
        )
        events = await conn.fetch("SELECT event_type, payload::text FROM events WHERE event_type LIKE 'integration.%'")
    return audit, [(e["event_type"], json.loads(e["payload"])) for e in events]


async def test_disabling_the_active_provider_moves_traffic_and_says_who_did_it(factory, receiver):
    org, integration, first, _second = await two_providers(factory, receiver)
    await setup.update_provider(org.id, integration, first, {"enabled": False}, "ada@example.test")
    [integration_view] = await queries.overview(org.id, integration)
    assert integration_view["active_provider"] == "Mailgun"
    assert (await calls.call_integration(integration, "send", {}))["provider"] == "Mailgun"
    audit, events = await audit_and_events(integration)
    [switch] = audit
    assert (switch["kind"], switch["trigger"], switch["actor"]) == ("failover", "manual", "ada@example.test")
    assert switch["reason"] == "SendGrid was disabled" and switch["to_provider_name"] == "Mailgun"
    announced = [(p["from_provider"], p["to_provider"], p["trigger"]) for t, p in events if t == "integration.failover"]
    assert announced == [("SendGrid", "Mailgun", "manual")]
    # Disabling one that takes no traffic switches nothing.
    await setup.update_provider(org.id, integration, first, {"enabled": True}, "ada@example.test")
    await setup.update_provider(org.id, integration, first, {"enabled": False}, "ada@example.test")
    assert len((await audit_and_events(integration))[0]) == 1


async def test_removing_the_active_provider_moves_traffic_and_the_audit_keeps_its_name(factory, receiver):
    org, integration, first, second = await two_providers(factory, receiver)
    assert await setup.delete_provider(org.id, integration, first, "ada@example.test") == "SendGrid"
    audit, _ = await audit_and_events(integration)
    assert [(a["from_provider_name"], a["to_provider_name"], a["reason"]) for a in audit] == [
        ("SendGrid", "Mailgun", "SendGrid was removed")
    ]
    trail = await queries.audit_trail(org.id, integration)
    assert trail[0]["from_provider"] == "SendGrid"
    # The last one goes too: nothing is active, and a call says so instead of going anywhere.
    await setup.delete_provider(org.id, integration, second, "ada@example.test")
    with pytest.raises(calls.NoHealthyProvider):
        await calls.call_integration(integration, "send", {})


async def test_health_changes_are_announced_once_each_way(factory, receiver):
    _org, integration, first, _ = await two_providers(factory, receiver)
    await health.check_provider(first)  # up at the first check: not news
    receiver.default = Answer(status=503)
    await health.check_provider(first)
    await health.check_provider(first)  # still down: no second announcement
    receiver.default = Answer()
    await health.check_provider(first)
    _, events = await audit_and_events(integration)
    changes = [(p["provider"], p["healthy"]) for t, p in events if t == "integration.health_changed"]
    assert changes == [("SendGrid", False), ("SendGrid", True)]


async def oauth_calendar(client, factory, receiver):
    """An admin who connected the Sandbox, and a calendar integration whose provider uses that connection."""
    admin = await admin_with_sandbox(client, factory)
    connection_id = await connect(client)
    integration = await setup.create_integration(admin.org.id, {"name": "Calendar", "kind": "calendar"})
    common = {"endpoint_url": receiver.url, "health_url": receiver.url}
    linked = await setup.create_provider(
        admin.org.id, integration, {"name": "Sandbox calendar", "oauth_connection_id": str(connection_id)} | common
    )
    return admin, connection_id, integration, linked


async def test_a_provider_on_an_oauth_connection_calls_with_its_access_token(client, factory, sandbox, receiver):
    admin, connection_id, integration, linked = await oauth_calendar(client, factory, receiver)
    common = {"endpoint_url": receiver.url, "health_url": receiver.url}
    await setup.create_provider(admin.org.id, integration, {"name": "Backup calendar"} | common)
    await calls.call_integration(integration, "events", {"title": "Interview"})
    token = await get_access_token(connection_id)
    assert receiver.log[-1].headers["authorization"] == f"Bearer {token}"
    assert (await queries.provider(admin.org.id, integration, linked))["oauth_connection_id"] == str(connection_id)

    # Disconnected: the provider cannot be called, its health check says why, and both count against
    # it, so (two failures opening this integration's circuits) traffic moves to the backup.
    await failover.update_failover(admin.org.id, integration, {"breaker_failure_threshold": 2})
    await disconnect(admin.org.id, connection_id, "ada@example.test")
    assert await health.check_provider(linked) is False
    shown = await queries.provider(admin.org.id, integration, linked)
    assert "reconnect it" in shown["last_error"]
    with pytest.raises(calls.CallFailed, match="no OAuth token"):
        await calls.call_integration(integration, "events", {})
    assert (await calls.call_integration(integration, "events", {}))["provider"] == "Backup calendar"
    relinked = await client.patch(
        f"{API}/{integration}/providers/{linked}",
        json={"oauth_connection_id": str(connection_id)},
        headers={"authorization": f"Bearer {(await factory.token(admin.org, scopes='integrations:write'))[1]}"},
    )
    assert "connect it again first" in fields_of(relinked)["oauth_connection_id"]


async def test_an_admin_sets_up_an_integration_in_the_pages(client, factory, receiver):
    admin = await factory.user()
    await sign_in(client, admin)
    empty = await client.post(f"{PAGES}/new", data=form(client, name="", kind="email", description=""))
    assert empty.status_code == 422 and "Give the integration a name" in empty.text
    created = await client.post(f"{PAGES}/new", data=form(client, name="Background checks", kind="background_check"))
    assert created.status_code in (302, 303)
    detail = created.headers["location"]
    assert "now add its providers" in (await client.get(detail)).text
    integration = detail.rstrip("/").rsplit("/", 1)[1]

    provider_fields = {"name": "Checkr", "kind": "checkr", "endpoint_url": receiver.url, "health_url": receiver.url}
    missing_key = await client.post(
        f"{PAGES}/{integration}/providers/new",
        data=form(client, auth="credentials", enabled="on", rate_limit_per_hour="lots", **provider_fields),
    )
    # Every bad field is explained at once, the form's own and the service's.
    assert missing_key.status_code == 422 and "Enter the API key" in missing_key.text
    assert 'id="rate_limit_per_hour-error">a whole number' in missing_key.text
    assert 'value="Checkr"' in missing_key.text  # what was typed is kept
    no_connection = await client.post(
        f"{PAGES}/{integration}/providers/new", data=form(client, auth="oauth", enabled="on", **provider_fields)
    )
    assert no_connection.status_code == 422 and "Choose one of the organisation" in no_connection.text
    bad_url = await client.post(
        f"{PAGES}/{integration}/providers/new",
        data=form(client, auth="none", enabled="on", **(provider_fields | {"endpoint_url": "not a url"})),
    )
    assert bad_url.status_code == 422 and 'aria-invalid="true" aria-describedby="endpoint_url-error"' in bad_url.text
    added = await client.post(
        f"{PAGES}/{integration}/providers/new",
        data=form(
            client,
            auth="credentials",
            credentials="ck-secret",
            enabled="on",
            rate_limit_per_hour="100",
            **provider_fields,
        ),
    )
    assert added.status_code in (302, 303)
    page = (await client.get(detail)).text
    assert "Added Checkr." in page and 'data-provider="Checkr"' in page and "0 / 100 an hour" in page
    provider = re.search(r"providers/([0-9a-f-]{36})/edit", page).group(1)

    edit = (await client.get(f"{PAGES}/{integration}/providers/{provider}/edit")).text
    assert "ck-secret" not in edit and "leave empty to keep it" in edit
    saved = await client.post(
        f"{PAGES}/{integration}/providers/{provider}/edit",
        data=form(client, auth="credentials", credentials="", priority="10", rate_limit_per_hour="", **provider_fields),
    )
    assert saved.status_code in (302, 303), re.findall(r'field-error"[^>]*>([^<]+)', saved.text)
    page = (await client.get(detail)).text
    assert 'badge-off">disabled' in page  # the box was left unticked
    one = await queries.provider(admin.org.id, integration, provider)
    assert one["has_credentials"] and one["rate_limit_per_hour"] is None and not one["enabled"]
    await client.post(f"{PAGES}/{integration}/providers/{provider}/enabled", data=form(client, enabled="true"))
    assert (await queries.provider(admin.org.id, integration, provider))["enabled"]
    removed = await client.post(f"{PAGES}/{integration}/providers/{provider}/delete", data=form(client))
    assert "Removed Checkr" in (await client.get(removed.headers["location"])).text
    gone = await client.post(f"{PAGES}/{integration}/delete", data=form(client))
    assert "Deleted Background checks" in (await client.get(gone.headers["location"])).text


async def test_viewers_cannot_set_up_and_other_organisations_get_404(client, factory, receiver):
    viewer = await factory.user(role="viewer")
    integration = await setup.create_integration(viewer.org.id, {"name": "SMS", "kind": "sms"})
    provider = await setup.create_provider(
        viewer.org.id, integration, {"name": "Twilio", "endpoint_url": receiver.url, "health_url": receiver.url}
    )
    await sign_in(client, viewer)
    page = (await client.get(f"{PAGES}/{integration}")).text
    assert 'data-testid="add-provider"' not in page and 'data-testid="edit-provider"' not in page
    assert (await client.get(f"{PAGES}/new")).status_code == 403
    assert (await client.post(f"{PAGES}/new", data=form(client, name="X", kind="sms"))).status_code == 403
    toggled = await client.post(
        f"{PAGES}/{integration}/providers/{provider}/enabled", data=form(client, enabled="false")
    )
    assert toggled.status_code == 403
    stranger = await factory.user()
    await client.post("/logout", data=form(client))
    await sign_in(client, stranger)
    assert (await client.get(f"{PAGES}/{integration}/providers/{provider}/edit")).status_code == 404
    assert (await client.post(f"{PAGES}/{integration}/delete", data=form(client))).status_code == 404
    assert (await queries.provider(viewer.org.id, integration, provider))["enabled"]


async def test_a_new_first_provider_takes_traffic_only_by_an_audited_failback(factory, receiver):
    org, integration, _first, _ = await two_providers(factory, receiver)
    newcomer = await setup.create_provider(
        org.id,
        integration,
        {"name": "Postmark", "priority": 0, "endpoint_url": receiver.url, "health_url": receiver.url},
    )
    # It is the primary now, but traffic stays where it was, and nothing is in the audit trail yet.
    assert (await calls.call_integration(integration, "send", {}))["provider"] == "SendGrid"
    assert (await audit_and_events(integration))[0] == []
    # Once it has been healthy for failback_after_seconds (0 here), traffic moves to it, audited.
    await failover.update_failover(org.id, integration, {"failback_after_seconds": 0})
    await health.check_provider(newcomer)
    await failover.evaluate(integration)
    assert (await calls.call_integration(integration, "send", {}))["provider"] == "Postmark"
    [switch] = (await audit_and_events(integration))[0]
    assert (switch["kind"], switch["from_provider_name"], switch["to_provider_name"]) == (
        "failback",
        "SendGrid",
        "Postmark",
    )


async def test_numbers_in_any_script_and_other_odd_input_are_form_errors_not_crashes(client, factory, receiver):
    org, bearer = await api_client(factory)
    integration = (await client.post(API, json={"name": "HRIS", "kind": "hris"}, headers=bearer)).json()["id"]
    common = {"name": "Workday", "endpoint_url": receiver.url, "health_url": receiver.url}
    for priority in ("²", "--5", "9" * 5000, "١٢", 1e3, None, True):
        answer = await client.post(
            f"{API}/{integration}/providers", json=common | {"priority": priority}, headers=bearer
        )
        assert "priority" in fields_of(answer), priority
    admin = await factory.user(org=org)
    await sign_in(client, admin)
    page = await client.post(
        f"{PAGES}/{integration}/providers/new",
        data=form(client, auth="none", enabled="on", priority="²", rate_limit_per_hour="1e9", **common),
    )
    assert page.status_code == 422 and page.text.count('class="field-error"') == 2


async def test_the_edit_form_shows_and_keeps_the_description(client, factory):
    admin = await factory.user()
    integration = await setup.create_integration(
        admin.org.id, {"name": "Job boards", "kind": "job_board", "description": "Indeed and LinkedIn postings"}
    )
    await sign_in(client, admin)
    edit = (await client.get(f"{PAGES}/{integration}/edit")).text
    assert "Indeed and LinkedIn postings</textarea>" in edit
    saved = await client.post(
        f"{PAGES}/{integration}/edit",
        data=form(client, name="Job boards", kind="job_board", description="Indeed and LinkedIn postings"),
    )
    assert saved.status_code in (302, 303)
    assert "Indeed and LinkedIn postings" in (await client.get(f"{PAGES}/{integration}")).text
    renamed = await client.post(f"{PAGES}/{integration}/edit", data=form(client, name="", kind="job_board"))
    assert renamed.status_code == 422 and "Give the integration a name" in renamed.text


async def test_the_list_pages_through_integrations_oldest_first(client, factory):
    _org, bearer = await api_client(factory)
    for name in ("Zeta SMS", "Alpha email", "Mid calendar"):
        assert (await client.post(API, json={"name": name, "kind": "other"}, headers=bearer)).status_code == 201
    first = (await client.get(f"{API}?limit=2", headers=bearer)).json()
    assert [i["name"] for i in first["items"]] == ["Zeta SMS", "Alpha email"] and first["next_cursor"]
    rest = (await client.get(f"{API}?limit=2&cursor={first['next_cursor']}", headers=bearer)).json()
    assert [i["name"] for i in rest["items"]] == ["Mid calendar"] and rest["next_cursor"] is None
    assert "cursor" in fields_of(await client.get(f"{API}?cursor=not-ours", headers=bearer))
    forged = base64.urlsafe_b64encode(f"0001-01-01T00:00:00+05:00|{uuid.uuid4()}".encode()).decode()
    assert "cursor" in fields_of(await client.get(f"{API}?cursor={forged}", headers=bearer))
    assert "limit" in fields_of(await client.get(f"{API}?limit=0", headers=bearer))


async def test_a_provider_that_refuses_our_credentials_stays_out_until_an_admin_saves_it(factory, receiver):
    org, integration, first, _second = await two_providers(factory, receiver)
    await failover.update_failover(org.id, integration, {"failback_after_seconds": 0})
    receiver.default = Answer(status=401)
    with pytest.raises(calls.CallFailed, match="did not accept our credentials"):
        await calls.call_integration(integration, "send", {})
    # Out of traffic at once, audited, although one failure does not open its circuit
    receiver.default = Answer()
    assert (await calls.call_integration(integration, "send", {}))["provider"] == "Mailgun"
    audit, _ = await audit_and_events(integration)
    assert [(a["kind"], a["reason"]) for a in audit] == [("failover", "SendGrid refused our credentials")]
    # Its health URL answers 200, but that says nothing of our credentials: it stays out, no failback
    assert await health.check_provider(first) is False
    await failover.evaluate(integration)
    shown = await queries.provider(org.id, integration, first)
    assert "refused our credentials" in shown["last_error"] and not shown["active"]
    # An admin gives it new credentials: it is checked, healthy, and traffic fails back to it
    await setup.update_provider(org.id, integration, first, {"credentials": "sg-key-2"}, "ada@example.test")
    assert await health.check_provider(first) is True
    assert (await calls.call_integration(integration, "send", {}))["provider"] == "SendGrid"
    assert receiver.log[-1].headers["authorization"] == "Bearer sg-key-2"


async def test_a_401_on_an_oauth_provider_gets_a_new_token_once_a_minute(client, factory, sandbox, receiver):
    admin, connection_id, integration, linked = await oauth_calendar(client, factory, receiver)
    async with db.connection() as conn:  # as if its token was got a while ago
        await conn.execute(
            "UPDATE oauth_connections SET last_refreshed_at = now() - interval '1 hour' WHERE id = $1", connection_id
        )
    old = await get_access_token(connection_id)
    receiver.default = Answer(status=401)
    with pytest.raises(calls.CallFailed):
        await calls.call_integration(integration, "events", {})
    # A new token for the next attempt, and the provider is not blamed yet
    assert await get_access_token(connection_id) != old
    assert (await queries.provider(admin.org.id, integration, linked))["last_error"] is None
    # Refused again with a token got a moment ago: the token is not the problem
    with pytest.raises(calls.CallFailed):
        await calls.call_integration(integration, "events", {})
    assert "refused our credentials" in (await queries.provider(admin.org.id, integration, linked))["last_error"]


async def test_saving_a_provider_restarts_the_failback_clock_only_when_the_primary_changes(factory, receiver):
    org, integration, first, second = await two_providers(factory, receiver)

    async def healthy_since():
        async with db.connection() as conn:
            return await conn.fetchval("SELECT primary_healthy_since FROM integrations WHERE id = $1", integration)

    await health.check_provider(first)
    since = await healthy_since()
    assert since is not None
    await setup.update_provider(org.id, integration, second, {"name": "Mailgun EU"}, "ada@example.test")
    common = {"endpoint_url": receiver.url, "health_url": receiver.url}
    await setup.create_provider(org.id, integration, {"name": "Postmark"} | common)  # goes last
    assert await healthy_since() == since
    await setup.update_provider(org.id, integration, second, {"priority": 1}, "ada@example.test")
    assert await healthy_since() is None


async def test_a_bad_call_id_is_the_callers_mistake_not_the_providers(factory, receiver):
    from app.integrations.calls import enqueue_call

    org, integration, first, _ = await two_providers(factory, receiver)
    for bad in ("commande-é", "two\nlines", " padded", "x" * 256):
        with pytest.raises(ValueError, match="call id"):
            await enqueue_call(integration, "send", {}, call_id=bad)
        with pytest.raises(ValueError, match="call id"):
            await calls.call_integration(integration, "send", {}, idempotency_key=bad)
    assert receiver.log == []
    assert (await queries.provider(org.id, integration, first))["circuit"] == "closed"


async def test_an_admin_chooses_where_traffic_goes_and_fails_back_by_hand(client, factory, receiver):
    org, integration, first, second = await two_providers(factory, receiver)
    common = {"endpoint_url": receiver.url, "health_url": receiver.url}
    third = await setup.create_provider(org.id, integration, {"name": "Postmark"} | common)
    await failover.update_failover(org.id, integration, {"failback_mode": "manual"})
    _, token = await factory.token(org, scopes="integrations:write")
    bearer = {"authorization": f"Bearer {token}"}
    trigger = f"{API}/{integration}/failover"

    moved = await client.post(trigger, json={"reason": "try Postmark", "to_provider_id": str(third)}, headers=bearer)
    assert moved.json() == {"from": "SendGrid", "to": "Postmark", "kind": "failover"}
    # The next healthy provider after Postmark wraps round to SendGrid; choosing SendGrid is a failback
    back = await client.post(trigger, json={"reason": "vendor fixed it", "to_provider_id": str(first)}, headers=bearer)
    assert back.json() == {"from": "Postmark", "to": "SendGrid", "kind": "failback"}

    same = await client.post(trigger, json={"reason": "x", "to_provider_id": str(first)}, headers=bearer)
    assert same.status_code == 409 and "already goes to SendGrid" in same.json()["detail"]
    await setup.update_provider(org.id, integration, second, {"enabled": False}, "ada@example.test")
    disabled = await client.post(trigger, json={"reason": "x", "to_provider_id": str(second)}, headers=bearer)
    assert disabled.status_code == 409 and "is disabled" in disabled.json()["detail"]
    receiver.default = Answer(status=503)
    await health.check_provider(third)
    failing = await client.post(trigger, json={"reason": "x", "to_provider_id": str(third)}, headers=bearer)
    assert failing.status_code == 409 and "Postmark is failing" in failing.json()["detail"]
    for bogus in ("nope", str(uuid.uuid4())):
        answer = await client.post(trigger, json={"reason": "x", "to_provider_id": bogus}, headers=bearer)
        assert "to_provider_id" in fields_of(answer)
    assert [a["reason"] for a in await queries.audit_trail(org.id, integration)] == ["vendor fixed it", "try Postmark"]


async def test_the_panel_offers_each_provider_and_the_primary_as_a_failback(client, factory, receiver):
    admin = await factory.user()
    integration = await setup.create_integration(admin.org.id, {"name": "SMS", "kind": "sms"})
    common = {"endpoint_url": receiver.url, "health_url": receiver.url}
    first = await setup.create_provider(admin.org.id, integration, {"name": "Twilio"} | common)
    second = await setup.create_provider(admin.org.id, integration, {"name": "Vonage"} | common)
    await sign_in(client, admin)
    await client.post(
        f"{PAGES}/{integration}/failover", data=form(client, reason="maintenance", to_provider_id=str(second))
    )
    page = (await client.get(f"{PAGES}/{integration}")).text
    assert "Traffic moved from Twilio to Vonage." in page
    assert f'<option value="{first}">Twilio (the primary: fail back)</option>' in page
    assert f'<option value="{second}">' not in page  # the active one is not offered
    bad = await client.post(f"{PAGES}/{integration}/failover", data=form(client, reason="x", to_provider_id="nope"))
    assert "Choose one of the providers." in (await client.get(bad.headers["location"])).text


async def test_the_panel_sums_up_each_providers_recent_checks(client, factory, receiver):
    admin = await factory.user()
    integration = await setup.create_integration(admin.org.id, {"name": "SMS", "kind": "sms"})
    provider = await setup.create_provider(
        admin.org.id, integration, {"name": "Twilio", "endpoint_url": receiver.url, "health_url": receiver.url}
    )
    await health.check_provider(provider)
    receiver.default = Answer(status=503)
    await health.check_provider(provider)
    await sign_in(client, admin)
    page = (await client.get(f"{PAGES}/{integration}")).text
    assert re.search(r"50% up of the last 2 checks, median \d+ ms", page)


async def test_an_admin_checks_a_provider_now_after_mending_it(client, factory, receiver):
    admin = await factory.user()
    integration = await setup.create_integration(admin.org.id, {"name": "SMS", "kind": "sms"})
    provider = await setup.create_provider(
        admin.org.id, integration, {"name": "Twilio", "endpoint_url": receiver.url, "health_url": receiver.url}
    )
    await sign_in(client, admin)
    receiver.default = Answer(status=503)
    down = await client.post(f"{PAGES}/{integration}/providers/{provider}/check", data=form(client))
    assert "Twilio is down: HTTP 503." in (await client.get(down.headers["location"])).text
    receiver.default = Answer()
    up = await client.post(f"{PAGES}/{integration}/providers/{provider}/check", data=form(client))
    assert "Twilio is up." in (await client.get(up.headers["location"])).text
    stranger = await factory.user()
    await client.post("/logout", data=form(client))
    await sign_in(client, stranger)
    refused = await client.post(f"{PAGES}/{integration}/providers/{provider}/check", data=form(client))
    assert refused.status_code == 404 and len(receiver.log) == 2
