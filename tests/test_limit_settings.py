"""How admins see and set delivery limits (issue 13, finding 2): the organisation's default cap on
deliveries in flight, each webhook's own cap and rate limit, in the API and the pages, and the
effective limits the engine reads (`delivery_settings.limits_in`)."""

from __future__ import annotations

import re
import uuid

import pytest

from app.core import db
from app.webhooks import delivery_settings, services
from app.webhooks.tables import Webhook
from tests.factories import sign_in

BASE = "/employee/admin/integrations"
HOOK = {"name": "Payroll", "url": "http://127.0.0.1:9/hook", "event_patterns": ["job.*"]}


def form(client, **fields) -> dict:
    return {"_csrf_token": client.cookies.get("intime_csrf")} | fields


def webhook_form(client, **fields) -> dict:
    return form(client, name="ATS", url="http://127.0.0.1:9/hook", event_patterns="job.*", enabled="on") | fields


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


def shown(html: str, testid: str) -> str:
    """The text of the element with this data-testid (tags dropped)."""
    found = re.search(rf'data-testid="{testid}"[^>]*>(.*?)</dd>', html, re.S)
    assert found, testid
    return text_of(found.group(1)).strip()


def problem_fields(answer) -> dict[str, str]:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    return {e["field"]: e["message"] for e in answer.json()["errors"]}


# --- the API ---------------------------------------------------------------------------------------------


async def test_a_webhooks_cap_and_rate_limit_round_trip_through_the_api(api):
    # Given a webhook created with a cap of its own and a fractional rate limit
    created = await api.post("/webhooks", HOOK | {"max_in_flight": 25, "rate_limit_per_second": 0.5})
    assert created.status_code == 201, created.text
    hook = created.json()
    assert (hook["max_in_flight"], hook["rate_limit_per_second"]) == (25, 0.5)
    assert (await api.get(f"/webhooks/{hook['id']}")).json()["max_in_flight"] == 25

    # When a PATCH changes something else, the limits stay
    renamed = (await api.patch(f"/webhooks/{hook['id']}", {"name": "Renamed"})).json()
    assert (renamed["max_in_flight"], renamed["rate_limit_per_second"]) == (25, 0.5)

    # When null returns the cap to the organisation's default and a whole rate is given
    patched = await api.patch(f"/webhooks/{hook['id']}", {"max_in_flight": None, "rate_limit_per_second": 5})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["max_in_flight"], patched.json()["rate_limit_per_second"]) == (None, 5.0)
    listed = (await api.get("/webhooks")).json()["items"]
    assert [(w["max_in_flight"], w["rate_limit_per_second"]) for w in listed] == [(None, 5.0)]


async def test_a_webhook_without_limits_shows_null_for_both(api):
    hook = (await api.post("/webhooks", HOOK)).json()
    assert (hook["max_in_flight"], hook["rate_limit_per_second"]) == (None, None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 1001}, "max_in_flight"),
        ({"max_in_flight": 2.5}, "max_in_flight"),
        ({"max_in_flight": "ten"}, "max_in_flight"),
        ({"max_in_flight": True}, "max_in_flight"),
        ({"max_in_flight": ""}, "max_in_flight"),
        ({"rate_limit_per_second": 0}, "rate_limit_per_second"),
        ({"rate_limit_per_second": -1}, "rate_limit_per_second"),
        ({"rate_limit_per_second": 10_000.5}, "rate_limit_per_second"),
        ({"rate_limit_per_second": "fast"}, "rate_limit_per_second"),
        ({"rate_limit_per_second": False}, "rate_limit_per_second"),
        ({"rate_limit_per_second": [1]}, "rate_limit_per_second"),
    ],
)
async def test_bad_limits_get_a_422_naming_the_field(api, change, field):
    errors = problem_fields(await api.post("/webhooks", HOOK | change))
    assert list(errors) == [field] and ("1 to 1,000" in errors[field] or "per second" in errors[field])
    assert await Webhook.count() == 0


async def test_a_bad_patch_of_the_limits_changes_nothing(api):
    hook = (await api.post("/webhooks", HOOK | {"max_in_flight": 3})).json()
    errors = problem_fields(
        await api.patch(f"/webhooks/{hook['id']}", {"max_in_flight": 5000, "rate_limit_per_second": 0})
    )
    assert set(errors) == {"max_in_flight", "rate_limit_per_second"}
    assert (await api.get(f"/webhooks/{hook['id']}")).json()["max_in_flight"] == 3


async def test_the_organisations_default_cap_round_trips_and_keeps_the_other_rule(api):
    assert (await api.get("/delivery-settings")).json()["max_in_flight"] == delivery_settings.DEFAULT_MAX_IN_FLIGHT
    await api.put("/delivery-settings", {"count_payload_rejections": True})

    # A field left out keeps its value, both ways
    saved = await api.put("/delivery-settings", {"max_in_flight": 25})
    assert saved.status_code == 200, saved.text
    assert (saved.json()["max_in_flight"], saved.json()["count_payload_rejections"]) == (25, True)
    again = (await api.put("/delivery-settings", {"count_payload_rejections": False})).json()
    assert (again["max_in_flight"], again["count_payload_rejections"]) == (25, False)
    assert (await api.get("/delivery-settings")).json()["max_in_flight"] == 25


@pytest.mark.parametrize("value", [0, 1001, "many", 2.5, None, True])
async def test_a_bad_default_cap_gets_a_422_naming_the_field(api, value):
    errors = problem_fields(await api.put("/delivery-settings", {"max_in_flight": value}))
    assert "1 to 1,000" in errors["max_in_flight"]
    assert (await api.get("/delivery-settings")).json()["max_in_flight"] == 10


