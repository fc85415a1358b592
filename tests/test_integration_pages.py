"""The integrations list and an integration's failover panel, through the test client."""

from __future__ import annotations

import re

from app.integrations import failover
from tests.factories import sign_in

BASE = "/employee/admin/integrations/integrations"


def form(client, **fields) -> dict:
    return {"_csrf_token": client.cookies.get("intime_csrf")} | fields


async def make(factory, role="admin"):
    person = await factory.user(role=role)
    integration = await factory.integration(person.org.id, "Email delivery", "email")
    for priority, name in ((1, "SendGrid"), (2, "Mailgun")):
        await factory.provider(integration, name, "http://127.0.0.1:9/", "http://127.0.0.1:9/", priority=priority)
    return person, integration


async def test_the_list_and_the_panel_show_providers_and_a_trigger_is_audited(client, factory):
    admin, integration = await make(factory)
    await sign_in(client, admin)
    listing = (await client.get(f"{BASE}/")).text
    assert "Email delivery" in listing and 'data-testid="active-provider">SendGrid' in listing
    panel = await client.get(f"{BASE}/{integration}")
    assert panel.status_code == 200 and "Traffic goes to" in panel.text and "Mailgun" in panel.text
    empty = await client.post(f"{BASE}/{integration}/failover", data=form(client, reason=" "))
    assert empty.status_code in (302, 303)
    assert "Say why you are failing over" in (await client.get(f"{BASE}/{integration}")).text
    await client.post(f"{BASE}/{integration}/failover", data=form(client, reason="vendor incident"))
    page = (await client.get(f"{BASE}/{integration}")).text
    assert "Traffic moved from SendGrid to Mailgun." in page
    assert 'data-testid="active-provider">Mailgun' in page and "vendor incident" in page


async def test_bad_settings_are_explained_beside_the_fields(client, factory):
    admin, integration = await make(factory)
    await sign_in(client, admin)
    numbers = ("300", "60", "5", "50", "10", "60", "30", "600", "3")
    values = dict(zip(failover.FAILOVER_LIMITS, numbers, strict=True)) | {"failover_mode": "automatic"}
    values["failback_mode"] = "x"
    bad_min_calls = values | {"breaker_min_calls": "many"}
    bad = await client.post(f"{BASE}/{integration}/settings", data=form(client, **bad_min_calls))
    assert bad.status_code == 422 and "a whole number" in bad.text
    worse = await client.post(f"{BASE}/{integration}/settings", data=form(client, **values))
    assert worse.status_code == 422 and "is one of automatic, manual" in worse.text
    good = values | {"failback_mode": "manual", "health_interval_seconds": "30"}
    saved = await client.post(f"{BASE}/{integration}/settings", data=form(client, **good))
    assert saved.status_code in (302, 303), re.findall(r"field-error\">([^<]+)", saved.text)
    assert "Saved the failover settings." in (await client.get(f"{BASE}/{integration}")).text


async def test_viewers_look_but_cannot_switch_and_other_organisations_see_nothing(client, factory):
    viewer, integration = await make(factory, role="viewer")
    await sign_in(client, viewer)
    page = (await client.get(f"{BASE}/{integration}")).text
    assert 'data-testid="trigger-failover"' not in page
    refused = await client.post(f"{BASE}/{integration}/failover", data=form(client, reason="x"))
    assert refused.status_code == 403
    stranger = await factory.user()
    await client.post("/logout", data=form(client))
    await sign_in(client, stranger)
    assert (await client.get(f"{BASE}/{integration}")).status_code == 404


async def test_the_panels_refresh_renders_only_the_live_part(client, factory):
    admin, integration = await make(factory)
    await sign_in(client, admin)
    refresh = await client.get(f"{BASE}/{integration}", headers={"HX-Request": "true", "HX-Target": "failover-live"})
    assert refresh.status_code == 200 and refresh.text.lstrip().startswith('<div id="failover-live"')
    assert 'data-provider="SendGrid"' in refresh.text and "Audit trail" not in refresh.text