# --- what the engine reads -------------------------------------------------------------------------------


async def test_limits_in_gives_each_webhook_its_own_cap_or_its_organisations_default(api, factory):
    # Given an organisation without settings, one whose default is 4, and webhooks with and without caps
    plain = (await api.post("/webhooks", HOOK)).json()
    own = (await api.post("/webhooks", HOOK | {"max_in_flight": 25, "rate_limit_per_second": 0.5})).json()
    other_org = await factory.org()
    await delivery_settings.set_rules(other_org.id, delivery_settings.DeliveryRules(max_in_flight=4))
    theirs, _ = await services.create_webhook(other_org.id, HOOK | {"rate_limit_per_second": "2"})
    ids = [uuid.UUID(plain["id"]), uuid.UUID(own["id"]), theirs.id, uuid.uuid4()]

    # When the engine asks for all of them at once
    async with db.connection() as conn:
        limits = await delivery_settings.limits_in(conn, ids)

    # Then each has its effective cap and rate, and an unknown id is left out
    assert limits == {ids[0]: (10, None), ids[1]: (25, 0.5), theirs.id: (4, 2.0)}
    assert limits[ids[1]].max_in_flight == 25 and limits[ids[1]].rate_limit_per_second == 0.5
    async with db.connection() as conn:
        assert await delivery_settings.limits_in(conn, []) == {}

    # And the organisation's default, once set, replaces the built-in 10
    await api.put("/delivery-settings", {"max_in_flight": 7})
    assert (await delivery_settings.limits([ids[0]]))[ids[0]] == (7, None)


# --- the pages -------------------------------------------------------------------------------------------


async def test_admin_sets_the_limits_in_the_webhook_form_and_the_detail_page_shows_them(client, factory):
    admin = await factory.user()
    await sign_in(client, admin)
    new = await client.get(f"{BASE}/webhooks/new")
    assert 'data-testid="max-in-flight"' in new.text and "(organisation default)" in new.text

    # Given a webhook created with a cap of 25 and 0.5 deliveries per second
    created = await client.post(
        f"{BASE}/webhooks/new", data=webhook_form(client, max_in_flight="25", rate_limit_per_second=" 0.5 ")
    )
    assert created.status_code == 201, created.text
    row = await Webhook.objects().first()
    assert (row.max_in_flight, row.rate_limit_per_second) == (25, 0.5)
    detail = (await client.get(f"{BASE}/webhooks/{row.id}")).text
    assert (shown(detail, "webhook-cap"), shown(detail, "webhook-rate")) == ("25 in flight", "0.5 per second")

    # The edit form shows them as typed; blanking both returns them to the defaults
    edit = (await client.get(f"{BASE}/webhooks/{row.id}/edit")).text
    assert re.search(r'name="max_in_flight"[^>]*value="25"', edit)
    assert re.search(r'name="rate_limit_per_second"[^>]*value="0.5"', edit)
    # (a form without the fields, from a page older than them, leaves them as they are)
    await client.post(f"{BASE}/webhooks/{row.id}/edit", data=webhook_form(client, name="Renamed"))
    assert (await Webhook.objects().get(Webhook.id == row.id)).max_in_flight == 25
    saved = await client.post(
        f"{BASE}/webhooks/{row.id}/edit", data=webhook_form(client, max_in_flight="", rate_limit_per_second="")
    )
    assert saved.status_code in (201, 302, 303), saved.text
    row = await Webhook.objects().get(Webhook.id == row.id)
    assert (row.max_in_flight, row.rate_limit_per_second) == (None, None)
    detail = (await client.get(f"{BASE}/webhooks/{row.id}")).text
    assert shown(detail, "webhook-cap") == "10 in flight (organisation default)"
    assert shown(detail, "webhook-rate") == "no limit"


async def test_bad_limits_in_the_webhook_form_are_explained_beside_the_fields(client, factory):
    await sign_in(client, await factory.user())
    response = await client.post(
        f"{BASE}/webhooks/new", data=webhook_form(client, max_in_flight="lots", rate_limit_per_second="0")
    )
    assert response.status_code == 422
    assert 'id="max_in_flight-error"' in response.text and 'id="rate_limit_per_second-error"' in response.text
    assert "1 to 1,000" in response.text and "per second above 0" in response.text
    assert re.search(r'name="max_in_flight"[^>]*value="lots"', response.text)  # kept as typed
    assert await Webhook.count() == 0


async def test_admin_sets_the_default_cap_on_the_retry_config_page(client, factory):
    admin = await factory.user()
    await sign_in(client, admin)
    page = (await client.get(f"{BASE}/retry-config")).text
    assert re.search(r'name="max_in_flight"[^>]*value="10"', page) and "without using a retry" in page

    for bad in ("abc", "0", "1001", ""):
        refused = await client.post(f"{BASE}/retry-config/rules", data=form(client, max_in_flight=bad))
        assert refused.status_code == 422, bad
        assert 'id="max_in_flight-error"' in refused.text and "1 to 1,000" in refused.text
    assert (await delivery_settings.rules(admin.org.id)).max_in_flight == 10

    saved = await client.post(
        f"{BASE}/retry-config/rules", data=form(client, max_in_flight="30", count_payload_rejections="on")
    )
    assert saved.status_code == 200 and 'data-testid="rules-saved"' in saved.text
    assert re.search(r'name="max_in_flight"[^>]*value="30"', saved.text)
    assert await delivery_settings.rules(admin.org.id) == delivery_settings.DeliveryRules(True, 30)
